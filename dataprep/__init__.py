"""dataprep: dataset preparation and preflight checks for NeMo AutoModel fine-tuning."""

__version__ = "0.1.0"
