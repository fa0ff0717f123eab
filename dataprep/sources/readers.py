"""Streaming readers: every input format becomes an iterator of ``Batch`` with bounded memory.

Row numbers are 1-based and mean, per format:

- JSONL / NDJSON / stdin: the line number in the (decompressed) file; blank lines are skipped but counted.
- CSV / TSV: the data row, 1 = the first record after the header (equal to file line - 1 when no value spans lines).
- JSON array (or the list inside ``{"key": [...]}``): the element's position in the list.
- Parquet / Arrow / datasets folders: the row's position across the files in sorted (or ``state.json``) order.

A row that cannot be parsed (JSONL) comes back in ``Batch.errors`` as ``RowError(code="invalid_json")``; an input
that cannot be read as a whole (a truncated archive, a ragged CSV, the wrong encoding) raises ``UnreadableInput``.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import glob as globlib
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from functools import cached_property
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import UnreadableInput
from ..safejson import loads as safe_loads
from .base import Batch, RowError
from .jsonl import ENCODING_HINT as _ENCODING_HINT
from .jsonl import RAW_MAX as RAW_MAX  # re-exported, as is parse_jsonl_chunk (engine_ray's JSONL ranges)
from .jsonl import count_jsonl, iter_jsonl
from .jsonl import cut_raw as _cut
from .jsonl import is_utf8 as _is_utf8
from .jsonl import parse_jsonl_chunk as parse_jsonl_chunk
from .sniff import (
    HEAD_BYTES,
    UTF8_BOM,
    Sniffed,
    encoding_problem,
    format_from_name,
    open_decompressed,
    read_head,
    sniff_file,
)

EXACT_COUNT_MAX_BYTES = 64 * 1024 * 1024  # text files up to this size are counted exactly by streaming
JSON_WHOLE_MAX_BYTES = 1024 * 1024 * 1024  # a JSON array is parsed whole (the stdlib has no streaming parser)
_PEEK_ROWS = 256
# Sidecars that sit beside data files and are not data (Megatron-Bridge pack metadata, datasets' own json files).
_IGNORED_IN_DIRS = re.compile(
    r"(^[._])|(^\d+_metadata\.jsonl$)|(^(dataset_info|state|dataset_dict)\.json$)|"
    r"\.(md|txt|py|lock|crc|yaml|yml|gitattributes)$|^(README|LICENSE)",
    re.I,
)


class Source:
    """An opened input: what it is (format, compression, columns, rows) and ``batches()`` to stream it.

    ``format`` is one of csv|tsv|json|jsonl|parquet|arrow|hf_disk|hf_hub|stdin|npy. For hf_hub the data files'
    own format is in ``data_format``; ``files`` lists the files read, in order. Opening reads only a file head:
    ``schema``/``columns`` read a small first batch on demand and ``num_rows`` counts on demand.
    """

    def __init__(
        self,
        path: str,
        format: str,
        *,
        files: list[Path],
        compression: str = "none",
        encoding: str | None = None,
        batch_rows: int = 8192,
    ):
        self.path = path
        self.format = format
        self.data_format = format
        self.files = files
        self.compression = compression
        self.encoding = encoding
        self.batch_rows = max(1, int(batch_rows))
        self.detail: dict[str, Any] = {}

    # -- what it is ---------------------------------------------------------------------------------------
    @cached_property
    def _peek(self) -> Batch | None:
        """The first batch of a few rows (for columns and types); None when the input has no rows."""
        for b in self._guarded(self._iter(_PEEK_ROWS)):
            if len(b) or b.errors:
                return b
        return None

    @property
    def schema(self):  # pyarrow.Schema | None
        peek = self._peek
        return peek.table.schema if peek is not None and peek.table is not None else None

    @property
    def columns(self) -> list[str]:
        schema = self.schema
        if schema is not None:
            return list(schema.names)
        seen: dict[str, None] = {}
        for rec in self._peek.records() if self._peek is not None else []:
            seen.update(dict.fromkeys(rec))
        return list(seen)

    def head(self, n: int = _PEEK_ROWS) -> list[dict[str, Any]]:
        """The first ``n`` records, the same whatever ``batch_rows`` is (detect record shapes on this)."""
        if n <= _PEEK_ROWS:
            return self._peek.records()[:n] if self._peek is not None else []
        out: list[dict[str, Any]] = []
        for b in self._guarded(self._iter(n)):
            out.extend(b.records()[: n - len(out)])
            if len(out) >= n:
                break
        return out

    @cached_property
    def _count(self) -> tuple[int | None, bool]:
        return self._count_rows()

    @property
    def num_rows(self) -> int | None:
        return self._count[0]

    @property
    def num_rows_exact(self) -> bool:
        return self._count[1]

    def _count_rows(self) -> tuple[int | None, bool]:
        total = sum(len(b) for b in self._guarded(self._iter(self.batch_rows)))
        return total, True

    def to_dict(self) -> dict[str, Any]:
        d = {
            "path": self.path,
            "format": self.format,
            "compression": self.compression,
            "files": [str(f) for f in self.files][:20],
            "num_files": len(self.files),
        }
        if self.data_format != self.format:
            d["data_format"] = self.data_format
        d.update(self.detail)
        return d

    # -- reading ------------------------------------------------------------------------------------------
    def batches(self) -> Iterator[Batch]:
        """Consecutive batches of at most ``batch_rows`` records (plus the rows that failed to parse)."""
        return self._guarded(self._iter(self.batch_rows))

    def _iter(self, batch_rows: int) -> Iterator[Batch]:
        raise NotImplementedError

    def _guarded(self, it: Iterator[Batch]) -> Iterator[Batch]:
        """Turn the errors a broken file raises mid-stream into UnreadableInput naming it.

        The UnreadableInput is raised outside the ``except`` clause: chained to the original error, it would keep
        that error's traceback, and with it pyarrow's reader and its Python transcoder callback, alive until the
        interpreter shuts down.
        """
        try:
            yield from it
            return
        except UnreadableInput:
            raise
        except Exception as exc:  # noqa: BLE001 - every known kind is translated below, the rest re-raised
            err = self._unreadable(exc)
            if err is None:
                raise
        raise err

    def _unreadable(self, exc: BaseException) -> UnreadableInput | None:
        """The UnreadableInput for an error raised while reading, or None when it is not the input's fault."""
        if isinstance(exc, UnicodeError):  # UnicodeDecodeError, and the UTF-16/32 decoders' BOM errors
            reason = exc.reason if isinstance(exc, UnicodeDecodeError) else str(exc)
            return UnreadableInput(
                self.path, f"not valid {self.encoding or 'UTF-8'} text ({reason})", hint=_ENCODING_HINT
            )
        if isinstance(exc, (EOFError, OSError)):
            what = f"{self.compression} data" if self.compression != "none" else "file"
            return UnreadableInput(
                self.path, f"corrupt or truncated {what} ({exc})", hint="re-create or re-download the file"
            )
        import pyarrow as pa

        if isinstance(exc, pa.ArrowException) or type(exc).__module__.startswith("zstandard"):
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            hint = _ENCODING_HINT if "utf8" in msg.lower() or "utf-8" in msg.lower() else None
            line = None
            if hint:
                where = re.search(r"Row #(\d+)", msg)  # pyarrow counts the header as row 1
                line = int(where.group(1)) if where else None
                msg = "not valid UTF-8 text"
            return UnreadableInput(self.path, msg, hint=hint, line=line)
        return None

    _rows_fail_alone = False  # JSONL: a line that does not decode is that row's RowError, not the file's

    def _check_encoding(self) -> None:
        """Refuse a text file whose head is not text in the ``--encoding`` given (see ``encoding_problem``)."""
        if _is_utf8(self.encoding) or getattr(self, "_encoding_checked", False):
            return
        for f in self.files:
            head = read_head(f, self.compression)
            problem = encoding_problem(head, self.encoding, complete=len(head) < HEAD_BYTES)
            if problem is not None and (problem.whole_file or not self._rows_fail_alone):
                raise UnreadableInput(f, problem.message, hint=problem.hint, line=problem.line)
        self._encoding_checked = True


