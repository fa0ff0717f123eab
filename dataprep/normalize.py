"""Any records in, OpenAI messages JSONL out, nothing lost.

    open source -> refuse packed -> rename mapped columns -> detect (or force) the shape
      -> convert batch by batch -> validate every conversation -> drop exact duplicates (optional)
      -> set near duplicates aside (optional, ``--dedup near``: rejects with code ``near_duplicate``)
      -> OUT JSONL + rejects JSONL, both written atomically

Every input row ends in the output, the rejects file (row number, code, message, original record) or the
duplicate count: ``read == written + rejected + duplicates``. For OASST trees the unit is the
conversation (a root-to-leaf path), not the row; ``records_read`` still counts input rows.

Other engines and preflight use the same pipeline through a small public API, never its internals:
``prepare`` (open, refuse, --map, detect -> ``Prepared``), ``iter_converted`` (conversations and Rejects in
input order; ``valid_only`` drops the Rejects), ``write_converted`` (output + rejects lines -> ``Written``),
``rename_batches`` (--map on batches read elsewhere), ``check_outputs``/``check_take``/``convert_options``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from converters import registry
from converters._common import Converter, ConvertOptions, Notes, Reject, prune_nulls
from converters.registry import Detection

from .atomic import atomic_write, check_output_path
from .errors import DataprepError, FindingError, UsageError
from .findings import Finding, finding
from .messages import validate_conversation
from .sources.base import Batch

SAMPLE_ROWS = 100
DETECT_ROWS = 1000
FIRST_ROWS = 20


def dumps_line(conv: Mapping[str, Any]) -> str:
    """One output line: compact, UTF-8 (no ASCII escaping), keys in schema order; deterministic."""
    return json.dumps(conv, ensure_ascii=False, separators=(",", ":"))


# What a converter's note (converters._common.Notes) means, as the message of its one finding per input.
NOTE_MESSAGES: Mapping[str, str] = {
    "python_literal_cells": "{n} {rows} held a list or dict written as a Python literal (single quotes, None, "
    "True: pandas to_csv), not JSON; read safely with ast.literal_eval",
    "loss_weight_ignored": "{n} {rows} have an assistant turn with loss_weight 0; AutoModel has no per-turn weight "
    "and trains it",
}


# A reject code whose catalogue hint is about the whole input (refused preference data) says what the rows
# mean instead: with --take chosen, KTO rows labelled undesirable go to the rejects.
REJECT_HINTS: Mapping[str, str] = {
    "preference_data": "rows labelled undesirable (KTO) are not SFT examples: they stay in the rejects file",
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


def default_rejects_path(out: str | Path) -> Path:
    """``data/out.jsonl`` -> ``data/out.rejects.jsonl``."""
    p = Path(out)
    return p.with_name(p.stem + ".rejects.jsonl")


@dataclass(frozen=True)
class NormalizeResult:
    """What a normalize run did: the shape it read, where it wrote, and counts that reconcile."""

    input: str
    output: str | None
    rejects_path: str | None
    detection: Detection
    read: int
    written: int
    rejected: int
    duplicates: int
    records_read: int
    unit: str  # "row", or "conversation" for tree shapes
    rejected_by_code: Mapping[str, int] = field(default_factory=dict)
    first_rows: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    first_message: Mapping[str, str] = field(default_factory=dict)
    notes: Notes = field(default_factory=Notes)  # what the converter noted on rows it converted

    @property
    def reconciled(self) -> bool:
        return self.read == self.written + self.rejected + self.duplicates

    def findings(self) -> list[Finding]:
        """A warning per reject code (an error when no row survived), one finding per converter note (Python
        literals read, loss weights ignored), and info on dropped duplicates."""
        out: list[Finding] = []
        severity = "error" if self.read and not self.written else "warning"
        for code, n in sorted(self.rejected_by_code.items(), key=lambda kv: (-kv[1], kv[0])):
            rows = self.first_rows.get(code, ())
            out.append(
                finding(
                    code,
                    f"{n} {self.unit}{'s' if n != 1 else ''} rejected (first: row {rows[0] if rows else '?'}: "
                    f"{self.first_message.get(code, '')})",
                    hint=REJECT_HINTS.get(code),
                    severity=severity,
                    rows=rows,
                    count=n,
                )
            )
        out.extend(note_findings(self.notes, self.unit))
        if self.duplicates:
            out.append(
                finding(
                    "duplicate_row",
                    f"{self.duplicates} exact duplicate {self.unit}{'s' if self.duplicates != 1 else ''} "
                    "dropped (--dedup)",
                    severity="info",
                    hint="the first copy of each is kept; the summary counts the dropped ones",
                    count=self.duplicates,
                )
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "input": self.input,
            "output": self.output,
            "rejects": self.rejects_path,
            "detection": self.detection.to_dict(),
            "unit": self.unit,
            "counts": {
                "read": self.read,
                "written": self.written,
                "rejected": self.rejected,
                "duplicates": self.duplicates,
                "records_read": self.records_read,
                "rejected_by_code": dict(sorted(self.rejected_by_code.items())),
            },
            "reconciled": self.reconciled,
        }


# -- the stream ---------------------------------------------------------------------------------------


def _parse_pairs(pairs: Mapping[str, str] | None) -> dict[str, str]:
    return dict(pairs or {})


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


def rename_batches(batches: Iterable[Batch], mapping: Mapping[str, str] | None) -> Iterator[Batch]:
    """Each batch with ``--map`` applied: for callers that read the batches themselves (engine_ray's blocks)."""
    mapping = dict(mapping or {})
    for b in batches:
        yield _rename_batch(b, mapping)


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


def _errors(batch: Batch) -> list[Reject]:
    return [Reject(e.row, e.code, e.message, e.raw) for e in batch.errors]


@dataclass(frozen=True)
class Prepared:
    """What ``prepare`` decided before converting anything, so callers can refuse or plan before the stream."""

    source: Any  # the open Source (``.format``, ``.files``, ``.num_rows``...)
    detection: Detection
    converter: Converter | None  # bound to the input's columns; None when ``instantiate=False``
    batches: Iterator[Batch]  # the input's batches with ``--map`` applied, the detection head first


def _open_source(path: str | Path, encoding: str | None, batch_rows: int):
    from .sources import open_source, refuse_packed

    src = open_source(str(path), encoding=encoding, batch_rows=batch_rows)
    refuse_packed(src)
    return src


def prepare(
    path: str | Path,
    *,
    fmt: str | None = None,
    mapping: Mapping[str, str] | None = None,
    options: ConvertOptions | None = None,
    encoding: str | None = None,
    batch_rows: int = 8192,
    instantiate: bool = True,
) -> Prepared:
    """Open, refuse packed input, apply ``--map``, detect (or force) the shape: every refusal before a row is
    converted, so the local engine, engine_ray and preflight all detect the same way."""
    if fmt is not None:
        registry.get(fmt)  # an unknown name fails before any reading
    mapping = _parse_pairs(mapping)
    src = _open_source(path, encoding, batch_rows)
    # Detection reads the first DETECT_ROWS records whatever the batch size, so the shape (and so the
    # output) never depends on how the input was batched.
    it = iter(src.batches())
    head: list[Batch] = []
    while sum(len(b) for b in head) < DETECT_ROWS:
        b = next(it, None)
        if b is None:
            break
        head.append(b)
    raw_cols, _ = detection_input(head, src.columns)
    missing = [s for s in mapping.values() if raw_cols and s not in raw_cols]
    if missing:
        raise UsageError(
            f"--map names column(s) {', '.join(missing)} that the input does not have",
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
    head = [_rename_batch(b, mapping) for b in head]
    columns = _renamed_columns(raw_cols, mapping)
    sample = _sample(head)
    detection = registry.forced(fmt, columns, sample) if fmt else registry.detect(columns, sample)
    converter = registry.get(detection.shape)(options or ConvertOptions()) if instantiate else None
    if converter is not None:
        converter.bind(columns)

    def batches() -> Iterator[Batch]:
        yield from head
        head.clear()
        for b in it:
            yield _rename_batch(b, mapping)

    return Prepared(src, detection, converter, batches())


def _validated(
    batch: Batch | None, converted: list[tuple[int, dict[str, Any]]], rejects: list[Reject]
) -> Iterator[tuple[int, dict[str, Any]] | Reject]:
    """Validate converted rows; merge with the rejects in row order."""
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


def iter_converted(
    converter: Converter, batches: Iterable[Batch], counter: list[int] | None = None
) -> Iterator[tuple[int, dict[str, Any]] | Reject]:
    """(row, valid conversation) or Reject, in input order, for callers that keep the rejects (preflight);
    ``counter[0]`` counts the input records read so far."""
    conv = converter
    if counter is None:
        counter = [0]
    if conv.whole_input:
        rows: list[tuple[int, dict[str, Any]]] = []
        errors: list[Reject] = []
        for b in batches:
            counter[0] += len(b) + len(b.errors)
            errors.extend(_errors(b))
            rows.extend(zip(b.row_numbers(), b.records(), strict=True))
        converted, rejects = conv.convert_all(rows)  # type: ignore[attr-defined]
        records = dict(rows)
        lookup_batch = Batch.from_records(list(records.values()), rows=list(records.keys()))
        yield from _validated(lookup_batch, converted, errors + rejects)
        return
    for b in batches:
        counter[0] += len(b) + len(b.errors)
        converted, rejects = conv.convert(b)
        yield from _validated(b, converted, _errors(b) + rejects)


@dataclass
class _Block:
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


def _lines(
    converter: Converter, batches: Iterable[Batch], counter: list[int]
) -> Iterator[tuple[int, str] | Reject | _Block]:
    """Like iter_converted, serialized; flat shapes take the vectorized path straight to JSON lines."""
    conv = converter
    fast = getattr(conv, "convert_lines", None)
    if fast is None or conv.whole_input:
        for item in iter_converted(conv, batches, counter):
            yield item if isinstance(item, Reject) else (item[0], dumps_line(item[1]))
        return
    for b in batches:
        res = fast(b)
        if res is None:
            counter[0] += len(b) + len(b.errors)
            converted, rejects = conv.convert(b)
            for item in _validated(b, converted, _errors(b) + rejects):
                yield item if isinstance(item, Reject) else (item[0], dumps_line(item[1]))
            continue
        counter[0] += len(b) + len(b.errors)
        rows, lines, rejects = res
        bad = sorted(_errors(b) + rejects, key=lambda r: r.row)
        if not bad:
            yield _Block(rows, lines)
            continue
        merged: list[tuple[int, int, Any]] = [(r.row, 0, r) for r in bad]
        merged.extend((r, 1, (r, line)) for r, line in zip(rows, _Block(rows, lines).strings(), strict=True))
        merged.sort(key=lambda x: (x[0], x[1]))
        for _, _, item in merged:
            yield item


def _reject_line(r: Reject) -> str:
    """One rejects line. The record's null fields are left out and its keys sorted: a JSONL batch read
    through Arrow gives every record the union of the keys around it (absent -> null, in the batch's key
    order), so only this form is the same however the input was batched."""
    record = prune_nulls(r.record)
    for ascii_only in (False, True):  # lone surrogates in the record: keep them escaped
        try:
            head = json.dumps(
                {"row": r.row, "code": r.code, "message": r.message},
                ensure_ascii=ascii_only,
                separators=(",", ":"),
            )
            rec = json.dumps(
                record, ensure_ascii=ascii_only, separators=(",", ":"), sort_keys=True, default=str
            )
            line = head[:-1] + ',"record":' + rec + "}"
            line.encode("utf-8")
            return line
        except UnicodeEncodeError:
            continue
    raise AssertionError("unreachable: ASCII output always encodes")


class TokenLimit:
    """``--max-tokens``: rows whose rendering through the model's chat template (counted as the trainer
    tokenizes it) is longer go to rejects as ``too_long``; rows are measured in batches as they stream."""

    BATCH = 512

    def __init__(self, loaded: Any, max_tokens: int):
        from .measure import Measurer, _backend_of, make_spec

        if max_tokens <= 0:
            raise UsageError(f"--max-tokens {max_tokens}: must be positive", hint="e.g. --max-tokens 8192")
        self.max_tokens = int(max_tokens)
        self.measurer = Measurer(make_spec(loaded), _backend_of(loaded))

    def split(self, items: list[tuple[int, str]]) -> tuple[list[tuple[int, str]], list[Reject]]:
        """The (row, line) pairs within the limit, in order, and the others as rejects. A row the template
        cannot render is kept: that is for validate/stats to report, not a length."""
        convs = [json.loads(line) for _, line in items]
        m = self.measurer
        bc = m.count_batch(m.render_batch(convs))
        total = dict(zip(bc.ok.tolist(), bc.total.tolist(), strict=True))
        keep: list[tuple[int, str]] = []
        rejects: list[Reject] = []
        for i, (row, line) in enumerate(items):
            t = total.get(i)
            if t is not None and t > self.max_tokens:
                msg = f"{t} tokens through the chat template, over --max-tokens {self.max_tokens}"
                rejects.append(Reject(row, "too_long", msg, convs[i]))
            else:
                keep.append((row, line))
        return keep, rejects


class _Writer:
    """Writes output and rejects lines, deduplicates, and keeps the counts."""

    def __init__(
        self,
        out: IO[str],
        rejects: IO[str],
        dedup: bool | str,
        *,
        background: bool = False,
        limit: TokenLimit | None = None,
    ):
        """``background``: a block's bytes are written by a thread while the next batch is read and converted
        (the write copies into the page cache with the GIL released); the caller must call ``finish()`` before
        ``out`` is closed."""
        self.out, self.rejects, self.dedup = out, rejects, bool(dedup)
        self.near: Any = None
        if dedup == "near":
            from .neardup import NearDup

            self.near = NearDup()
        self.written = self.rejected = self.duplicates = 0
        self.by_code: dict[str, int] = {}
        self.first_rows: dict[str, list[int]] = {}
        self.first_message: dict[str, str] = {}
        self.seen: set[bytes] = set()
        self.limit = limit
        self._held: list[tuple[int, str]] = []  # lines waiting for the token limit's next batch
        self._pool: Any = None
        self._pending: Any = None  # the Future of the block being written
        if background:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dataprep-write")

    def _wait(self) -> None:
        """Let the block being written in the background finish (output order; its error surfaces here)."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def finish(self) -> None:
        """Wait for the last background write and stop the thread (call it before ``out`` is closed)."""
        try:
            self._drain()
            self._wait()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None

    def block(self, block: _Block) -> None:
        if self.dedup or self.limit is not None:
            for row, line in zip(block.rows, block.strings(), strict=True):
                self.line(row, line)
            return
        if not len(block.lines):
            return
        data = block.utf8()  # a view that keeps its Arrow buffer alive until written
        self._wait()
        # polars output is valid UTF-8: write the bytes straight under the text layer, one write per batch
        self.out.flush()
        if self._pool is None:
            self.out.buffer.write(data)
        else:
            self._pending = self._pool.submit(self.out.buffer.write, data)
        self.written += len(block.lines)

    def line(self, row: int, line: str) -> None:
        if self.limit is None:
            self._emit(row, line)
            return
        self._held.append((row, line))
        if len(self._held) >= TokenLimit.BATCH:
            self._drain()

    def _drain(self) -> None:
        if not self._held:
            return
        held, self._held = self._held, []
        keep, rejects = self.limit.split(held)
        for r in rejects:
            self.reject(r)
        for row, line in keep:
            self._emit(row, line)

    def _emit(self, row: int, line: str) -> None:
        try:
            data = line.encode("utf-8")
        except UnicodeEncodeError:
            self.reject(Reject(row, "invalid_json", "the text holds a lone surrogate (not UTF-8)", None))
            return
        if self.dedup:
            h = hashlib.blake2b(data, digest_size=16).digest()
            if h in self.seen:
                self.duplicates += 1
                return
            self.seen.add(h)
            if self.near is not None and self._near_duplicate(row, line):
                return
        self._wait()
        self.out.write(line + "\n")
        self.written += 1

    def _near_duplicate(self, row: int, line: str) -> bool:
        """``--dedup near``: a near duplicate of an earlier kept row goes to rejects as ``near_duplicate``
        (after the exact check: exact copies stay in the duplicate count, as with ``--dedup``)."""
        conv = json.loads(line)
        of = self.near.check(row, conv)
        if of is None:
            return False
        msg = f"a near duplicate of row {of} (estimated Jaccard {self.near.last.jaccard:.2f} of word 3-grams)"
        self.reject(Reject(row, "near_duplicate", msg, conv))
        return True

    def reject(self, r: Reject) -> None:
        self.rejected += 1
        self.by_code[r.code] = self.by_code.get(r.code, 0) + 1
        rows = self.first_rows.setdefault(r.code, [])
        if len(rows) < FIRST_ROWS:
            rows.append(r.row)
        self.first_message.setdefault(r.code, r.message)
        self.rejects.write(_reject_line(r) + "\n")


@dataclass(frozen=True)
class Written:
    """What one ``write_converted`` call wrote: counts that reconcile, and the first rows rejected per code."""

    read: int  # input records read
    written: int
    rejected: int
    duplicates: int
    by_code: Mapping[str, int]
    first_rows: Mapping[str, list[int]]
    first_message: Mapping[str, str]
    notes: Notes = field(default_factory=Notes)  # the converter's notes on the rows of this call


def write_converted(
    converter: Converter,
    batches: Iterable[Batch],
    out: IO[str],
    rejects: IO[str],
    *,
    dedup: bool | str = False,
    background: bool = False,
    progress: Callable[[int], None] | None = None,
    limit: TokenLimit | None = None,
) -> Written:
    """Convert ``batches`` and write output and rejects lines: the one write loop of normalize and engine_ray.

    ``dedup``: False, True or ``"exact"`` (drop exact duplicate lines, counted as duplicates), or ``"near"``
    (exact as well, then near duplicates go to rejects as ``near_duplicate``, see ``dataprep.neardup``).
    ``background``: block bytes are written by a thread (see ``_Writer``); ``progress(records_read)`` is called
    as batches are read. The converter's notes start afresh, so they are this call's (a Ray worker converts
    several blocks with one converter).
    """
    converter.notes = Notes()
    counter = [0]
    shown = 0
    w = _Writer(out, rejects, dedup, background=background, limit=limit)
    try:
        for item in _lines(converter, batches, counter):
            if progress is not None and counter[0] != shown:
                shown = counter[0]
                progress(shown)
            if isinstance(item, _Block):
                w.block(item)
            elif isinstance(item, Reject):
                w.reject(item)
            else:
                w.line(*item)
    finally:
        w.finish()
    return Written(
        read=counter[0],
        written=w.written,
        rejected=w.rejected,
        duplicates=w.duplicates,
        by_code=w.by_code,
        first_rows=w.first_rows,
        first_message=w.first_message,
        notes=converter.notes,
    )


def check_take(take: str | None) -> None:
    """Refuse an unsupported ``--take`` before any reading (normalize, engine_ray and preflight do)."""
    if take not in (None, "chosen"):
        raise UsageError(f"--take {take!r}: only 'chosen' is supported")


DEDUP_MODES = ("exact", "near")


def check_dedup(dedup: bool | str | None) -> bool | str:
    """``dedup`` as False, ``"exact"`` or ``"near"`` (True is ``"exact"``, the meaning of a bare ``--dedup``)."""
    if dedup is None or dedup is False:
        return False
    if dedup is True:
        return "exact"
    if dedup not in DEDUP_MODES:
        raise UsageError(f"--dedup {dedup!r}", hint="--dedup exact (the default) or --dedup near")
    return dedup


def convert_options(
    *,
    role_map: Mapping[str, str] | None = None,
    system: str | None = None,
    take: str | None = None,
    text_only: bool = False,
    all_paths: bool = False,
) -> ConvertOptions:
    """The converters' options from the command-line flags, built one way for every engine and preflight."""
    return ConvertOptions(
        role_map=dict(role_map or {}), system=system, take=take, text_only=text_only, all_paths=all_paths
    )


def check_outputs(inp: str | Path, out: str | Path, rejects_path: Path, *, force: bool, hint: str) -> None:
    """Refuse an output or rejects path that would overwrite the input, exists (without force), or is the same
    path twice: the checks the local and Ray engines share."""
    check_output_path(out, [inp], force=force)
    check_output_path(rejects_path, [inp], force=force)
    if Path(out).resolve() == rejects_path.resolve():
        raise UsageError("--rejects is the output path", hint=hint)


# -- public API -----------------------------------------------------------------------------------------


def normalize(
    inp: str | Path,
    out: str | Path,
    *,
    fmt: str | None = None,
    mapping: Mapping[str, str] | None = None,
    role_map: Mapping[str, str] | None = None,
    system: str | None = None,
    take: str | None = None,
    text_only: bool = False,
    dedup: bool | str = False,
    all_paths: bool = False,
    rejects: str | Path | None = None,
    force: bool = False,
    encoding: str | None = None,
    batch_rows: int = 8192,
    progress: Callable[[int, int | None], None] | None = None,
    max_tokens: int | None = None,
    model: str | None = None,
    chat_template: str | None = None,
    allow_download: bool = False,
) -> NormalizeResult:
    """Convert ``inp`` to messages JSONL at ``out`` (atomically), rejects to ``rejects``; return the counts.

    ``progress(records_read, total_or_None)`` is called as batches are read (the CLI's progress bar).
    ``max_tokens`` (with ``model``, whose chat template and tokenizer count): longer rows go to rejects as
    ``too_long``. ``dedup``: False, True/``"exact"`` or ``"near"`` (see ``write_converted``).
    """
    dedup = check_dedup(dedup)
    limit = None
    if max_tokens is not None:
        if not model:
            raise UsageError(
                "--max-tokens counts tokens: it needs --model", hint="e.g. --model ./Llama-3.2-1B"
            )
        from .tokenizer import load_tokenizer

        loaded = load_tokenizer(model, chat_template=chat_template, allow_download=allow_download)
        if loaded.template is None:
            raise UsageError(
                f"--max-tokens: {model} has no chat template to count through", hint="pass --chat-template"
            )
        limit = TokenLimit(loaded, max_tokens)
    if "-" in (str(out), str(rejects)):  # not stdout: a file literally named "-" would be written
        raise UsageError(
            "OUT and --rejects are files, not '-' (stdout): the output is written atomically",
            hint="give a path, e.g. dataprep normalize in.csv train.jsonl",
        )
    rejects_path = Path(rejects) if rejects is not None else default_rejects_path(out)
    check_outputs(inp, out, rejects_path, force=force, hint="write rejects to another file")
    check_take(take)
    options = convert_options(
        role_map=role_map, system=system, take=take, text_only=text_only, all_paths=all_paths
    )
    plan = prepare(inp, fmt=fmt, mapping=mapping, options=options, encoding=encoding, batch_rows=batch_rows)
    total = getattr(plan.source, "num_rows", None) if progress is not None else None  # may count rows
    on_read = None if progress is None else (lambda n: progress(n, total))
    with atomic_write(out) as fo, atomic_write(rejects_path) as fr:
        w = write_converted(
            plan.converter, plan.batches, fo, fr, dedup=dedup, background=True, progress=on_read, limit=limit
        )
    whole = plan.converter.whole_input
    return NormalizeResult(
        input=str(inp),
        output=str(out),
        rejects_path=str(rejects_path),
        detection=plan.detection,
        read=w.written + w.rejected + w.duplicates if whole else w.read,
        written=w.written,
        rejected=w.rejected,
        duplicates=w.duplicates,
        records_read=w.read,
        unit="conversation" if whole else "row",
        rejected_by_code=w.by_code,
        first_rows={k: tuple(v) for k, v in w.first_rows.items()},
        first_message=w.first_message,
        notes=w.notes,
    )


def iter_conversations(
    path: str | Path,
    *,
    fmt: str | None = None,
    mapping: Mapping[str, str] | None = None,
    role_map: Mapping[str, str] | None = None,
    system: str | None = None,
    take: str | None = None,
    text_only: bool = False,
    encoding: str | None = None,
    all_paths: bool = False,
    batch_rows: int = 8192,
    on_reject: Callable[[Reject], None] | None = None,
    notes: Notes | None = None,
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(source row number, valid conversation) for every row that converts and validates; each reject goes to
    ``on_reject`` (nothing is silent: stats counts them). ``notes``, when given, is filled with the converter's
    notes as rows are converted (complete once the stream is consumed; ``note_findings`` reports them).

    Detection and refusals (packed input, unknown schema, preference data...) raise before the first item.
    """
    options = convert_options(
        role_map=role_map, system=system, take=take, text_only=text_only, all_paths=all_paths
    )
    plan = prepare(path, fmt=fmt, mapping=mapping, options=options, encoding=encoding, batch_rows=batch_rows)
    if notes is not None:
        plan.converter.notes = notes
    return valid_only(iter_converted(plan.converter, plan.batches), on_reject)


def valid_only(
    items: Iterable[tuple[int, dict[str, Any]] | Reject], on_reject: Callable[[Reject], None] | None = None
) -> Iterator[tuple[int, dict[str, Any]]]:
    """The conversations of ``iter_converted``'s stream; rejects go to ``on_reject`` when given."""
    for item in items:
        if not isinstance(item, Reject):
            yield item
        elif on_reject is not None:
            on_reject(item)


def detect_path(path: str | Path, *, encoding: str | None = None) -> Detection:
    """The shape detected for a file (for ``inspect``); raises ``unknown_schema`` when unsure."""
    return prepare(path, encoding=encoding, batch_rows=1024, instantiate=False).detection


__all__ = [
    "DataprepError",
    "NOTE_MESSAGES",
    "NormalizeResult",
    "Notes",
    "Prepared",
    "Reject",
    "Written",
    "check_dedup",
    "check_outputs",
    "check_take",
    "convert_options",
    "default_rejects_path",
    "detect_path",
    "dumps_line",
    "iter_conversations",
    "iter_converted",
    "normalize",
    "note_findings",
    "prepare",
    "rename_batches",
    "valid_only",
    "write_converted",
]
