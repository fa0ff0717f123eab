"""Readers for every input format, content sniffing, and packed-data detection.

open_source(path)      -> Source (.format, .compression, .schema, .columns, .num_rows, .batches())
detect_packed(source)  -> [Finding]   (packed or pre-tokenized input; [] when fine)
refuse_packed(source)  raises FindingError on packed or pre-tokenized input
"""

from __future__ import annotations

from .base import Batch, RowError, iter_records
from .packed import PackedVerdict, detect_packed, packed_verdict, refuse_packed
from .readers import Source, data_files, open_source
from .sniff import Sniffed, sniff_file

__all__ = [
    "Batch",
    "PackedVerdict",
    "RowError",
    "Sniffed",
    "Source",
    "data_files",
    "detect_packed",
    "iter_records",
    "open_source",
    "packed_verdict",
    "refuse_packed",
    "sniff_file",
]
