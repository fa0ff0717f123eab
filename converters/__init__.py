"""Record-shape converters: one module per shape, registered in ``converters.registry``."""
