"""The Ray Data engine: ``normalize`` and ``stats`` block by block on a Ray cluster, same bytes as the local engine.

    driver                                         Ray workers (one task or actor per block)
    ------                                         -----------------------------------------
    list input files, refuse packed data,          read the block with dataprep's own readers
    detect the shape (as the local engine does),   (row numbers offset to the whole input's numbering),
    cut the input into blocks (Parquet row         convert + validate with the local engine's batch
    groups, JSONL byte ranges, other files         functions, write OUT/part-NNNNN.jsonl + rejects shard
    whole) -->
                                                   (stats: render + tokenize in actors that load the
    <-- per-block counts (small); merge shards     tokenizer once each, return per-row count arrays)
    in input order (--merge), or reduce the
    count arrays with the local distribution code

Rows are numbered as the local engine numbers them (Parquet/Arrow shards: position across the files in sorted
order; JSONL: line number in the files concatenated in sorted order, as ``cat`` would give), so the
output shards concatenated, and the rejects, are byte for byte what ``dataprep normalize`` writes.

Input and output paths must be on a filesystem every node sees (NFS, Lustre, a mounted bucket): workers open
the input files and write the shards themselves; only counts travel back to the driver.

``session``    import / connect to Ray, quiet Ray Data, gather block results and re-raise workers' errors
``blocks``     cut the input into blocks (the driver's plan) and read one block as the local engine reads it
``normalize``  ``normalize_ray``: convert blocks into shards, then move them into place or merge them
``stats``      ``stats_ray``: convert and measure blocks in tokenizer-loading actors, reduce on the driver

Importing this package does not import Ray; the engines import it when they run.
"""

from __future__ import annotations

from .blocks import Block, InputPlan, count_lines, plan_input
from .normalize import default_rejects_dir, normalize_ray
from .session import RAY_EXTRA_HINT, import_ray, ray_session, resolve_address
from .stats import MeasureActor, stats_ray

__all__ = [
    "RAY_EXTRA_HINT",
    "Block",
    "InputPlan",
    "MeasureActor",
    "count_lines",
    "default_rejects_dir",
    "import_ray",
    "normalize_ray",
    "plan_input",
    "ray_session",
    "resolve_address",
    "stats_ray",
]
