"""Detect packed and pre-tokenized data, which AutoModel's ChatDataset cannot train on.

Signatures, strongest first:

- Megatron-Bridge packed Parquet: columns ``input_ids``/``seq_start_id``/``loss_mask``; names ``*.idx.parquet`` /
  ``*.idx.pq``; a ``packed/<tok>_pad_seq_to_mult<N>_sft_<hash>/`` folder; a sibling ``<N>_metadata.jsonl``.
- NeMo packed ``.npy`` (``training_<N>.npy``, ``packed_<N>_seed<S>.npy``): an object (pickled) array; only the
  header is read.
- In-memory packs: ``input_ids`` with ``seq_lens`` / ``cu_seqlens`` / ``position_ids``.
- Pre-tokenized, not packed: ``input_ids`` with ``labels`` or ``attention_mask`` and no text column.

A ``messages`` or ``conversations`` column means chat records: never packed. ``*.jsonl.idx.npy`` files are index
sidecars of a JSONL file: not packed (reading one is an ``unreadable_input`` that names the data file).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import FindingError
from ..findings import Finding, finding
from .readers import NpySource, Source

CHAT_COLUMNS = frozenset({"messages", "conversations"})
_MEGATRON_COLUMNS = ("input_ids", "seq_start_id", "loss_mask")
_PACK_COLUMNS = ("seq_lens", "cu_seqlens", "position_ids")
_IDX_NAME = re.compile(r"\.idx\.(parquet|pq)$", re.I)
_PACKED_DIR = re.compile(r"_pad_seq_to_mult\d+_sft_", re.I)
_METADATA = re.compile(r"^\d+_metadata\.jsonl$")
_NEMO_NPY = re.compile(r"^(training|validation|test)_\d+\.npy$|^packed_\d+_seed\d+\.npy$", re.I)


@dataclass(frozen=True)
class PackedVerdict:
    """``packed``: refuse as packed; ``pretokenized``: refuse as token ids; ``evidence`` says why, in words."""

    packed: bool
    kind: str | None = None  # megatron_bridge_parquet | nemo_npy | in_memory_pack | pretokenized
    evidence: list[str] = field(default_factory=list)
    pretokenized: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"packed": self.packed, "kind": self.kind, "evidence": list(self.evidence)}


def _is_text_type(t) -> bool:
    import pyarrow.types as pt

    if pt.is_string(t) or pt.is_large_string(t):
        return True
    if pt.is_struct(t):
        return any(_is_text_type(t.field(i).type) for i in range(t.num_fields))
    if pt.is_list(t) or pt.is_large_list(t):
        return _is_text_type(t.value_type)
    return False


def _text_columns(source: Source) -> list[str]:
    """Columns holding text (strings, or structs/lists with strings); all of them when types are unknown."""
    schema = source.schema
    if schema is None:
        sample = source._peek.records()[:20] if source._peek is not None else []
        return [c for c in source.columns if any(_has_text(r.get(c)) for r in sample)]
    return [f.name for f in schema if _is_text_type(f.type)]


def _has_text(v: Any) -> bool:
    if isinstance(v, str):
        return True
    if isinstance(v, dict):
        return any(_has_text(x) for x in v.values())
    if isinstance(v, list):
        return any(_has_text(x) for x in v[:5])
    return False


def _path_evidence(files: list[Path]) -> list[str]:
    ev: list[str] = []
    f = files[0] if files else None
    if f is None:
        return ev
    if _IDX_NAME.search(f.name):
        ev.append(f"file name {f.name} (*.idx.parquet is Megatron-Bridge's packed layout)")
    for part in f.parts[:-1]:
        if _PACKED_DIR.search(part):
            ev.append(f"folder {part}/ (packed/<tokenizer>_pad_seq_to_mult<N>_sft_<hash>)")
            break
    try:
        siblings = [s.name for s in f.parent.iterdir() if _METADATA.match(s.name)]
    except OSError:
        siblings = []
    if siblings:
        ev.append(f"sibling {sorted(siblings)[0]} (packing metadata)")
    return ev


def packed_verdict(source: Source) -> PackedVerdict:
    """What the input is with respect to packing; reads a schema or a file header, never the data."""
    if isinstance(source, NpySource):
        name = source.files[0].name
        if name.endswith(".idx.npy"):
            return PackedVerdict(False, None, [f"{name} is an index sidecar of {name[:-8]}, not a pack"])
        header = source.header
        if header["object"] and _NEMO_NPY.match(name):
            return PackedVerdict(
                True,
                "nemo_npy",
                [
                    f"file name {name} (NeMo packed sequence file)",
                    f"object array header (dtype {header['descr']}, shape {tuple(header['shape'])}): pickled pack dicts",
                ],
            )
        return PackedVerdict(False, None, [f"a .npy array (dtype {header['descr']}) with no pack signature"])

    columns = source.columns
    cols = set(columns)
    chat = sorted(cols & CHAT_COLUMNS)
    if chat:
        return PackedVerdict(False, None, [f"chat column {chat[0]!r}: records, not packs"])
    path_ev = _path_evidence(source.files)
    megatron = [c for c in _MEGATRON_COLUMNS if c in cols]
    if "input_ids" in cols and len(megatron) >= 2:
        ev = [f"columns {', '.join(megatron)} (Megatron-Bridge packed schema)", *path_ev]
        return PackedVerdict(True, "megatron_bridge_parquet", ev)
    if path_ev and _IDX_NAME.search(source.files[0].name) and "input_ids" in cols:
        return PackedVerdict(True, "megatron_bridge_parquet", ["column input_ids", *path_ev])
    pack = [c for c in _PACK_COLUMNS if c in cols]
    if "input_ids" in cols and pack:
        return PackedVerdict(
            True, "in_memory_pack", [f"columns input_ids, {', '.join(pack)} (packed sequences)"]
        )
    token = [c for c in ("labels", "attention_mask", "loss_mask") if c in cols]
    if "input_ids" in cols and token and not _text_columns(source):
        return PackedVerdict(
            False,
            "pretokenized",
            [f"columns input_ids, {', '.join(token)} and no text column"],
            pretokenized=True,
        )
    return PackedVerdict(False, None, [])


def detect_packed(source: Source) -> list[Finding]:
    """Error findings for packed or pre-tokenized input (``[]`` when the input is records)."""
    v = packed_verdict(source)
    if v.packed:
        return [
            finding(
                "packed_parquet_used_with_automodel",
                f"{source.path}: packed data ({v.kind}): {'; '.join(v.evidence)}",
                kind=v.kind,
                evidence=list(v.evidence),
            )
        ]
    if v.pretokenized:
        return [
            finding(
                "pretokenized_input",
                f"{source.path}: token ids, not text: {'; '.join(v.evidence)}",
                evidence=list(v.evidence),
            )
        ]
    return []


def refuse_packed(source: Source) -> None:
    """Raise FindingError (exit 1) on packed or pre-tokenized input; return quietly otherwise."""
    found = detect_packed(source)
    if found:
        raise FindingError(found[0])
