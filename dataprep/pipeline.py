"""The row pipeline: records in, validated conversations and rejects out, in input order.

    open source -> refuse packed -> rename mapped columns -> detect (or force) the shape
      -> convert batch by batch -> validate every conversation (``messages.validate_conversation``)

Everything that reads records as conversations goes through here, so a row is seen, converted and validated one
way whoever asks: normalize (which writes ``pipeline.lines``), preflight (``pipeline.items``: it keeps the rejects),
stats on raw input (``conversations``), and the Ray engine's workers (a ``RowPipeline`` is pickled to them and fed
their block's batches).

- ``ConvertSpec``: how records become conversations (the shape, renamed columns, the converters' options, the
  text encoding), as one value.
- ``open_input(path, spec)``: every refusal before a row is converted (packed data, unknown shape, a renamed
  column the input lacks) -> ``Opened`` (the source, the detection, the pipeline, the batches).
- ``RowPipeline``: batches -> ``(row, conversation)`` or ``Reject``.
- ``as_written(source)``: messages JSONL validated line by line as written (preflight's path for input that is
  already in the trainer's shape).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .converters import registry
from .converters._common import Converter, ConvertOptions, Notes, Reject
from .converters.registry import Detection
from .errors import FindingError, UsageError
from .findings import Finding, finding
from .messages import validate_conversation
from .safejson import loads as safe_loads
from .sources.base import Batch

SAMPLE_ROWS = 100  # rows of the head that detection scores shapes on
DETECT_ROWS = 1000  # rows read before detecting, whatever the batch size
TAKE_MODES = (None, "chosen")
AS_WRITTEN_SHAPES = (None, "openai_messages", "messages")


@dataclass(frozen=True)
class ConvertSpec:
    """How records become conversations, as the user asked: one value for every engine, command and worker.

    ``mapping``: renamed columns, target -> source. ``role_map``, ``system``, ``take``, ``text_only``,
    ``all_paths``: the converters' options (``converters._common.ConvertOptions``). ``encoding``: of text input.
    """

    fmt: str | None = None
    mapping: Mapping[str, str] = field(default_factory=dict)
    role_map: Mapping[str, str] = field(default_factory=dict)
    system: str | None = None
    take: str | None = None
    text_only: bool = False
    all_paths: bool = False
    encoding: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "mapping", dict(self.mapping or {}))
        object.__setattr__(self, "role_map", dict(self.role_map or {}))
        if self.take not in TAKE_MODES:
            raise UsageError(f"$[take] {self.take!r}: only 'chosen' is supported")
        if self.fmt is not None:
            registry.get(self.fmt)  # an unknown shape fails before any reading
        self.options()  # so does a role map onto something that is not a role

    def options(self) -> ConvertOptions:
        """The converters' options (checked: a role map onto something that is not a role is refused)."""
        return ConvertOptions(
            role_map=dict(self.role_map),
            system=self.system,
            take=self.take,
            text_only=self.text_only,
            all_paths=self.all_paths,
        )

    @property
    def changes_rows(self) -> bool:
        """Whether anything asked for would change a messages row (so messages JSONL cannot pass as written)."""
        return bool(
            self.fmt not in AS_WRITTEN_SHAPES
            or self.mapping
            or self.role_map
            or self.system
            or self.text_only
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.fmt,
            "map": dict(self.mapping),
            "role_map": dict(self.role_map),
            "system": self.system,
            "take": self.take,
            "text_only": self.text_only,
            "all_paths": self.all_paths,
            "encoding": self.encoding,
        }


# What a converter's note (converters._common.Notes) means, as the message of its one finding per input.
NOTE_MESSAGES: Mapping[str, str] = {
    "python_literal_cells": "{n} {rows} held a list or dict written as a Python literal (single quotes, None, "
    "True: pandas to_csv), not JSON; read safely with ast.literal_eval",
    "loss_weight_ignored": "{n} {rows} have an assistant turn with loss_weight 0; AutoModel has no per-turn weight "
    "and trains it",
}


def note_findings(notes: Notes, unit: str = "row") -> list[Finding]:
    """One finding per code the converter noted, with the count and the first rows (normalize's report; stats
    and preflight can pass their converter's ``notes`` here too)."""
    out = []
    for code, n in sorted(notes.counts.items()):
        rows = notes.rows.get(code, [])
        text = NOTE_MESSAGES[code].format(n=n, rows=f"{unit}{'s' if n != 1 else ''}")
        out.append(finding(code, f"{text} (first: row {rows[0] if rows else '?'})", rows=rows, count=n))
    return out


def _errors(batch: Batch) -> list[Reject]:
    return [Reject(e.row, e.code, e.message, e.raw) for e in batch.errors]