# -- JSONL ----------------------------------------------------------------------------------------------------
def _records_table(records: list[dict[str, Any]]):
    """Arrow table for records whose keys/types agree (union of keys), else None."""
    import pyarrow as pa

    if not records:
        return None
    try:
        arr = pa.array(records)
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        return None
    if not pa.types.is_struct(arr.type) or arr.type.num_fields == 0:
        return None
    return pa.Table.from_struct_array(arr)


class JsonlSource(Source):
    """JSONL / NDJSON: read in byte blocks parsed whole by pyarrow.json (see ``jsonl.py``)."""

    _rows_fail_alone = True

    def _open(self) -> BinaryIO:
        return open_decompressed(self.files[0], self.compression)

    def _iter(self, batch_rows: int) -> Iterator[Batch]:
        self._check_encoding()
        with self._open() as fh:
            yield from iter_jsonl(fh, batch_rows, self.encoding)

    def _count_rows(self) -> tuple[int | None, bool]:
        """Non-blank lines (each is a record or a RowError): exact for small files, else estimated."""
        size = self.files[0].stat().st_size
        limit = EXACT_COUNT_MAX_BYTES if self.compression == "none" else EXACT_COUNT_MAX_BYTES // 8
        try:
            with self._open() as fh:
                if size <= limit:
                    return count_jsonl(fh), True
                head = fh.read(1 << 20)
        except (EOFError, OSError) as exc:
            raise UnreadableInput(
                self.path, f"corrupt or truncated {self.compression} data ({exc})"
            ) from None
        if self.compression != "none":
            return None, False
        lines = [line for line in head.splitlines()[:-1] if line.strip()]
        if not lines:
            return None, False
        return int(size / (sum(len(x) + 1 for x in lines) / len(lines))), False


