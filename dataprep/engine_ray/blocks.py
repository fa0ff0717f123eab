"""Cutting the input into blocks on the driver (Parquet row groups, JSONL byte ranges, whole files), and reading
one block on a worker as the local engine reads it, rows numbered as in the whole input."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ..errors import UnreadableInput, UsageError
from ..pipeline import ConvertSpec, RowPipeline
from .session import LazyRay, _collect, _guarded

DEFAULT_BLOCK_ROWS = 65536  # Parquet row groups are gathered into blocks of about this many rows
DEFAULT_BLOCK_BYTES = 64 << 20  # uncompressed UTF-8 JSONL is cut into byte ranges of this size


# -- cutting the input into blocks --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Block:
    """One unit of work: a file, some row groups of a Parquet file, or the lines starting in a byte range of a
    JSONL file; with the rows before it in the whole input."""

    index: int
    path: str
    kind: str  # "parquet" (row groups), "jsonl_range" (lines starting in bytes [lo, hi)), "file" (whole)
    row_offset: int  # rows (JSONL: lines) before the block's file in the whole input
    row_groups: tuple[int, ...] = ()
    rows: int | None = None
    byte_lo: int = 0
    byte_hi: int = 0
    newlines_before: int = 0  # newlines in the file before byte_lo


@dataclass(frozen=True)
class InputPlan:
    """What the driver decided before starting any worker: the shape, the row pipeline, the blocks."""

    path: str
    format: str
    detection: Any  # converters.registry.Detection
    pipeline: RowPipeline  # its converter bound to the whole input's columns (pickled to workers)
    blocks: tuple[Block, ...]

    @property
    def rows(self) -> int | None:
        ns = [b.rows for b in self.blocks]
        return None if any(n is None for n in ns) else sum(ns)  # type: ignore[misc]


def _list_files(path: str) -> list[Path] | None:
    """The data files of a folder or glob (None for a single file, stdin or a Hub id: one source)."""
    import glob as globlib

    from ..sources import data_files

    p = Path(path).expanduser()
    if p.is_dir():
        if (p / "state.json").is_file() or (p / "dataset_dict.json").is_file():
            return None  # a datasets save_to_disk folder: the reader knows its file order
        return data_files(p)
    if not p.exists() and any(ch in path for ch in "*?["):
        return [Path(m) for m in sorted(globlib.glob(str(p), recursive=True)) if Path(m).is_file()]
    return None


def _is_jsonl(p: Path) -> bool:
    from ..sources.sniff import format_from_name, sniff_file

    return (format_from_name(p.name) or sniff_file(p).format) == "jsonl"


def jsonl_shards(path: str) -> list[Path] | None:
    """The files when ``path`` is a folder or glob of several JSONL files (the local engine reads one at a time)."""
    files = _list_files(path)
    if not files or len(files) < 2 or not all(_is_jsonl(f) for f in files):
        return None
    return files


def plan_input(
    path: str,
    spec: ConvertSpec,
    *,
    batch_rows: int = 8192,
    block_rows: int = DEFAULT_BLOCK_ROWS,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    line_counts: Callable[[list[tuple[str, int, int]]], list[int]] | None = None,
) -> InputPlan:
    """Refuse packed data, detect the shape, then cut the input into blocks.

    Detection is the local engine's own (``pipeline.open_input``: the first batch of the input, or of the first
    JSONL shard). JSONL blocks need line counts (rows are line numbers): ``line_counts([(path, lo, hi)])``
    counts newlines in byte ranges (lo = -1: the lines of a whole, compressed file); it runs on Ray when given,
    and is called only after everything that can refuse the input.
    """
    from ..pipeline import open_input
    from ..sources import open_source, refuse_packed

    encoding = spec.encoding
    shards = jsonl_shards(path)
    if shards is not None:
        for f in shards:  # every shard: a packed file hidden among the shards is refused too
            refuse_packed(open_source(str(f), encoding=encoding, batch_rows=batch_rows))
        plan = open_input(str(shards[0]), spec, batch_rows=batch_rows)
        _refuse_whole_input(plan)
        blocks = _jsonl_blocks(shards, encoding, block_bytes, line_counts)
        return InputPlan(path, "jsonl", plan.detection, plan.pipeline, tuple(blocks))
    plan = open_input(path, spec, batch_rows=batch_rows)
    _refuse_whole_input(plan)
    src = plan.source
    _refuse_stdin(src.format == "stdin")
    files = [Path(f) for f in getattr(src, "files", [])]
    kind = getattr(src, "data_format", src.format)
    if kind == "parquet" and files:
        blocks = _parquet_blocks(files, block_rows)
    elif kind == "jsonl" and len(files) == 1:
        blocks = _jsonl_blocks(files, encoding, block_bytes, line_counts)
    elif kind == "arrow" and len(files) > 1:
        blocks, offset = [], 0
        for i, f in enumerate(files):
            n = open_source(str(f), encoding=encoding).num_rows or 0
            blocks.append(Block(i, str(f), "file", offset, rows=n))
            offset += n
    else:  # one file the local reader streams whole (CSV, JSON, JSONL, one Arrow file...)
        blocks = [Block(0, str(files[0]) if len(files) == 1 else src.path, "file", 0)]
    return InputPlan(path, kind, plan.detection, plan.pipeline, tuple(blocks))


def _refuse_stdin(is_stdin: bool) -> None:
    """Every worker reads its own block of the input, so it must be a file they can all open."""
    if is_stdin:
        raise UsageError(
            "$[engine] ray cannot read stdin", hint="write the input to a file every node can read"
        )


def _refuse_whole_input(plan: Any) -> None:
    if plan.pipeline.whole_input:
        raise UsageError(
            f"the {plan.detection.shape} shape needs the whole input at once (trees span rows), "
            "so it cannot be cut into blocks",
            hint="use $[engine] local for this input",
        )


def _jsonl_blocks(
    files: list[Path],
    encoding: str | None,
    block_bytes: int,
    line_counts: Callable[[list[tuple[str, int, int]]], list[int]] | None,
) -> list[Block]:
    """Byte ranges of uncompressed UTF-8 files, whole compressed (or other-encoding) files; line offsets."""
    from ..sources.jsonl import is_utf8
    from ..sources.sniff import sniff_file

    units: list[tuple[int, str, int, int]] = []  # (file, path, lo, hi); lo = -1: the whole file
    sizes = []
    for fi, f in enumerate(files):
        size = f.stat().st_size
        sizes.append(size)
        if size > block_bytes and is_utf8(encoding) and sniff_file(f).compression == "none":
            units.extend((fi, str(f), lo, min(lo + block_bytes, size)) for lo in range(0, size, block_bytes))
        else:
            units.append((fi, str(f), -1, -1))
    if len(units) == 1:  # one block: its rows are the file's own line numbers
        fi, f, lo, hi = units[0]
        return [Block(0, f, "file" if lo < 0 else "jsonl_range", 0, byte_lo=max(lo, 0), byte_hi=max(hi, 0))]
    todo = [(f, lo, hi) for _, f, lo, hi in units]
    counts = line_counts(todo) if line_counts is not None else [_count(*u) for u in todo]
    blocks: list[Block] = []
    offset = 0  # lines of the files before this one
    newlines = 0  # in this file, before the unit
    for k, ((fi, f, lo, hi), n) in enumerate(zip(units, counts, strict=True)):
        if lo < 0:
            blocks.append(Block(k, f, "file", offset, rows=n))
            offset += n
            continue
        blocks.append(Block(k, f, "jsonl_range", offset, byte_lo=lo, byte_hi=hi, newlines_before=newlines))
        newlines += n
        if hi == sizes[fi]:  # the file's last range: a last line without a newline still counts
            offset += newlines + (_last_byte(f) not in (b"\n", b""))
            newlines = 0
    return blocks


def _last_byte(path: str) -> bytes:
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        if fh.tell() == 0:
            return b""
        fh.seek(-1, os.SEEK_END)
        return fh.read(1)


def count_newlines(path: str, lo: int, hi: int) -> int:
    """Newlines in bytes [lo, hi) of a file."""
    n = 0
    with open(path, "rb") as fh:
        fh.seek(lo)
        left = hi - lo
        while left > 0 and (chunk := fh.read(min(left, 1 << 20))):
            n += chunk.count(b"\n")
            left -= len(chunk)
    return n


def _count(path: str, lo: int, hi: int) -> int:
    return count_lines(path) if lo < 0 else count_newlines(path, lo, hi)


def _parquet_blocks(files: list[Path], block_rows: int) -> list[Block]:
    """Row groups gathered into blocks of about ``block_rows`` rows; row offsets from the footers."""
    import pyarrow.parquet as pq

    blocks: list[Block] = []
    offset = 0
    for f in files:
        try:
            meta = pq.ParquetFile(f).metadata
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad footer
            raise UnreadableInput(f, f"not a readable Parquet file ({str(exc).splitlines()[0]})") from None
        group: list[int] = []
        rows = 0
        for g in range(meta.num_row_groups):
            n = meta.row_group(g).num_rows
            if group and rows + n > block_rows:
                blocks.append(Block(len(blocks), str(f), "parquet", offset, tuple(group), rows))
                offset += rows
                group, rows = [], 0
            group.append(g)
            rows += n
        if group:
            blocks.append(Block(len(blocks), str(f), "parquet", offset, tuple(group), rows))
            offset += rows
    if not blocks:  # every file empty: one empty block, so the output still has its shard
        blocks.append(Block(0, str(files[0]), "parquet", 0, (), 0))
    return blocks


def count_lines(path: str) -> int:
    """Lines of a (possibly compressed) text file; a last line without a newline counts."""
    from ..sources.sniff import open_decompressed, sniff_file

    p = Path(path)
    n = 0
    last = b"\n"
    compression = sniff_file(p).compression
    try:
        with open_decompressed(p, compression) as fh:
            while chunk := fh.read(1 << 20):
                n += chunk.count(b"\n")
                last = chunk[-1:]
    except (EOFError, OSError) as exc:
        raise UnreadableInput(
            p, f"corrupt or truncated {compression} data ({exc})", hint="re-create or re-download the file"
        ) from None
    return n + (last != b"\n")


# -- reading one block (runs on a worker) -------------------------------------------------------------------------
def _shift(batch: Any, offset: int) -> Any:
    """A batch with its row numbers moved by ``offset`` (the rows before its file in the whole input)."""
    if not offset:
        return batch
    from dataclasses import replace

    return replace(
        batch,
        start=batch.start + offset,
        rows=[r + offset for r in batch.rows] if batch.rows is not None else None,
        errors=[replace(e, row=e.row + offset) for e in batch.errors],
    )


def block_batches(block: Block, *, encoding: str | None, batch_rows: int) -> Iterator[Any]:
    """The block's records as dataprep Batches, numbered as in the whole input (the local reader's numbering)."""
    from ..sources import open_source

    src = open_source(block.path, encoding=encoding, batch_rows=batch_rows)
    if block.kind == "jsonl_range":
        yield from src._guarded(_jsonl_range(block, encoding, batch_rows))
        return
    if block.kind != "parquet":
        for b in src.batches():
            yield _shift(b, block.row_offset)
        return
    if not block.row_groups:
        return

    def groups() -> Iterator[Any]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        from ..sources.base import Batch

        start = block.row_offset + 1
        pf = pq.ParquetFile(block.path)
        for rb in pf.iter_batches(batch_size=batch_rows, row_groups=list(block.row_groups)):
            if rb.num_rows:
                yield Batch(start=start, table=pa.Table.from_batches([rb]))
                start += rb.num_rows

    yield from src._guarded(groups())


def _jsonl_range(block: Block, encoding: str | None, batch_rows: int) -> Iterator[Any]:
    """Batches of the lines that start in bytes [lo, hi), parsed by the JSONL reader, numbered by line.

    The range's whole lines (at most ``block_bytes`` plus one line) are read into memory and go through the
    reader's own ``iter_jsonl``; the batches are then renumbered to the file's line numbers.
    """
    import io

    from ..sources.jsonl import iter_jsonl

    lo, hi = block.byte_lo, block.byte_hi
    with open(block.path, "rb") as fh:
        if lo == 0:
            start, newlines = 0, 0
        else:
            fh.seek(lo - 1)
            skipped = (
                fh.readline()
            )  # through the first newline at or after lo - 1: the next line starts there
            start = lo - 1 + len(skipped)
            newlines = block.newlines_before + (0 if skipped == b"\n" else 1)
        if start >= hi:
            return  # no line starts in this range
        fh.seek(start)
        data = fh.read(hi - start)
        if not data.endswith(b"\n"):
            data += fh.readline()  # the last line that starts in the range, whole
    first = block.row_offset + newlines  # the number of the line before the first one read
    if lo:
        # The reader drops a byte-order mark at the start of its stream; only the file's own start has one
        # to drop. A blank line first (skipped, but counted) keeps a mid-file range's first line as written.
        data = b"\n" + data
        first -= 1
    for b in iter_jsonl(io.BytesIO(data), batch_rows, encoding):
        yield _shift(b, first)


_J = TypeVar("_J", bound="BlockJob")


@dataclass(frozen=True)
class BlockJob:
    """What every worker needs to read a block as the local engine reads it (pickled once to the workers)."""

    blocks: tuple[Block, ...]
    pipeline: RowPipeline  # its converter bound to the whole input's columns on the driver
    encoding: str | None
    batch_rows: int

    @classmethod
    def planned(cls: type[_J], plan: InputPlan, encoding: str | None, batch_rows: int, **extra: Any) -> _J:
        """The job for a planned input (``extra``: the subclass's own fields)."""
        return cls(plan.blocks, plan.pipeline, encoding, batch_rows, **extra)

    def batches(self, index: int) -> Iterator[Any]:
        """The batches of block ``index`` as read, numbered as in the whole input (the pipeline renames)."""
        return block_batches(self.blocks[index], encoding=self.encoding, batch_rows=self.batch_rows)


def _line_count_udf(batch: dict[str, Any]) -> dict[str, Any]:
    done = [
        _guarded(lambda p=p, lo=lo, hi=hi: _count(str(p), int(lo), int(hi)), -1)
        for p, lo, hi in zip(batch["path"], batch["lo"], batch["hi"], strict=True)
    ]
    return {"index": list(batch["index"]), "lines": [d[0] for d in done], "error": [d[1] for d in done]}


def _ray_line_counts(get_ray: Callable[[], Any]) -> Callable[[list[tuple[str, int, int]]], list[int]]:
    """Count lines on Ray (one task per file or byte range); ``get_ray`` starts Ray on first use."""

    def counts(units: list[tuple[str, int, int]]) -> list[int]:
        ray = get_ray()
        items = [{"index": i, "path": p, "lo": lo, "hi": hi} for i, (p, lo, hi) in enumerate(units)]
        ds = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            _line_count_udf, batch_size=1
        )
        got = {int(r["index"]): int(r["lines"]) for r in _collect(ray, ds)}
        return [got[i] for i in range(len(units))]

    return counts


def _plan_on_ray(
    lazy: LazyRay, path: str, spec: ConvertSpec, batch_rows: int, block_rows: int, block_bytes: int
) -> tuple[InputPlan, Any]:
    """(``plan_input`` with JSONL line counts on Ray, the started Ray): both Ray commands' first step.

    Everything that can refuse the input (packed data, unknown shape, a bad --map) runs before Ray starts;
    Ray starts for the first line count (JSONL) or the first block.
    """
    plan = plan_input(
        path,
        spec,
        batch_rows=batch_rows,
        block_rows=block_rows,
        block_bytes=block_bytes,
        line_counts=_ray_line_counts(lazy.get),
    )
    return plan, lazy.get()
