"""JSONL parsing: byte blocks parsed whole by pyarrow.json, with the exact per-line path behind them.

``iter_jsonl`` reads the (decompressed) stream in blocks of about ``BLOCK_BYTES`` cut after their last newline,
finds the line ends with NumPy (blank lines, row numbers, each record's bytes) and parses each block in one
``pyarrow.json`` call; the table is sliced into batches, and a batch that spans two blocks joins their slices.
Batches hold exactly ``batch_rows`` non-blank lines (the last one fewer): the cuts of reading line by line, so
which records share a batch never depends on the block size. A block that pyarrow cannot take (a bad line, a
type that changes between lines, text that is not UTF-8, a line that is not one object, one of the pyarrow bugs
below) goes batch by batch through ``parse_jsonl_chunk``: the per-line reference behaviour.

Row numbers are line numbers in the decompressed text, blank lines (ASCII whitespace only) skipped but counted.
``Batch.records()`` are the lines as written (``json.loads``), parsed only when asked for.

polars.read_ndjson parses faster but is not exact: it silently turns values of mixed types into strings
(1.0 -> "1", objects -> JSON text) and keeps the first of duplicate keys (json.loads keeps the last).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from ..safejson import loads as safe_loads
from .base import Batch, RowError

RAW_MAX = 2000  # RowError.raw is cut to this many characters
BLOCK_BYTES = 8 * 1024 * 1024  # read and parsed at a time (more while one line does not fit)
ENCODING_HINT = "pass $[encoding] latin-1 (or the file's real encoding, e.g. cp1252, utf-16)"
# the same advice in a rejects message, which is not a finding: the same words whoever reads it, Ray workers too
ENCODING_ADVICE = "read the file in its real encoding (e.g. latin-1, cp1252, utf-16)"

_LONG_INT = re.compile(rb"[0-9]{19}")
# A null element of an array: "null" after "[" or "," (object values follow ":").
_NULL_IN_ARRAY = re.compile(rb"[\[,][ \t\r]*null")

UTF8_BOM = b"\xef\xbb\xbf"


def is_utf8(encoding: str | None) -> bool:
    return encoding is None or encoding.lower().replace("_", "-") in ("utf-8", "utf8", "utf-8-sig")


def cut_raw(text: str, n: int = RAW_MAX) -> str:
    return text if len(text) <= n else text[:n] + "…"


# -- what pyarrow.json gets wrong ------------------------------------------------------------------------------
def _has_type(t, pred) -> bool:
    """Whether ``pred`` holds for ``t`` or any type nested in it."""
    import pyarrow as pa
    import pyarrow.types as pt

    if pred(t):
        return True
    if pt.is_struct(t):
        return any(_has_type(t.field(i).type, pred) for i in range(t.num_fields))
    if pt.is_list(t) or pt.is_large_list(t) or pt.is_fixed_size_list(t):
        return _has_type(t.value_type, pred)
    if isinstance(t, pa.MapType):
        return _has_type(t.key_type, pred) or _has_type(t.item_type, pred)
    return False


def _null_in_array(data: bytes, end: int | None = None) -> bool:
    """A ``null`` right after ``[`` or ``,`` (an array element; object values follow ``:``) in ``data[:end]``."""
    return _NULL_IN_ARRAY.search(data, 0, len(data) if end is None else end) is not None


def _misread(table, data: bytes, end: int) -> bool:
    """Whether pyarrow 26's JSON reader read ``data[:end]`` differently from json.loads: ISO-date-looking strings
    become timestamps (text must stay text); integers beyond int64 become doubles; null elements of arrays are
    mis-read ([null, []] -> [[], []])."""
    import pyarrow.types as pt

    types = [f.type for f in table.schema]
    if any(_has_type(t, pt.is_temporal) for t in types):
        return True
    if any(_has_type(t, pt.is_floating) for t in types) and _LONG_INT.search(data, 0, end):
        return True
    is_list = lambda t: pt.is_list(t) or pt.is_large_list(t)  # noqa: E731
    return any(_has_type(t, is_list) for t in types) and _null_in_array(data, end)


def _read_json(data, longest: int):
    """pyarrow.json over a buffer of whole lines; None when it refuses them."""
    import pyarrow as pa
    import pyarrow.json as pj

    # Blocks of ~1 MB parse in parallel; a block must hold the longest line whole.
    opts = pj.ReadOptions(use_threads=True, block_size=min(max(2 * longest + 2, 1 << 20), (1 << 31) - 1))
    try:
        return pj.read_json(pa.BufferReader(data), read_options=opts)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, pa.ArrowCapacityError):
        return None


def _object_line(raw: bytes) -> bool:
    text = raw.strip(b" \t\r\n")
    return text[:1] == b"{" and text[-1:] == b"}"


# -- the per-line reference --------------------------------------------------------------------------------------
def _fast_jsonl_table(lines: list[bytes]):
    """One Arrow table for UTF-8 JSON lines, or None when they do not parse as one schema (or pyarrow would
    get them wrong)."""
    if not all(_object_line(raw) for raw in lines):
        return None  # pyarrow would read an object over two lines, or two objects on one
    data = b"".join(lines)  # lines keep their "\n" (JSON treats a "\r" before it as whitespace)
    if not data.endswith(b"\n"):
        data += b"\n"
    try:
        data.decode("utf-8")  # pyarrow does not validate UTF-8 in JSON strings
    except UnicodeDecodeError:
        return None
    table = _read_json(data, max(map(len, lines)))
    if table is None or table.num_rows != len(lines) or _misread(table, data, len(data)):
        return None
    return table


@dataclass
class _JsonlBatch(Batch):
    """A JSONL batch read through Arrow whose ``records()`` are the lines exactly as written: an Arrow table gives
    keys a record lacks as null, and the records must not depend on which other lines shared its batch."""

    _raw: list[bytes] | None = None

    def records(self) -> list[dict[str, Any]]:
        if self._records is None and self._raw is not None:
            try:
                self._records = [safe_loads(raw) for raw in self._raw]
            except ValueError:  # a line pyarrow took and json.loads does not: the table's reading stands
                self._records = None
            self._raw = None
        return super().records()


def parse_jsonl_chunk(chunk: list[tuple[int, bytes]], encoding: str | None = None) -> Batch:
    """Parse (line number, raw line) pairs: one table when they agree, else records plus per-line RowErrors."""
    numbers = [n for n, _ in chunk]
    contiguous = numbers[-1] - numbers[0] + 1 == len(numbers)
    if is_utf8(encoding):
        table = _fast_jsonl_table([raw for _, raw in chunk])
        if table is not None:
            return _JsonlBatch(
                start=numbers[0],
                table=table,
                rows=None if contiguous else numbers,
                _raw=[raw for _, raw in chunk],
            )
    records: list[dict[str, Any]] = []
    rows: list[int] = []
    good: list[bytes] = []
    errors: list[RowError] = []
    for n, raw in chunk:
        try:
            text = raw.decode(encoding or "utf-8")
        except (UnicodeDecodeError, LookupError) as exc:
            shown = raw.decode("utf-8", errors="replace")
            errors.append(
                RowError(
                    n,
                    "invalid_json",
                    f"not valid {encoding or 'UTF-8'} text ({exc}); {ENCODING_ADVICE}",
                    cut_raw(shown),
                )
            )
            continue
        try:
            obj = safe_loads(text.rstrip("\r\n"))
        except json.JSONDecodeError as exc:
            errors.append(
                RowError(
                    n,
                    "invalid_json",
                    f"invalid JSON: {exc.msg} at column {exc.colno}",
                    cut_raw(text.rstrip("\r\n")),
                )
            )
            continue
        except ValueError as exc:  # e.g. integers too long to convert
            errors.append(RowError(n, "invalid_json", f"invalid JSON: {exc}", cut_raw(text.rstrip("\r\n"))))
            continue
        if not isinstance(obj, dict):
            errors.append(
                RowError(
                    n,
                    "invalid_json",
                    f"a JSON {type(obj).__name__}, not an object",
                    cut_raw(text.rstrip("\r\n")),
                )
            )
            continue
        records.append(obj)
        rows.append(n)
        good.append(text.encode("utf-8"))
    table = _fast_jsonl_table(good) if good and errors else None
    if table is not None:
        return Batch(start=numbers[0], table=table, _records=records, rows=rows, errors=errors)
    return Batch(start=numbers[0], _records=records, rows=rows, errors=errors)


# -- blocks ---------------------------------------------------------------------------------------------------------
_WS = b" \t\n\r\x0b\x0c"  # what bytes.strip() strips: a line of only these is blank
_IS_WS: Any = None  # a NumPy lookup table: byte -> is in _WS


class _Lines:
    """The whole lines of a block: line ``i`` is ``buf[starts[i]:ends[i]]`` (its newline included, except a last
    line without one) and is line number ``first + i`` of the input; ``keep`` indexes the non-blank lines (None
    when all are)."""

    __slots__ = ("buf", "ends", "first", "keep", "starts")

    def __init__(self, buf: bytearray, end: int, first: int):
        import numpy as np

        global _IS_WS
        if _IS_WS is None:
            _IS_WS = np.zeros(256, dtype=bool)
            _IS_WS[list(_WS)] = True
        view = np.frombuffer(buf, dtype=np.uint8, count=end)
        ends = np.flatnonzero(view == 10)
        ends += 1
        if end and buf[end - 1] != 10:  # the input's last line, without a newline
            ends = np.append(ends, end)
        starts = np.empty_like(ends)
        if len(ends):
            starts[0] = 0
            starts[1:] = ends[:-1]
        # A blank line starts with whitespace: only those few are looked at closely.
        maybe = np.flatnonzero(_IS_WS[view[starts]]).tolist() if len(ends) else []
        blank = [i for i in maybe if not buf[starts[i] : ends[i]].strip()]
        self.buf, self.starts, self.ends, self.first = buf, starts, ends, first
        self.keep = np.delete(np.arange(len(ends)), blank) if blank else None

    def __len__(self) -> int:
        return len(self.ends)

    @property
    def nonblank(self) -> int:
        return len(self.ends) if self.keep is None else len(self.keep)

    def numbers(self, lo: int, hi: int) -> list[int]:
        """The line numbers of the non-blank lines [lo, hi)."""
        if self.keep is None:
            return list(range(self.first + lo, self.first + hi))
        return (self.keep[lo:hi] + self.first).tolist()

    def spans(self, lo: int, hi: int) -> Iterator[tuple[int, int]]:
        """(start, end) in ``buf`` of the non-blank lines [lo, hi)."""
        if self.keep is None:
            return zip(self.starts[lo:hi].tolist(), self.ends[lo:hi].tolist(), strict=True)
        idx = self.keep[lo:hi]
        return zip(self.starts[idx].tolist(), self.ends[idx].tolist(), strict=True)


def _blocks(fh: BinaryIO, block_bytes: int) -> Iterator[_Lines]:
    """The stream's whole lines, a block of about ``block_bytes`` at a time (more while one line does not fit).

    Each block is a new buffer, never reused: batches parse their records from it later.
    """
    pending = b""  # the start of a line the last block cut
    first = 1
    bom = True
    while True:
        size = max(block_bytes, 2 * len(pending))
        buf = bytearray(len(pending) + size)
        buf[: len(pending)] = pending
        got = fh.readinto(memoryview(buf)[len(pending) :]) or 0
        final = got == 0
        del buf[len(pending) + got :]
        if bom and (len(buf) >= len(UTF8_BOM) or final):
            bom = False
            if buf.startswith(UTF8_BOM):
                del buf[: len(UTF8_BOM)]
        end = len(buf) if final else buf.rfind(b"\n") + 1
        if end:
            lines = _Lines(buf, end, first)
            first += len(lines)
            yield lines
        if final:
            return
        pending = bytes(buf[end:])


def _one_object_per_line(lines: _Lines) -> bool:
    """Whether every non-blank line starts with ``{`` and ends with ``}`` (JSON whitespace aside).

    pyarrow.json does not read line by line: an object may run over a newline and two objects may share a
    line. It refuses raw control characters in strings, so with this check (and as many rows as lines) each
    line is exactly one of its rows.
    """
    import numpy as np

    view = np.frombuffer(lines.buf, dtype=np.uint8, count=int(lines.ends[-1]))
    starts, ends = lines.starts, lines.ends
    if lines.keep is not None:
        starts, ends = starts[lines.keep], ends[lines.keep]
    last = ends - 1
    last -= view[last] == 10
    last -= view[last] == 13
    ok = (view[starts] == 123) & (view[last] == 125)
    if ok.all():
        return True
    for i in np.flatnonzero(~ok).tolist():  # whitespace around the object
        raw = bytes(lines.buf[starts[i] : ends[i]]).strip(b" \t\r\n")
        if not (raw.startswith(b"{") and raw.endswith(b"}")):
            return False
    return True


def _block_table(lines: _Lines, encoding: str | None):
    """The block parsed whole by pyarrow.json, one row per non-blank line; None when it must go line by line."""
    import numpy as np

    if not is_utf8(encoding) or not len(lines) or not lines.nonblank:
        return None
    buf, end = lines.buf, int(lines.ends[-1])
    data = memoryview(buf)[:end]
    if not buf.isascii():  # pyarrow does not validate UTF-8 in JSON strings
        try:
            str(data, "utf-8")
        except UnicodeDecodeError:
            return None
    if not _one_object_per_line(lines):
        return None
    table = _read_json(data, int(np.max(lines.ends - lines.starts)))
    if table is None or table.num_rows != lines.nonblank or _misread(table, buf, end):
        return None
    return table


@dataclass
class _Segment:
    """Non-blank lines [lo, hi) of a block, with the block's table sliced to them (None: line by line)."""

    lines: _Lines
    lo: int
    hi: int
    table: Any

    def chunk(self) -> list[tuple[int, bytes]]:
        buf = self.lines.buf
        spans = self.lines.spans(self.lo, self.hi)
        return [
            (n, bytes(buf[s:e]))
            for n, (s, e) in zip(self.lines.numbers(self.lo, self.hi), spans, strict=True)
        ]


@dataclass
class _BlockBatch(Batch):
    """A batch cut from block tables; ``records()`` parses its lines, as written, from the blocks' bytes."""

    _segments: list[_Segment] | None = None

    def records(self) -> list[dict[str, Any]]:
        if self._records is None and self._segments is not None:
            segments, self._segments = self._segments, None
            # Each line is one object (see _one_object_per_line): one json.loads of them as an array is
            # json.loads of each line, at a third of the cost.
            parts = [seg.lines.buf[s:e] for seg in segments for s, e in seg.lines.spans(seg.lo, seg.hi)]
            try:
                records = safe_loads(b"[" + b",".join(parts) + b"]")
            except ValueError:  # a line pyarrow took and json.loads does not: the table's reading stands
                records = None
            self._records = records if records is not None and len(records) == len(parts) else None
        return super().records()


def _prune(batch: _BlockBatch) -> None:
    """Drop the columns of keys that no line of the batch has (other lines of its block brought them), so the
    table's columns are the batch's own keys, as when its lines are parsed alone."""
    t = batch.table
    empty = [name for name, col in zip(t.column_names, t.columns, strict=True) if col.null_count == len(t)]
    if not empty:
        return
    recs = batch.records()
    if batch._records is None:
        return
    present: set[str] = set()
    for r in recs:
        present.update(r)
    gone = [n for n in empty if n not in present]
    if gone:
        batch.table = t.drop_columns(gone)


def _batch(segments: list[_Segment], encoding: str | None) -> Batch:
    """One batch of consecutive segments: the tables' rows when every block parsed, else line by line."""
    import pyarrow as pa

    table = None
    if all(seg.table is not None for seg in segments):
        if len(segments) == 1:
            table = segments[0].table
        else:
            try:
                table = pa.concat_tables([seg.table for seg in segments], promote_options="default")
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
                table = None
    if table is not None and table.num_rows != sum(seg.hi - seg.lo for seg in segments):
        table = None  # tables without columns ({} records) lose their row count when joined
    if table is None:  # the reference behaviour
        return parse_jsonl_chunk([pair for seg in segments for pair in seg.chunk()], encoding)
    spans = [(seg.lines.first + seg.lo, seg.lines.first + seg.hi) for seg in segments]
    if all(seg.lines.keep is None for seg in segments) and all(
        a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False)
    ):  # no blank line: consecutive line numbers, no list of them
        start, rows = spans[0][0], None
    else:
        numbers = [n for seg in segments for n in seg.lines.numbers(seg.lo, seg.hi)]
        contiguous = numbers[-1] - numbers[0] + 1 == len(numbers)
        start, rows = numbers[0], None if contiguous else numbers
    batch = _BlockBatch(start=start, table=table, rows=rows, _segments=segments)
    if any(col.null_count for col in table.columns):
        _prune(batch)
    return batch