# -- CSV / TSV ------------------------------------------------------------------------------------------------
class CsvSource(Source):
    @property
    def delimiter(self) -> str:
        return "\t" if self.format == "tsv" or self.data_format == "tsv" else ","

    def _reader(self, fh: BinaryIO, column_types: dict | None, bad: list):
        import pyarrow.csv as pc

        def on_invalid(row) -> str:
            bad.append(row)
            return "error"

        read = pc.ReadOptions(
            use_threads=False,
            block_size=1 << 20,
            encoding="utf8" if _is_utf8(self.encoding) else self.encoding,
        )
        parse = pc.ParseOptions(
            delimiter=self.delimiter, newlines_in_values=True, invalid_row_handler=on_invalid
        )
        # Every column is text: type inference per block breaks mid-file on a stray value, and SFT data is text.
        convert = pc.ConvertOptions(
            column_types=column_types or {}, strings_can_be_null=False, quoted_strings_can_be_null=False
        )
        return pc.open_csv(fh, read_options=read, parse_options=parse, convert_options=convert)

    def _ragged(self, bad: list) -> UnreadableInput:
        row = bad[0]
        line = row.number
        return UnreadableInput(
            self.path,
            f"ragged {self.format.upper()}: data row {line - 1 if line else '?'} has {row.actual_columns} fields, "
            f"the header has {row.expected_columns}",
            hint="quote values that contain the delimiter, or fix the row"
            + ("" if self.format == "tsv" else "; a tab-separated file is read with a .tsv name"),
            line=line,
        )

    def _iter(self, batch_rows: int) -> Iterator[Batch]:
        import pyarrow as pa

        self._check_encoding()
        bad: list = []
        try:
            with self._open() as fh:
                names = self._reader(fh, None, bad).schema.names
            with self._open() as fh:
                reader = self._reader(fh, {n: pa.string() for n in names}, bad)
                start = 1
                for table in _rebatch(reader, batch_rows):
                    yield Batch(start=start, table=table)
                    start += table.num_rows
        except pa.ArrowInvalid as exc:
            if bad:
                raise self._ragged(bad) from None
            if "empty" in str(exc).lower():
                raise UnreadableInput(self.path, "empty file: no header row") from None
            raise

    def _open(self) -> BinaryIO:
        return open_decompressed(self.files[0], self.compression)

    def _count_rows(self) -> tuple[int | None, bool]:
        size = self.files[0].stat().st_size
        limit = EXACT_COUNT_MAX_BYTES if self.compression == "none" else EXACT_COUNT_MAX_BYTES // 8
        if size <= limit:
            return super()._count_rows()
        if self.compression != "none":
            return None, False
        with self._open() as fh:
            head = fh.read(1 << 20)
        lines = head.splitlines()[1:-1]
        if not lines:
            return None, False
        return int(size / (sum(len(x) + 1 for x in lines) / len(lines))), False


