"""Deterministic train/validation split by conversation hash, written as it streams.

Each conversation's side is a function of its content alone: the sha256 of a canonical JSON of the
normalized conversation (sorted keys, no whitespace) read as a number in [0, 1) and compared with
``val_fraction``. So the split does not depend on row order or on the rest of the file, the same data
always splits the same way, and exact duplicates (same hash) always land on the same side: no
validation row is a copy of a training row.
"""

from __future__ import annotations

import hashlib
import json
import os
from array import array
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from .atomic import atomic_path
from .errors import OutputNotWritable, UsageError

Side = Literal["train", "validation"]

_SCALE = float(1 << 64)


def canonical_json(conv: Mapping[str, Any]) -> str:
    """The one text a conversation hashes as: sorted keys, compact separators, unicode kept."""
    return json.dumps(conv, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def conversation_hash(conv: Mapping[str, Any]) -> str:
    """sha256 (hex) of the conversation's canonical JSON."""
    return hashlib.sha256(canonical_json(conv).encode("utf-8")).hexdigest()


def hash_position(digest: str) -> float:
    """The hash as a number in [0, 1): its first 64 bits over 2**64."""
    return int(digest[:16], 16) / _SCALE


def side_of(digest: str, val_fraction: float) -> Side:
    """``validation`` when the hash falls below ``val_fraction``, else ``train``."""
    return "validation" if hash_position(digest) < val_fraction else "train"


def check_fraction(val_fraction: float) -> float:
    if not 0.0 <= val_fraction < 1.0:
        raise UsageError(
            f"$[val_fraction] {val_fraction}: must be at least 0 and below 1",
            hint="e.g. $[val_fraction] 0.02 keeps about 2% of the conversations for validation",
        )
    return float(val_fraction)


@dataclass(frozen=True)
class SplitResult:
    """Where the two halves went, how many rows each holds, and their sha256."""

    train_path: Path
    validation_path: Path
    train_rows: int
    validation_rows: int
    train_sha256: str
    validation_sha256: str
    val_fraction: float
    duplicates: int  # rows whose conversation already appeared (kept, on the same side as the first)
    forced_validation: bool  # the hash rule gave no validation row: the lowest hash was moved there

    @property
    def rows(self) -> int:
        return self.train_rows + self.validation_rows

    def to_dict(self) -> dict[str, Any]:
        return {
            "train": {"path": str(self.train_path), "rows": self.train_rows, "sha256": self.train_sha256},
            "validation": {
                "path": str(self.validation_path),
                "rows": self.validation_rows,
                "sha256": self.validation_sha256,
            },
            "val_fraction": self.val_fraction,
            "duplicates": self.duplicates,
            "forced_validation": self.forced_validation,
        }


class _HashingWriter:
    """A text sink that counts lines and hashes the exact bytes it writes; a write error names ``target`` (two
    files are written at once, so the error must say which)."""

    def __init__(self, fh, target: str | os.PathLike | None = None):
        self.fh = fh
        self.target = target
        self.sha = hashlib.sha256()
        self.rows = 0

    def write_line(self, line: str) -> None:
        data = line + "\n"
        try:
            self.fh.write(data)
        except OSError as err:
            raise OutputNotWritable(self.target or "output", err) from None
        self.sha.update(data.encode("utf-8"))
        self.rows += 1

    def sync(self) -> None:
        try:
            _sync(self.fh)
        except OSError as err:
            raise OutputNotWritable(self.target or "output", err) from None


def _line(conv: Mapping[str, Any]) -> str:
    return json.dumps(conv, ensure_ascii=False)


def split_conversations(
    conversations: Iterable[tuple[int, Mapping[str, Any]]],
    train_path: str | os.PathLike,
    validation_path: str | os.PathLike,
    *,
    val_fraction: float = 0.02,
    ensure_validation: bool = True,
    row_index: dict[str, Any] | None = None,
    side_digest: Callable[[int, str], str] | None = None,
    digest_of: Callable[[int, Mapping[str, Any]], str] | None = None,
) -> SplitResult:
    """Stream ``(row, conversation)`` pairs into two JSONL files; both appear atomically at the end.

    ``ensure_validation``: when ``val_fraction > 0`` and the hash rule puts nothing in validation (small
    data), the conversation with the lowest hash (and its exact duplicates) moves there, so the trainer's
    validation set is never empty while at least two distinct conversations exist. That costs one more
    pass over the train file, which only happens for small inputs.

    ``row_index``: when given, filled with ``{"train": [...], "validation": [...]}``, the input row number
    of each line of each file (so later steps can name input rows, not output lines).

    ``side_digest(row, digest)``: the digest that decides the row's side, when not its own: a near duplicate
    goes with the first row of its cluster (preflight), as an exact duplicate goes with its first copy.
    ``digest_of(row, conv)``: the conversation hash when the caller has it already (default: computed here).
    """
    index: dict[str, Any] = row_index if row_index is not None else {}
    index["train"], index["validation"] = array("q"), array("q")  # 8 bytes a row
    val_fraction = check_fraction(val_fraction)
    train_path, validation_path = Path(train_path), Path(validation_path)
    seen: set[bytes] = set()
    duplicates = 0
    lowest: str | None = None  # digest of the lowest-hash train conversation
    with atomic_path(train_path) as tmp_train, atomic_path(validation_path) as tmp_val:
        with open(tmp_train, "w", encoding="utf-8") as tf, open(tmp_val, "w", encoding="utf-8") as vf:
            train, val = _HashingWriter(tf, train_path), _HashingWriter(vf, validation_path)
            for _row, conv in conversations:
                digest = conversation_hash(conv) if digest_of is None else digest_of(_row, conv)
                key = bytes.fromhex(digest[:32])  # 128 bits: collisions are not a practical concern
                if key in seen:
                    duplicates += 1
                else:
                    seen.add(key)
                side = digest if side_digest is None else side_digest(_row, digest)
                if side_of(side, val_fraction) == "validation":
                    val.write_line(_line(conv))
                    index["validation"].append(_row)
                else:
                    train.write_line(_line(conv))
                    index["train"].append(_row)
                    if lowest is None or digest < lowest:
                        lowest = digest
            train.sync()
            val.sync()
        forced = ensure_validation and val_fraction > 0 and val.rows == 0 and len(seen) >= 2
        if forced:
            train, val = _move_lowest(tmp_train, tmp_val, lowest, index)
    return SplitResult(
        train_path,
        validation_path,
        train.rows,
        val.rows,
        train.sha.hexdigest(),
        val.sha.hexdigest(),
        val_fraction,
        duplicates,
        forced,
    )


def _sync(fh) -> None:
    fh.flush()
    os.fsync(fh.fileno())


def _move_lowest(
    tmp_train: Path, tmp_val: Path, digest: str | None, index: dict[str, Any]
) -> tuple[_HashingWriter, _HashingWriter]:
    """Second pass (small inputs only): move every copy of the lowest-hash conversation to validation."""
    pass1 = tmp_train.with_name(tmp_train.name + ".pass1")
    os.replace(tmp_train, pass1)
    try:
        with (
            open(pass1, encoding="utf-8") as fin,
            open(tmp_train, "w", encoding="utf-8") as tf,
            open(tmp_val, "w", encoding="utf-8") as vf,
        ):
            train, val = _HashingWriter(tf, tmp_train), _HashingWriter(vf, tmp_val)
            rows, index["train"], index["validation"] = index["train"], array("q"), array("q")
            for raw, row in zip(fin, rows, strict=True):
                line = raw.rstrip("\n")
                if conversation_hash(json.loads(line)) == digest:
                    val.write_line(line)
                    index["validation"].append(row)
                else:
                    train.write_line(line)
                    index["train"].append(row)
            train.sync()
            val.sync()
    finally:
        pass1.unlink(missing_ok=True)
    return train, val


def drop_rows(
    result: SplitResult,
    rows: Collection[int],
    index: dict[str, Any],
    on_drop: Callable[[int, dict[str, Any]], None],
) -> SplitResult:
    """Rewrite both halves without the lines of input ``rows`` (each handed to ``on_drop`` first); the index
    and the counts and sha256 follow. Atomic per file; the other lines are copied byte for byte."""
    drop = set(int(r) for r in rows)
    out: dict[str, tuple[int, str]] = {}
    for key, path in (("train", result.train_path), ("validation", result.validation_path)):
        old_index = index.get(key) or array("q")
        new_index = array("q")
        with atomic_path(path) as tmp:
            with open(path, encoding="utf-8") as fin, open(tmp, "w", encoding="utf-8") as fout:
                w = _HashingWriter(fout, path)
                for raw, row in zip(fin, old_index, strict=True):
                    line = raw.rstrip("\n")
                    if row in drop:
                        on_drop(int(row), json.loads(line))
                    else:
                        w.write_line(line)
                        new_index.append(row)
                w.sync()
        index[key] = new_index
        out[key] = (w.rows, w.sha.hexdigest())
    return replace(
        result,
        train_rows=out["train"][0],
        train_sha256=out["train"][1],
        validation_rows=out["validation"][0],
        validation_sha256=out["validation"][1],
    )


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