def _validated(
    batch: Batch | None, converted: list[tuple[int, dict[str, Any]]], rejects: list[Reject]
) -> Iterator[tuple[int, dict[str, Any]] | Reject]:
    """Validate converted rows; merge with the rejects in row order (a row's original record in its reject)."""
    lookup: dict[int, Any] | None = None
    items: list[tuple[int, int, Any]] = [(r.row, 0, r) for r in rejects]
    for row, conv in converted:
        problems = validate_conversation(conv)
        if problems:
            if lookup is None:
                lookup = (
                    dict(zip(batch.row_numbers(), batch.records(), strict=True)) if batch is not None else {}
                )
            p = problems[0]
            items.append((row, 0, Reject(row, p.code, p.message, lookup.get(row, conv))))
        else:
            items.append((row, 1, (row, conv)))
    items.sort(key=lambda x: (x[0], x[1]))
    for _, _, item in items:
        yield item


def dumps_line(conv: Mapping[str, Any]) -> str:
    """One output line: compact, UTF-8 (no ASCII escaping), keys in schema order; deterministic."""
    return json.dumps(conv, ensure_ascii=False, separators=(",", ":"))


@dataclass
class RowPipeline:
    """Batches of records -> validated conversations and rejects: ``--map``, the bound converter, validation.

    It holds no open file, so it pickles (the Ray engine sends one to its workers, which feed it the batches of
    their block, numbered as in the whole input). ``counter[0]``, when given, counts the input records read.
    """

    converter: Converter
    mapping: Mapping[str, str] = field(default_factory=dict)

    @property
    def whole_input(self) -> bool:
        """Whether the shape needs every row at once (OASST trees span rows)."""
        return self.converter.whole_input

    @property
    def notes(self) -> Notes:
        """What the converter noticed on rows it kept (complete once a stream is consumed)."""
        return self.converter.notes

    @notes.setter
    def notes(self, notes: Notes) -> None:
        self.converter.notes = notes

    def _renamed(self, batches: Iterable[Batch]) -> Iterator[Batch]:
        for b in batches:
            yield _rename_batch(b, self.mapping)

    def items(
        self, batches: Iterable[Batch], counter: list[int] | None = None
    ) -> Iterator[tuple[int, dict[str, Any]] | Reject]:
        """``(row, conversation)`` for a row that converts and validates, else its ``Reject``; input order."""
        conv = self.converter
        counter = [0] if counter is None else counter
        if conv.whole_input:
            rows: list[tuple[int, dict[str, Any]]] = []
            errors: list[Reject] = []
            for b in self._renamed(batches):
                counter[0] += len(b) + len(b.errors)
                errors.extend(_errors(b))
                rows.extend(zip(b.row_numbers(), b.records(), strict=True))
            converted, rejects = conv.convert_all(rows)  # type: ignore[attr-defined]
            records = dict(rows)
            lookup_batch = Batch.from_records(list(records.values()), rows=list(records.keys()))
            yield from _validated(lookup_batch, converted, errors + rejects)
            return
        for b in self._renamed(batches):
            counter[0] += len(b) + len(b.errors)
            converted, rejects = conv.convert(b)
            yield from _validated(b, converted, _errors(b) + rejects)

    def conversations(
        self, batches: Iterable[Batch], on_reject: Callable[[Reject], None] | None = None
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        """The conversations of ``items``; each reject goes to ``on_reject`` when given."""
        for item in self.items(batches):
            if not isinstance(item, Reject):
                yield item
            elif on_reject is not None:
                on_reject(item)

    def lines(
        self, batches: Iterable[Batch], counter: list[int]
    ) -> Iterator[tuple[int, str] | Reject | LineBlock]:
        """``items`` serialized as output lines; flat shapes take their vectorized path straight to a block of
        JSON lines (valid by construction, so not validated again)."""
        conv = self.converter
        fast = getattr(conv, "convert_lines", None)
        if fast is None or conv.whole_input:
            for item in self.items(batches, counter):
                yield item if isinstance(item, Reject) else (item[0], dumps_line(item[1]))
            return
        for b in self._renamed(batches):
            counter[0] += len(b) + len(b.errors)
            res = fast(b)
            if res is None:
                converted, rejects = conv.convert(b)
                for item in _validated(b, converted, _errors(b) + rejects):
                    yield item if isinstance(item, Reject) else (item[0], dumps_line(item[1]))
                continue
            rows, lines, rejects = res
            bad = sorted(_errors(b) + rejects, key=lambda r: r.row)
            if not bad:
                yield LineBlock(rows, lines)
                continue
            merged: list[tuple[int, int, Any]] = [(r.row, 0, r) for r in bad]
            merged.extend(
                (r, 1, (r, line)) for r, line in zip(rows, LineBlock(rows, lines).strings(), strict=True)
            )
            merged.sort(key=lambda x: (x[0], x[1]))
            for _, _, item in merged:
                yield item


@dataclass(frozen=True)
class Opened:
    """An input opened and its shape decided, before any row is converted, so callers can refuse or plan first."""

    source: Any  # the open Source (``.format``, ``.files``, ``.num_rows``...)
    detection: Detection
    pipeline: RowPipeline | None  # None when opened with ``instantiate=False`` (detection only)
    batches: Iterator[Batch]  # the input's batches as read, the detection head first


def _open_source(path: str | Path, encoding: str | None, batch_rows: int):
    from .sources import open_source, refuse_packed

    src = open_source(str(path), encoding=encoding, batch_rows=batch_rows)
    refuse_packed(src)
    return src


def open_input(
    path: str | Path, spec: ConvertSpec | None = None, *, batch_rows: int = 8192, instantiate: bool = True
) -> Opened:
    """Open, refuse packed input, rename mapped columns, detect (or force) the shape: every refusal before a row
    is converted, so every engine and command detects the same way."""
    spec = spec or ConvertSpec()
    mapping = spec.mapping
    src = _open_source(path, spec.encoding, batch_rows)
    # Detection reads the first DETECT_ROWS records whatever the batch size, so the shape (and so the
    # output) never depends on how the input was batched.
    it = iter(src.batches())
    head: list[Batch] = []
    while sum(len(b) for b in head) < DETECT_ROWS:
        b = next(it, None)
        if b is None:
            break
        head.append(b)
    raw_cols = _union(_batch_columns(b) for b in head) or list(src.columns or [])
    missing = [s for s in mapping.values() if raw_cols and s not in raw_cols]
    if missing:
        raise UsageError(
            f"$[mapping] names column(s) {', '.join(missing)} that the input does not have",
            hint="columns: " + ", ".join(raw_cols),
        )
    if not raw_cols and not any(len(b) for b in head):
        errors = [e for b in head for e in b.errors]
        if errors:  # every line failed to parse: no record to detect a shape from, nothing to convert
            from .errors import UnreadableInput

            raise UnreadableInput(
                path,
                f"none of its {len(errors)} lines parses as a record ({errors[0].message})",
                hint="is it really JSONL? Records on stdin are JSONL; pass CSV and others as a file",
                line=errors[0].row,
            )
        raise FindingError(finding("unknown_schema", f"{path}: the input holds no records"))
    renamed = [_rename_batch(b, mapping) for b in head]
    columns = _renamed_columns(raw_cols, mapping)
    sample = _sample(renamed)
    detection = registry.forced(spec.fmt, columns, sample) if spec.fmt else registry.detect(columns, sample)
    pipeline = None
    if instantiate:
        converter = registry.get(detection.shape)(spec.options())
        converter.bind(columns)
        pipeline = RowPipeline(converter, mapping)

    def batches() -> Iterator[Batch]:
        yield from head
        head.clear()
        yield from it

    return Opened(src, detection, pipeline, batches())


def conversations(
    path: str | Path,
    spec: ConvertSpec | None = None,
    *,
    on_reject: Callable[[Reject], None] | None = None,
    notes: Notes | None = None,
    batch_rows: int = 8192,
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(source row number, valid conversation) for every row of ``path`` that converts and validates; each
    reject goes to ``on_reject`` (nothing is silent: stats counts them). ``notes``, when given, is filled with
    the converter's notes as rows are converted (complete once the stream is consumed).

    Detection and refusals (packed input, unknown schema, preference data...) raise before the first item.
    """
    opened = open_input(path, spec, batch_rows=batch_rows)
    if notes is not None:
        opened.pipeline.notes = notes
    return opened.pipeline.conversations(opened.batches, on_reject)


def as_written(source: Any, encoding: str | None = None) -> Iterator[tuple[int, Any] | Reject]:
    """Messages JSONL validated line by line as written (no Arrow round trip that would add null keys): what
    preflight passes through when the input is in the trainer's shape already. ``(row, conversation)`` or a
    ``Reject`` (a line that is not text in ``encoding``, not JSON, or not a valid conversation); blank lines are
    skipped. A folder or glob of shards is read file by file, rows numbered on across them."""
    from .sources.sniff import open_decompressed

    files = getattr(source, "files", None) or [source.path]
    offset = 0
    for path in files:
        lineno = 0
        with open_decompressed(path, source.compression) as fh:
            for lineno, raw in enumerate(fh, start=1):
                row = offset + lineno
                try:
                    text = raw.decode(encoding or "utf-8").strip()
                except UnicodeDecodeError as err:  # not replaced silently: the row goes to the rejects
                    bad = raw.decode("utf-8", errors="replace").strip()[:2000]
                    yield Reject(row, "invalid_json", f"line {row}: not {err.encoding} text", bad)
                    continue
                if not text:
                    continue
                try:
                    obj = safe_loads(text)
                except json.JSONDecodeError as err:
                    yield Reject(row, "invalid_json", f"line {row}: {err.msg}", text[:2000])
                    continue
                problems = validate_conversation(obj)
                if problems:
                    yield Reject(row, problems[0].code, problems[0].message, obj)
                    continue
                yield row, obj
        offset += lineno


# -- renamed columns and detection ----------------------------------------------------------------------------


@dataclass
class _RenamedBatch(Batch):
    """A batch whose table has its columns renamed by ``--map``; ``records()`` are the original batch's records
    (for JSONL: the lines exactly as written, not the table's rows with nulls for keys a line lacks) with their
    keys renamed the same way, made only when asked for."""

    _original: Batch | None = None
    _mapping: Mapping[str, str] = field(default_factory=dict)

    def records(self) -> list[dict[str, Any]]:
        if self._records is None and self._original is not None:
            self._records = _rename_records(self._original.records(), self._mapping)
            self._original = None
        return super().records()


def _rename_records(records: list[dict[str, Any]], mapping: Mapping[str, str]) -> list[dict[str, Any]]:
    """Each record with its ``--map`` keys renamed (target=source) and the keys named as a target dropped, as
    the table's columns are."""
    inverse = {src: tgt for tgt, src in mapping.items()}
    targets = set(mapping)
    return [{inverse.get(k, k): v for k, v in r.items() if k in inverse or k not in targets} for r in records]


def _rename_batch(batch: Batch, mapping: Mapping[str, str]) -> Batch:
    """Apply ``--map target=source``: the source column takes the target name (replacing any target)."""
    if not mapping:
        return batch
    inverse = {src: tgt for tgt, src in mapping.items()}
    targets = set(mapping)
    if batch.table is not None:
        t = batch.table
        keep = [n for n in t.column_names if n in inverse or n not in targets]
        t = t.select(keep).rename_columns([inverse.get(n, n) for n in keep])
        return _RenamedBatch(
            start=batch.start,
            table=t,
            rows=batch.rows,
            errors=batch.errors,
            _original=batch,
            _mapping=dict(mapping),
        )
    return Batch(
        start=batch.start,
        _records=_rename_records(batch.records(), mapping),
        rows=batch.rows,
        errors=batch.errors,
    )


def _renamed_columns(columns: list[str], mapping: Mapping[str, str]) -> list[str]:
    inverse = {src: tgt for tgt, src in mapping.items()}
    return [inverse.get(c, c) for c in columns if c in inverse or c not in mapping]


def _sample(batches: list[Batch]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for b in batches:
        need = SAMPLE_ROWS - len(out)
        if need <= 0:
            break
        # min(): a table with no columns (a batch of {} rows) slices to any length pyarrow is asked for
        need = min(need, len(b))
        out.extend(b.table.slice(0, need).to_pylist() if b.table is not None else b.records()[:need])
    return out


def _union(column_lists: Iterator[list[str]]) -> list[str]:
    seen: dict[str, None] = {}
    for cols in column_lists:
        for c in cols:
            seen.setdefault(c, None)
    return list(seen)


def _batch_columns(batch: Batch | None) -> list[str]:
    if batch is None:
        return []
    if batch.table is not None:
        return list(batch.table.column_names)
    return _union(list(r) for r in batch.records())


def detection_input(
    head: list[Batch], fallback_columns: list[str] | None = None
) -> tuple[list[str], list[dict]]:
    """(columns, sample rows) that shape detection sees in the input's first batches (``DETECT_ROWS`` rows).

    normalize and inspect both detect from this, so inspect shows the shape normalize will use.
    """
    return _union(_batch_columns(b) for b in head) or list(fallback_columns or []), _sample(head)


@dataclass
class LineBlock:
    """A whole batch of valid lines from the vectorized path (a polars String Series)."""

    rows: list[int]
    lines: Any  # each line ends in "\n"

    def utf8(self) -> Any:
        """All lines as one UTF-8 buffer: the values buffer of the Arrow string array, no copy per line."""
        import numpy as np
        import polars as pl
        import pyarrow as pa

        arr = self.lines.to_arrow(compat_level=pl.CompatLevel.oldest())
        if hasattr(arr, "combine_chunks"):
            arr = arr.combine_chunks()
        if not pa.types.is_large_string(arr.type):
            arr = arr.cast(pa.large_string())
        offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)
        start, end = int(offsets[arr.offset]), int(offsets[arr.offset + len(arr)])
        return memoryview(arr.buffers()[2])[start:end]

    def strings(self) -> list[str]:
        return [x[:-1] for x in self.lines.to_list()]