def _rebatch(batches: Iterable, batch_rows: int) -> Iterator:
    """Re-cut a stream of Arrow record batches into tables of at most ``batch_rows`` rows."""
    import pyarrow as pa

    pending: list = []
    n = 0
    for rb in batches:
        if rb.num_rows == 0:
            continue
        pending.append(rb)
        n += rb.num_rows
        while n >= batch_rows:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, batch_rows).combine_chunks()
            rest = table.slice(batch_rows)
            pending = rest.to_batches()
            n = rest.num_rows
    if n:
        yield pa.Table.from_batches(pending).combine_chunks()


# -- JSON array / object holding one list ---------------------------------------------------------------------
class JsonSource(Source):
    def _load(self) -> list[Any]:
        path = self.files[0]
        if path.stat().st_size > JSON_WHOLE_MAX_BYTES:
            raise UnreadableInput(
                self.path,
                f"a JSON document over {JSON_WHOLE_MAX_BYTES >> 20} MB is too large to parse whole",
                hint="convert it to JSONL first: jq -c '.[]' IN > OUT.jsonl",
            )
        self._check_encoding()
        # The stdlib parses a document whole; below the limit above that is the simple, bounded choice.
        with open_decompressed(path, self.compression) as fh:
            data = fh.read()
        try:
            text = data.removeprefix(UTF8_BOM).decode(self.encoding or "utf-8")
        except UnicodeError as exc:
            reason = exc.reason if isinstance(exc, UnicodeDecodeError) else str(exc)
            raise UnreadableInput(
                self.path, f"not valid {self.encoding or 'UTF-8'} text ({reason})", hint=_ENCODING_HINT
            ) from None
        try:
            doc = safe_loads(text)
        except json.JSONDecodeError as exc:
            raise UnreadableInput(
                self.path,
                f"invalid JSON: {exc.msg} (column {exc.colno})",
                line=exc.lineno,
                hint="fix the document; a file of one object per line is read as JSONL",
            ) from None
        if isinstance(doc, list):
            return doc
        if isinstance(doc, dict):
            lists = [
                k for k, v in doc.items() if isinstance(v, list) and v and all(isinstance(x, dict) for x in v)
            ]
            if len(lists) == 1:
                self.detail["records_key"] = lists[0]
                return doc[lists[0]]
            if len(lists) > 1:
                raise UnreadableInput(
                    self.path,
                    f"a JSON object holding several lists of records ({', '.join(lists)})",
                    hint="extract one list: jq -c '.KEY[]' IN > OUT.jsonl",
                )
            return [doc]  # a lone object: one record
        raise UnreadableInput(
            self.path,
            f"a JSON {type(doc).__name__}, not records",
            hint="give an array of objects, or one object per line (JSONL)",
        )

    def _iter(self, batch_rows: int) -> Iterator[Batch]:
        items = self._load()
        for start in range(0, len(items), batch_rows):
            part = items[start : start + batch_rows]
            records, rows, errors = [], [], []
            for i, obj in enumerate(part, start=start + 1):
                if isinstance(obj, dict):
                    records.append(obj)
                    rows.append(i)
                else:
                    errors.append(
                        RowError(
                            i,
                            "invalid_json",
                            f"element {i} is a JSON {type(obj).__name__}, not an object",
                            _cut(json.dumps(obj, ensure_ascii=False)),
                        )
                    )
            table = _records_table(records)
            contiguous = not errors
            if table is not None:
                yield Batch(
                    start=start + 1,
                    table=table,
                    _records=records,
                    rows=None if contiguous else rows,
                    errors=errors,
                )
            else:
                yield Batch(start=start + 1, _records=records, rows=rows, errors=errors)


# -- several files of one dataset: one schema -------------------------------------------------------------------
TEXT_SHARDS_FOR_COLUMNS = 16  # text shards whose heads make a chain's columns (each costs a block read)