def _parsed_blocks(fh: BinaryIO, block_bytes: int, encoding: str | None) -> Iterator[tuple[_Lines, Any]]:
    """(lines, table or None) per block, the next block read, scanned and parsed in a worker thread while the
    caller converts and writes this one (file reads, NumPy and pyarrow release the GIL): about 7% off
    ``normalize`` on 2 idle cores, nothing lost on a busy machine. A worker's error surfaces where the stream
    reaches its block; at most two blocks are held."""
    from concurrent.futures import ThreadPoolExecutor

    blocks = _blocks(fh, block_bytes)

    def step() -> tuple[_Lines, Any] | None:
        lines = next(blocks, None)
        return None if lines is None else (lines, _block_table(lines, encoding))

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="dataprep-jsonl") as pool:
        future = pool.submit(step)
        while (item := future.result()) is not None:
            future = pool.submit(step)
            yield item


def iter_jsonl(
    fh: BinaryIO, batch_rows: int, encoding: str | None = None, *, block_bytes: int | None = None
) -> Iterator[Batch]:
    """Batches of ``batch_rows`` non-blank lines (the last one fewer) of a binary JSONL stream.

    A batch that spans two blocks joins their tables (or, when they do not join, goes line by line).
    """
    open_: list[_Segment] = []
    have = 0
    for lines, table in _parsed_blocks(fh, block_bytes or BLOCK_BYTES, encoding):
        n, k = lines.nonblank, 0
        while k < n:
            take = min(batch_rows - have, n - k)
            part = None if table is None else table.slice(k, take)
            open_.append(_Segment(lines, k, k + take, part))
            have += take
            k += take
            if have == batch_rows:
                yield _batch(open_, encoding)
                open_, have = [], 0
    if open_:
        yield _batch(open_, encoding)


def count_jsonl(fh: BinaryIO, *, block_bytes: int | None = None) -> int:
    """The non-blank lines of a binary JSONL stream (each is a record or a RowError when read)."""
    return sum(lines.nonblank for lines in _blocks(fh, block_bytes or BLOCK_BYTES))
