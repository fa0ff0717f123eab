"""``inspect`` as a library call: what an input is (format, rows, columns, samples, shape, packed verdict)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import DataprepError, UnreadableInput
from .findings import Finding
from .sources.jsonl import ENCODING_ADVICE, ENCODING_HINT
from .sources.packed import PackedVerdict, detect_packed, packed_verdict
from .sources.readers import EXACT_COUNT_MAX_BYTES, NpySource, Source, open_source

VALUE_MAX_CHARS = 200
LIST_MAX_ITEMS = 8
_TEXT_FORMATS = ("csv", "tsv", "json", "jsonl")


def cut_value(v: Any, max_chars: int = VALUE_MAX_CHARS) -> Any:
    """A JSON-friendly copy of ``v`` with long strings and lists shortened (for display only)."""
    if isinstance(v, str):
        return v if len(v) <= max_chars else v[:max_chars] + f"… (+{len(v) - max_chars} chars)"
    if isinstance(v, dict):
        return {str(k): cut_value(x, max_chars) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        items = [cut_value(x, max_chars) for x in v[:LIST_MAX_ITEMS]]
        if len(v) > LIST_MAX_ITEMS:
            items.append(f"… (+{len(v) - LIST_MAX_ITEMS} items)")
        return items
    if isinstance(v, (bytes, bytearray)):
        return f"<{len(v)} bytes>"
    if v is None or isinstance(v, (int, float, bool)):
        return v
    return str(v)


_PY_TYPES = {str: "string", int: "int64", float: "double", bool: "bool", list: "list", dict: "struct"}


def _record_types(columns: list[str], records: list[dict[str, Any]]) -> list[dict[str, str]]:
    out = []
    for c in columns:
        kinds = sorted(
            {
                _PY_TYPES.get(type(r[c]), type(r[c]).__name__) if r.get(c) is not None else "null"
                for r in records
                if c in r
            }
        )
        out.append({"name": c, "type": "|".join(kinds) or "null"})
    return out


@dataclass(frozen=True)
class InspectReport:
    """What ``dataprep inspect`` prints; ``to_dict()`` is its JSON (without ``findings``)."""

    source: dict[str, Any]
    num_rows: int | None
    num_rows_exact: bool
    columns: list[dict[str, str]]
    sample: list[dict[str, Any]]
    packed: PackedVerdict
    shape: dict[str, Any] | None = None
    findings: list[Finding] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.source,
            "num_rows": self.num_rows,
            "num_rows_exact": self.num_rows_exact,
            "columns": self.columns,
            "sample": self.sample,
            "shape": self.shape,
            "packed": self.packed.to_dict(),
        }


def _text_bytes(src: Source) -> int:
    size = sum(f.stat().st_size for f in src.files)
    return size * 8 if src.compression != "none" else size


def _detect_shape(
    head: list[Any], columns: list[str], sample: list[dict[str, Any]]
) -> tuple[dict[str, Any] | None, list[Finding]]:
    """The record shape from the converters registry.

    Detected from the same first rows and column union as ``dataprep normalize``, so both name one shape.
    """
    from .converters.registry import detect
    from .pipeline import detection_input

    columns, sample = detection_input(head, columns)
    try:
        return detect(columns, sample).to_dict(), []
    except DataprepError as err:
        return None, [err.finding]


def inspect_input(path: str, *, encoding: str | None = None, sample_rows: int = 3) -> InspectReport:
    """Describe ``path``. Small text inputs are read whole (exact count, every line checked); large ones are
    sampled and their row count estimated. A line that does not parse is UnreadableInput ``PATH:LINE``."""
    src = open_source(path, encoding=encoding)
    verdict = packed_verdict(src)
    findings = detect_packed(src)
    if isinstance(src, NpySource):
        if not findings:
            list(src.batches())  # raises UnreadableInput: a .npy that is not a pack is no dataset
        return InspectReport(src.to_dict(), src.num_rows, True, [], [], verdict, None, findings)

    full_scan = (
        src.data_format in _TEXT_FORMATS and _text_bytes(src) <= EXACT_COUNT_MAX_BYTES and not findings
    )
    records: list[dict[str, Any]] = []
    head: list[Any] = []  # the first batches, up to the rows normalize's shape detection reads
    from .pipeline import DETECT_ROWS

    rows = 0
    for batch in src.batches():
        if batch.errors:
            e = batch.errors[0]
            hint = "fix or remove the line; `dataprep normalize` sends unparseable lines to the rejects file"
            message = e.message
            # the rejects' message carries the advice: say it once, as the hint
            carried = "; " + ENCODING_ADVICE
            if e.message.endswith(carried):
                message, hint = e.message[: -len(carried)], ENCODING_HINT
            raise UnreadableInput(src.path, message, hint=hint, line=e.row)
        if rows < DETECT_ROWS:
            head.append(batch)
        rows += len(batch)
        if len(records) < 20:
            records.extend(batch.records()[: 20 - len(records)])
        if not full_scan:
            break
    if full_scan:
        num_rows, exact = rows, True
    else:
        num_rows, exact = src.num_rows, src.num_rows_exact
    if num_rows == 0:
        raise UnreadableInput(
            src.path, "no records in it", hint="the input has a header or structure but no rows"
        )
    schema = src.schema
    if schema is not None:
        columns = [{"name": f.name, "type": str(f.type)} for f in schema]
    else:
        columns = _record_types(src.columns, records)
    shape = None
    if not findings:
        shape, shape_findings = _detect_shape(head, [c["name"] for c in columns], records)
        findings = findings + shape_findings
    sample = [cut_value(r) for r in records[:sample_rows]]
    return InspectReport(src.to_dict(), num_rows, exact, columns, sample, verdict, shape, findings)