def unify_shard_schemas(path: str | Path, schemas: list[tuple[Path, Any]], *, same_columns: bool = False):
    """The union of the shards' schemas (columns in order of first appearance; types promoted as pyarrow's
    ``permissive`` option does: int32 + int64 -> int64, null + string -> string). Shards whose types for one column
    cannot be reconciled (int vs string, say) are UnreadableInput naming both files and the column.

    ``same_columns`` (Parquet and Arrow shards, which carry their schema whole): a shard with a column another
    lacks is refused too, naming both files and the column; their order may differ.
    """
    import pyarrow as pa

    schemas = [(f, s) for f, s in schemas if s is not None]
    if not schemas:
        return None
    if same_columns:
        first, names = schemas[0][0], set(schemas[0][1].names)
        for f, schema in schemas[1:]:
            other = set(schema.names)
            if other != names:
                extra = sorted(other - names)
                what = f"has column {extra[0]!r}" if extra else f"lacks column {sorted(names - other)[0]!r}"
                raise UnreadableInput(
                    f,
                    f"its columns differ from the first shard's ({first}): it {what}",
                    hint="shards of one dataset share one schema: point at one file or fix the shards",
                )
    try:
        return pa.unify_schemas([s for _, s in schemas], promote_options="permissive")
    except (pa.ArrowTypeError, pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    seen: dict[str, tuple[Path, Any]] = {}  # column -> (first file, its type so far)
    for f, schema in schemas:
        for field in schema:
            if field.name not in seen:
                seen[field.name] = (f, field.type)
                continue
            first, t = seen[field.name]
            try:
                merged = pa.unify_schemas(
                    [pa.schema([pa.field(field.name, t)]), pa.schema([field])], promote_options="permissive"
                )
            except (pa.ArrowTypeError, pa.ArrowInvalid, pa.ArrowNotImplementedError):
                raise UnreadableInput(
                    path,
                    f"its shards disagree on column {field.name!r}: {t} in {first}, {field.type} in {f}",
                    hint="shards of one dataset share one schema: fix the shards, or point at one file",
                ) from None
            seen[field.name] = (first, merged.field(0).type)
    raise UnreadableInput(path, "its shards' schemas do not unify", hint="point at one file")


# -- Parquet --------------------------------------------------------------------------------------------------
class ParquetSource(Source):
    def _file(self, path: Path):
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            return pq.ParquetFile(path)
        except (pa.ArrowException, OSError) as exc:
            raise UnreadableInput(
                path,
                f"not a readable Parquet file ({str(exc).splitlines()[0]})",
                hint="re-create or re-download the file",
            ) from None

    @cached_property
    def schema(self):
        """The shards' one schema (types promoted, column order of the first); shards that disagree are refused."""
        if len(self.files) == 1:
            return self._file(self.files[0]).schema_arrow
        schemas = [(f, self._file(f).schema_arrow) for f in self.files]
        return unify_shard_schemas(self.path, schemas, same_columns=True)

    def _count_rows(self) -> tuple[int | None, bool]:
        return sum(self._file(f).metadata.num_rows for f in self.files), True

    def _iter(self, batch_rows: int) -> Iterator[Batch]:
        import pyarrow as pa

        _ = self.schema  # shards whose columns cannot be reconciled are refused before any row is read
        start = 1
        for path in self.files:
            pf = self._file(path)
            for rb in pf.iter_batches(batch_size=batch_rows):
                if rb.num_rows:
                    yield Batch(start=start, table=pa.Table.from_batches([rb]))
                    start += rb.num_rows


# -- Arrow IPC (file or stream), Feather v2, datasets save_to_disk / cache ---------------------------------------
def _ipc_batches(path: Path) -> Iterator:
    import pyarrow as pa

    source = pa.memory_map(str(path))
    with open(path, "rb") as fh:
        is_file = fh.read(6) == b"ARROW1"
    if is_file:
        reader = pa.ipc.open_file(source)
        for i in range(reader.num_record_batches):
            yield reader.get_batch(i)
    else:
        yield from pa.ipc.open_stream(source)


def _ipc_schema(path: Path):
    import pyarrow as pa

    with open(path, "rb") as fh:
        is_file = fh.read(6) == b"ARROW1"
    source = pa.memory_map(str(path))
    return pa.ipc.open_file(source).schema if is_file else pa.ipc.open_stream(source).schema


class ArrowSource(Source):
    @cached_property
    def schema(self):
        """The files' one schema (types promoted, column order of the first); files that disagree are refused."""
        schemas = [(f, self._safe(lambda f=f: _ipc_schema(f), f)) for f in self.files]
        return (
            schemas[0][1] if len(schemas) == 1 else unify_shard_schemas(self.path, schemas, same_columns=True)
        )

    def _safe(self, fn: Callable, path: Path):
        import pyarrow as pa

        try:
            return fn()
        except (pa.ArrowException, OSError) as exc:
            raise UnreadableInput(
                path,
                f"not a readable Arrow IPC/Feather file ({str(exc).splitlines()[0]})",
                hint="Feather v1 is not read: re-save it as Feather v2 / Arrow IPC",
            ) from None

    def _count_rows(self) -> tuple[int | None, bool]:
        # Memory-mapped: counting reads batch headers, not the data.
        return sum(
            self._safe(lambda f=f: sum(b.num_rows for b in _ipc_batches(f)), f) for f in self.files
        ), True

    def _iter(self, batch_rows: int) -> Iterator[Batch]:
        _ = self.schema  # every file readable, and their columns reconcilable, before any row is read
        start = 1
        for path in self.files:
            for table in _rebatch(_ipc_batches(path), batch_rows):
                yield Batch(start=start, table=table)
                start += table.num_rows


# -- several text files of one format (JSONL shards in a dataset repository, say) ---------------------------------
class ChainSource(Source):
    """Text files of one format read one after another. Row numbers continue across files: a file's rows are
    numbered after the previous file's last row (or line, for JSONL)."""

    def __init__(self, path: str, parts: list[Source]):
        first = parts[0]
        comps = {p.compression for p in parts}
        super().__init__(
            path,
            first.format,
            files=[f for p in parts for f in p.files],
            compression=comps.pop() if len(comps) == 1 else "mixed",
            encoding=first.encoding,
            batch_rows=first.batch_rows,
        )
        self.parts = parts

    @cached_property
    def schema(self):
        """The union of the first ``TEXT_SHARDS_FOR_COLUMNS`` files' head schemas; None when their types
        disagree (text rows are records: a column's type may change from file to file, as from line to line)."""
        try:
            return unify_shard_schemas(
                self.path, [(p.files[0], p.schema) for p in self.parts[:TEXT_SHARDS_FOR_COLUMNS]]
            )
        except UnreadableInput:
            return None

    @property
    def columns(self) -> list[str]:
        schema = self.schema
        if schema is not None:
            return list(schema.names)
        seen: dict[str, None] = {}
        for p in self.parts[:TEXT_SHARDS_FOR_COLUMNS]:
            seen.update(dict.fromkeys(p.columns))
        return list(seen)

    def _count_rows(self) -> tuple[int | None, bool]:
        counts = [p._count for p in self.parts]
        if any(n is None for n, _ in counts):
            return None, False
        return sum(n for n, _ in counts), all(exact for _, exact in counts)

    def _iter(self, batch_rows: int) -> Iterator[Batch]:
        offset = 0
        for part in self.parts:
            last = 0
            for b in part._guarded(part._iter(batch_rows)):
                numbers = b.row_numbers()
                last = max([last, *numbers[-1:], *(e.row for e in b.errors)])
                if offset:  # replace() keeps the batch's class: JSONL records stay the lines as written
                    b = dataclasses.replace(
                        b,
                        start=b.start + offset,
                        rows=None if b.rows is None else [r + offset for r in b.rows],
                        errors=[RowError(e.row + offset, e.code, e.message, e.raw) for e in b.errors],
                    )
                yield b
            offset += last


# -- NumPy .npy (only ever a header: the data may be a pickle) -----------------------------------------------------
class NpySource(Source):
    """A ``.npy`` file: its header (shape, dtype) only; packed detection looks at it, reading never happens."""

    @cached_property
    def header(self) -> dict[str, Any]:
        return read_npy_header(self.files[0])

    @property
    def schema(self):
        return None

    @property
    def columns(self) -> list[str]:
        return []

    def _count_rows(self) -> tuple[int | None, bool]:
        shape = self.header.get("shape") or ()
        return (int(shape[0]) if shape else 1), True

    def _iter(self, batch_rows: int) -> Iterator[Batch]:
        name = self.files[0].name
        if name.endswith(".idx.npy"):
            data = name[: -len(".idx.npy")]
            raise UnreadableInput(
                self.path,
                f"an index sidecar of {data}, not a dataset",
                hint=f"point at the data file {data} instead",
            )
        h = self.header
        what = "a NumPy object array (pickled: never unpickled here)" if h["object"] else "a NumPy array"
        raise UnreadableInput(
            self.path,
            f"{what} ({h['descr']}, shape {tuple(h['shape'])}), not records",
            hint="inputs are records (CSV, JSON, JSONL, Parquet, Arrow); object .npy files are never unpickled",
        )


def read_npy_header(path: Path) -> dict[str, Any]:
    """``{"descr", "fortran_order", "shape", "object": bool}`` from the header alone (never unpickles)."""
    import numpy as np
    from numpy.lib import format as npformat

    try:
        with open(path, "rb") as fh:
            version = npformat.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = npformat.read_array_header_1_0(fh)
            else:
                shape, fortran, dtype = npformat.read_array_header_2_0(fh)
    except (ValueError, OSError, EOFError) as exc:
        raise UnreadableInput(path, f"not a valid .npy file ({exc})") from None
    return {
        "descr": str(dtype),
        "fortran_order": bool(fortran),
        "shape": list(shape),
        "object": dtype.hasobject or dtype == np.dtype(object),
    }


# -- opening ----------------------------------------------------------------------------------------------------
_CLASSES: dict[str, type[Source]] = {
    "jsonl": JsonlSource,
    "csv": CsvSource,
    "tsv": CsvSource,
    "json": JsonSource,
    "parquet": ParquetSource,
    "arrow": ArrowSource,
    "npy": NpySource,
}


def _check_readable(p: Path) -> None:
    if not os.access(p, os.R_OK):
        raise UnreadableInput(p, "permission denied", hint="check the file's permissions")


def data_files(root: Path) -> list[Path]:
    """A folder's data files in order (metadata, hidden and doc files skipped): engine_ray cuts the same list."""
    files = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if any(_IGNORED_IN_DIRS.search(part) for part in rel.parts):
            continue
        if p.is_file():
            files.append(p)
    return files


def _from_files(path: str, files: list[Path], *, encoding: str | None, batch_rows: int) -> Source:
    """One source over several files: they must share one columnar format (Parquet shards, Arrow shards)."""
    if not files:
        raise UnreadableInput(
            path, "no data files in it", hint="point at a data file or a folder of Parquet/Arrow files"
        )
    if len(files) == 1:
        return _open_file(
            files[0], path=path if path != str(files[0]) else None, encoding=encoding, batch_rows=batch_rows
        )
    kinds: dict[str, list[Path]] = {}
    for f in files:
        _check_readable(f)
        kind = format_from_name(f.name) or sniff_file(f).format
        kinds.setdefault(kind, []).append(f)
    if len(kinds) > 1:
        mix = ", ".join(f"{k} ({len(v)})" for k, v in sorted(kinds.items()))
        raise UnreadableInput(
            path,
            f"a directory mixing formats: {mix}",
            hint="point at one file, or a folder (or glob) of Parquet or Arrow files of one schema",
        )
    ((kind, group),) = kinds.items()
    if kind in ("parquet", "arrow"):
        return _CLASSES[kind](path, kind, files=group, encoding=encoding, batch_rows=batch_rows)
    if kind == "npy":
        raise UnreadableInput(path, f"{len(group)} .npy files, not records", hint="point at one file")
    parts = [_open_file(f, encoding=encoding, batch_rows=batch_rows) for f in group]
    formats = sorted({p.format for p in parts})
    if len(formats) > 1:
        raise UnreadableInput(
            path, f"a directory mixing formats: {', '.join(formats)}", hint="point at one file"
        )
    return ChainSource(path, parts)


def _open_file(p: Path, *, path: str | None = None, encoding: str | None, batch_rows: int) -> Source:
    _check_readable(p)
    sniffed: Sniffed = sniff_file(p)
    cls = _CLASSES[sniffed.format]
    return cls(
        path or str(p),
        sniffed.format,
        files=[p],
        compression=sniffed.compression,
        encoding=encoding,
        batch_rows=batch_rows,
    )


def _open_hf_disk(p: Path, *, encoding: str | None, batch_rows: int, split: str = "train") -> Source | None:
    """A ``datasets`` save_to_disk folder (Dataset or DatasetDict), read from its Arrow files directly."""
    if (p / "dataset_dict.json").is_file():
        splits = safe_loads((p / "dataset_dict.json").read_text()).get("splits") or []
        chosen = split if split in splits else (splits[0] if splits else None)
        if chosen is None or not (p / chosen).is_dir():
            raise UnreadableInput(p, "a datasets DatasetDict folder without its split folders")
        src = _open_hf_disk(p / chosen, encoding=encoding, batch_rows=batch_rows)
        if src is None:
            raise UnreadableInput(p / chosen, "not a datasets save_to_disk folder (no state.json)")
        src.path = str(p)
        src.detail.update({"split": chosen, "splits": list(splits)})
        return src
    state = p / "state.json"
    if not state.is_file():
        return None
    try:
        names = [d["filename"] for d in safe_loads(state.read_text()).get("_data_files", [])]
    except (ValueError, KeyError, TypeError) as exc:
        raise UnreadableInput(state, f"not a datasets state.json ({exc})") from None
    files = [p / n for n in names] or sorted(p.glob("*.arrow"))
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise UnreadableInput(missing[0], "listed in state.json but missing", hint="re-save the dataset")
    src = ArrowSource(str(p), "hf_disk", files=files, encoding=encoding, batch_rows=batch_rows)
    src.data_format = "arrow"
    return src


_stdin_copies: list[str] = []


@atexit.register
def _remove_stdin_copies() -> None:
    for name in _stdin_copies:
        with contextlib.suppress(OSError):
            os.unlink(name)


def _open_stdin(*, encoding: str | None, batch_rows: int) -> Source:
    # Spool stdin to a temporary file: memory stays bounded and the input can be read twice (peek, count, read).
    tmp = tempfile.NamedTemporaryFile(prefix="dataprep-stdin-", suffix=".jsonl", delete=False)  # noqa: SIM115
    _stdin_copies.append(tmp.name)
    with tmp:
        shutil.copyfileobj(sys.stdin.buffer, tmp, 1 << 20)
    p = Path(tmp.name)
    if p.stat().st_size == 0:
        raise UnreadableInput(
            "-", "empty input on stdin", hint="pipe JSONL into the command, one record per line"
        )
    with open(p, "rb") as fh:
        from .sniff import compression_of

        compression = compression_of(fh.read(8))
    src = JsonlSource(
        "-", "stdin", files=[p], compression=compression, encoding=encoding, batch_rows=batch_rows
    )
    src.data_format = "jsonl"
    return src


def open_source(path: str, *, encoding: str | None = None, batch_rows: int = 8192) -> Source:
    """Open any supported input without reading it (a head only); ``batches()`` streams it.

    ``path``: a file, a folder (Parquet/Arrow shards, a ``datasets`` save_to_disk folder), a glob, ``-`` for JSONL
    on stdin, or a Hugging Face dataset id found in the local cache. Packed data is *not* refused here; callers
    that read data call ``refuse_packed(source)``. Raises UnreadableInput for anything that cannot be read.
    """
    path = str(path)
    if encoding:
        import codecs

        try:
            codecs.lookup(encoding)
        except LookupError:
            from ..errors import UsageError

            raise UsageError(
                f"unknown encoding {encoding!r}", hint="e.g. $[encoding] latin-1, cp1252, utf-16"
            ) from None
    if path == "-":
        return _open_stdin(encoding=encoding, batch_rows=batch_rows)
    p = Path(path).expanduser()
    if p.is_dir():
        _check_readable(p)
        hf = _open_hf_disk(p, encoding=encoding, batch_rows=batch_rows)
        if hf is not None:
            return hf
        return _from_files(path, data_files(p), encoding=encoding, batch_rows=batch_rows)
    if p.exists() or p.is_symlink():
        return _open_file(p, path=path, encoding=encoding, batch_rows=batch_rows)
    if any(ch in path for ch in "*?["):
        matches = [Path(m) for m in sorted(globlib.glob(str(p), recursive=True)) if Path(m).is_file()]
        if not matches:
            raise UnreadableInput(
                path, "no file matches the pattern", hint="check the glob (quote it in the shell)"
            )
        return _from_files(path, matches, encoding=encoding, batch_rows=batch_rows)
    from .hub import looks_like_hub_id, resolve_hub_dataset

    if looks_like_hub_id(path) and not path.startswith((".", "/", "~")):
        found = resolve_hub_dataset(path)
        src = _from_files(path, found.files, encoding=encoding, batch_rows=batch_rows)
        src.data_format = src.format
        src.format = "hf_hub"
        src.path = path
        src.detail.update(
            {"cache": found.cache, "resolved": str(found.root), "split": found.split, **found.detail}
        )
        return src
    parent = p.parent
    if parent != p and not parent.exists():
        raise UnreadableInput(path, f"no such file or directory (no folder {parent})", hint="check the path")
    raise UnreadableInput(path, "no such file or directory", hint="check the path")
