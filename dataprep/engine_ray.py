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
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import pickle
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import FindingError, MissingDependency, UnreadableInput, UsageError
from .findings import finding
from .normalize import NormalizeResult
from .pipeline import ConvertSpec, RowPipeline

if TYPE_CHECKING:
    from .stats import StatsResult

RAY_EXTRA_HINT = "pip install 'dataprep[ray]'"
DEFAULT_BLOCK_ROWS = 65536  # Parquet row groups are gathered into blocks of about this many rows
DEFAULT_BLOCK_BYTES = 64 << 20  # uncompressed UTF-8 JSONL is cut into byte ranges of this size
SHARD_NAME = "part-{:05d}.jsonl"
FIRST_ROWS = 20


# -- Ray itself ------------------------------------------------------------------------------------------------
def import_ray() -> Any:
    """The ``ray`` module with Ray Data, or MissingDependency (exit 2) naming the extra to install."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise MissingDependency(
            f"--engine ray needs Ray Data, which is not installed ({exc})", hint=RAY_EXTRA_HINT
        ) from None
    return ray


def resolve_address(ray_address: str | None) -> str | None:
    """``--ray-address`` (``auto`` or ``HOST:PORT``), else ``RAY_ADDRESS``, else None (a local Ray)."""
    addr = ray_address or os.environ.get("RAY_ADDRESS") or None
    return addr.strip() if addr else None


@contextlib.contextmanager
def ray_session(ray_address: str | None = None) -> Iterator[Any]:
    """Connect to (or start) Ray for one run; a session already initialized by the caller is left running."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    addr = resolve_address(ray_address)
    try:
        ray.init(
            address=addr,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.ERROR,  # our report, not Ray's, is the command's output
        )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = addr or "a new local Ray"
        raise UsageError(
            f"cannot connect to Ray at {where}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
            hint="start a cluster with `ray start --head` and pass --ray-address auto (or HOST:PORT), "
            "or unset RAY_ADDRESS to run a local Ray",
        ) from None
    try:
        yield ray
    finally:
        ray.shutdown()


class LazyRay:
    """Starts (or connects to) Ray on first ``get()``, so checks that refuse the input never wait for it."""

    def __init__(self, ray_address: str | None):
        self.address = ray_address
        self._stack = contextlib.ExitStack()
        self._ray: Any = None

    def get(self) -> Any:
        if self._ray is None:
            self._ray = self._stack.enter_context(ray_session(self.address))
            _quiet_data_context(self._ray)
        return self._ray

    def __enter__(self) -> LazyRay:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stack.close()


def _quiet_data_context(ray: Any) -> None:
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    with contextlib.suppress(AttributeError):
        ctx.print_on_execution_start = False
    with contextlib.suppress(AttributeError):
        ctx.enable_operator_progress_bars = False


# -- cutting the input into blocks ------------------------------------------------------------------------------
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

    from .sources import data_files

    p = Path(path).expanduser()
    if p.is_dir():
        if (p / "state.json").is_file() or (p / "dataset_dict.json").is_file():
            return None  # a datasets save_to_disk folder: the reader knows its file order
        return data_files(p)
    if not p.exists() and any(ch in path for ch in "*?["):
        return [Path(m) for m in sorted(globlib.glob(str(p), recursive=True)) if Path(m).is_file()]
    return None


def _is_jsonl(p: Path) -> bool:
    from .sources.sniff import format_from_name, sniff_file

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
    from .pipeline import open_input
    from .sources import open_source, refuse_packed

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
            "--engine ray cannot read stdin", hint="write the input to a file every node can read"
        )


def _refuse_whole_input(plan: Any) -> None:
    if plan.pipeline.whole_input:
        raise UsageError(
            f"the {plan.detection.shape} shape needs the whole input at once (trees span rows), "
            "so it cannot be cut into blocks",
            hint="use --engine local for this input",
        )


def _jsonl_blocks(
    files: list[Path],
    encoding: str | None,
    block_bytes: int,
    line_counts: Callable[[list[tuple[str, int, int]]], list[int]] | None,
) -> list[Block]:
    """Byte ranges of uncompressed UTF-8 files, whole compressed (or other-encoding) files; line offsets."""
    from .sources.jsonl import is_utf8
    from .sources.sniff import sniff_file

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
    from .sources.sniff import open_decompressed, sniff_file

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


# -- reading and converting one block (runs on a worker) -----------------------------------------------------
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
    from .sources import open_source

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

        from .sources.base import Batch

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

    from .sources.jsonl import iter_jsonl

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


def _guarded(fn: Callable[[], Any], empty: Any) -> tuple[Any, bytes]:
    """(fn(), b"") or (empty, the pickled DataprepError's finding and exit code).

    A worker's DataprepError (an unreadable block, say) travels back as data: Ray Data re-raises UDF errors
    as its own UserCodeException and drops the original, and the DataprepError subclasses do not pickle.
    """
    from .errors import DataprepError

    try:
        return fn(), b""
    except DataprepError as err:
        return empty, pickle.dumps((err.finding, err.exit_code))


def _raise_remote(rows: list[dict[str, Any]]) -> None:
    """Raise the first block's error (in block order) on the driver, as the DataprepError it was."""
    from .errors import DataprepError

    for row in sorted(rows, key=lambda r: int(r["index"])):
        if row.get("error"):
            f, code = pickle.loads(row["error"])  # our own workers' results, never input data
            err = (FindingError if code == FindingError.exit_code else DataprepError)(f)
            err.exit_code = code
            raise err


@dataclass
class BlockCounts:
    """What one converted block reports back: counts and the first rejected rows per code (small)."""

    index: int
    read: int = 0
    written: int = 0
    rejected: int = 0
    by_code: dict[str, int] = field(default_factory=dict)
    first_rows: dict[str, list[int]] = field(default_factory=dict)
    first_message: dict[str, str] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)  # the converter's Notes.to_dict()
    seconds: float = 0.0

    def to_json(self) -> str:
        return json.dumps(self.__dict__)

    @classmethod
    def from_json(cls, text: str) -> BlockCounts:
        return cls(**json.loads(text))


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


@dataclass(frozen=True)
class ConvertJob(BlockJob):
    """Everything a worker needs for normalize (pickled once into the Ray Data operator)."""

    out_dir: str
    rejects_dir: str


def convert_block(job: ConvertJob, index: int) -> BlockCounts:
    """Convert one block with the local engine's functions; write its output and rejects shards (atomically)."""
    from .atomic import atomic_write
    from .normalize import write_converted

    t0 = time.perf_counter()
    name = SHARD_NAME.format(index)
    rejects_path = Path(job.rejects_dir) / name
    with atomic_write(Path(job.out_dir) / name) as fo, atomic_write(rejects_path) as fr:
        w = write_converted(job.pipeline, job.batches(index), fo, fr)
    if not w.rejected:
        rejects_path.unlink()
    return BlockCounts(
        index=index,
        read=w.read,
        written=w.written,
        rejected=w.rejected,
        by_code=dict(w.by_code),
        first_rows={k: list(v) for k, v in w.first_rows.items()},
        first_message=dict(w.first_message),
        notes=w.notes.to_dict(),
        seconds=time.perf_counter() - t0,
    )


def _convert_udf(batch: dict[str, Any], job: ConvertJob) -> dict[str, Any]:
    """Ray Data batch function: each row of the dataset is a block index."""
    idx = [int(i) for i in batch["index"]]
    done = [_guarded(lambda i=i: convert_block(job, i).to_json(), "") for i in idx]
    return {"index": idx, "result": [d[0] for d in done], "error": [d[1] for d in done]}


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


# -- normalize ------------------------------------------------------------------------------------------------
def default_rejects_dir(out: str | Path) -> Path:
    """``out/train`` -> ``out/train.rejects`` (a folder of rejects shards beside the output folder)."""
    p = Path(out)
    return p.with_name(p.name + ".rejects")


@contextlib.contextmanager
def _atomic_dir(target: Path, force: bool) -> Iterator[Path]:
    """A temp folder beside ``target``, renamed onto it on success (replacing it when ``force``)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        if target.exists() and force:
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink()
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _merge_counts(
    results: list[BlockCounts],
) -> tuple[dict[str, int], dict[str, tuple[int, ...]], dict[str, str]]:
    by_code: dict[str, int] = {}
    first_rows: dict[str, list[int]] = {}
    first_message: dict[str, str] = {}
    for r in results:  # in block order, so "first" means first in the input
        for code, n in r.by_code.items():
            by_code[code] = by_code.get(code, 0) + n
            rows = first_rows.setdefault(code, [])
            rows.extend(r.first_rows.get(code, [])[: FIRST_ROWS - len(rows)])
            first_message.setdefault(code, r.first_message.get(code, ""))
    return by_code, {k: tuple(v) for k, v in first_rows.items()}, first_message


def _concat(paths: Sequence[Path], out: Any) -> None:
    for p in paths:
        if p.exists():
            with open(p, "rb") as fh:
                shutil.copyfileobj(fh, out, 1 << 20)


def _concat_dedup(paths: Sequence[Path], out: Any) -> tuple[int, int]:
    """Concatenate, dropping exact duplicate lines (first kept), as the local ``--dedup``: (kept, dropped)."""
    seen: set[bytes] = set()
    kept = dropped = 0
    for p in paths:
        with open(p, "rb") as fh:
            for line in fh:
                h = hashlib.blake2b(line.rstrip(b"\n"), digest_size=16).digest()
                if h in seen:
                    dropped += 1
                    continue
                seen.add(h)
                out.write(line)
                kept += 1
    return kept, dropped


@dataclass(frozen=True)
class RayNormalizeResult(NormalizeResult):
    """A NormalizeResult plus where the shards went and how the run was cut (``engine`` in the JSON)."""

    shards: tuple[str, ...] = ()
    rejects_shards: tuple[str, ...] = ()
    merged: bool = False
    blocks: int = 0
    block_seconds: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d["engine"] = {
            "name": "ray",
            "blocks": self.blocks,
            "merged": self.merged,
            "shards": list(self.shards),
            "rejects_shards": list(self.rejects_shards),
        }
        return d


def normalize_ray(
    inp: str | Path,
    out: str | Path,
    spec: ConvertSpec | None = None,
    *,
    ray_address: str | None = None,
    merge: bool = False,
    dedup: bool = False,
    rejects: str | Path | None = None,
    force: bool = False,
    batch_rows: int = 8192,
    block_rows: int = DEFAULT_BLOCK_ROWS,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    progress: Callable[[int, int | None], None] | None = None,
) -> RayNormalizeResult:
    """``normalize`` on Ray Data, block by block, with the local engine's converters; the same bytes.

    OUT is a folder of ``part-NNNNN.jsonl`` shards (one per block, in input order) and the rejects a folder of
    shards of the same names, only those with rejects (``OUT.rejects`` unless ``rejects``); the shards
    concatenated are what the local engine writes. With ``merge``, OUT and the rejects are single files, byte
    for byte the local engine's. ``dedup`` needs ``merge``. Same checks, codes and counts as ``normalize``.
    """
    from .atomic import atomic_write
    from .normalize import Notes, check_outputs, default_rejects_path

    spec = spec or ConvertSpec()

    inp, out = str(inp), Path(out)
    rejects_path = (
        Path(rejects)
        if rejects is not None
        else (default_rejects_path(out) if merge else default_rejects_dir(out))
    )
    check_outputs(inp, out, rejects_path, force=force, hint="write rejects to another path")
    if dedup and not merge:
        raise UsageError(
            "--dedup with --engine ray needs --merge (duplicates are found across every shard)",
            hint="add --merge, or run --engine local --dedup on the merged output",
        )
    _refuse_stdin(inp == "-")
    import_ray()
    out.parent.mkdir(parents=True, exist_ok=True)
    with LazyRay(ray_address) as lazy:
        plan, ray_ctx = _plan_on_ray(lazy, inp, spec, batch_rows, block_rows, block_bytes)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".shards", dir=out.parent.resolve()))
        try:
            results = _run_convert(ray_ctx, plan, spec.encoding, batch_rows, staging, progress)
            names = [SHARD_NAME.format(b.index) for b in plan.blocks]
            by_code, first_rows, first_message = _merge_counts(results)
            notes = Notes()
            for r in results:  # in block order, as the local engine notes them
                notes.merge(Notes.from_dict(r.notes))
            read = sum(r.read for r in results)
            written = sum(r.written for r in results)
            rejected = sum(r.rejected for r in results)
            duplicates = 0
            if merge:
                with atomic_write(out, "wb") as fo:
                    if dedup:
                        written, duplicates = _concat_dedup([staging / "out" / n for n in names], fo)
                    else:
                        _concat([staging / "out" / n for n in names], fo)
                with atomic_write(rejects_path, "wb") as fr:
                    _concat([staging / "rejects" / n for n in names], fr)
                shards: tuple[str, ...] = ()
                rejects_shards: tuple[str, ...] = ()
            else:
                with _atomic_dir(out, force) as tmp_out:
                    for n in names:
                        os.replace(staging / "out" / n, tmp_out / n)
                with _atomic_dir(rejects_path, force) as tmp_rej:
                    for n in names:
                        if (staging / "rejects" / n).exists():
                            os.replace(staging / "rejects" / n, tmp_rej / n)
                shards = tuple(str(out / n) for n in names)
                rejects_shards = tuple(str(rejects_path / n) for n in sorted(os.listdir(rejects_path)))
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return RayNormalizeResult(
        input=inp,
        output=str(out),
        rejects_path=str(rejects_path),
        detection=plan.detection,
        read=read,
        written=written,
        rejected=rejected,
        duplicates=duplicates,
        records_read=read,
        unit="row",
        rejected_by_code=by_code,
        first_rows=first_rows,
        first_message=first_message,
        notes=notes,
        shards=shards,
        rejects_shards=rejects_shards,
        merged=merge,
        blocks=len(plan.blocks),
        block_seconds=tuple(r.seconds for r in results),
    )


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


def _run_convert(
    ray: Any,
    plan: InputPlan,
    encoding: str | None,
    batch_rows: int,
    staging: Path,
    progress: Callable[[int, int | None], None] | None = None,
) -> list[BlockCounts]:
    (staging / "out").mkdir()
    (staging / "rejects").mkdir()
    job = ConvertJob.planned(
        plan,
        encoding,
        batch_rows,
        out_dir=str(staging / "out"),
        rejects_dir=str(staging / "rejects"),
    )
    items = [{"index": b.index} for b in plan.blocks]
    ds = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        _convert_udf, batch_size=1, fn_kwargs={"job": job}
    )
    done = [0]

    def report(row: dict[str, Any]) -> None:
        if progress is not None:
            done[0] += BlockCounts.from_json(row["result"]).read
            progress(done[0], plan.rows)

    results = [BlockCounts.from_json(r["result"]) for r in _collect(ray, ds, report)]
    results.sort(key=lambda r: r.index)
    if [r.index for r in results] != [b.index for b in plan.blocks]:
        raise RuntimeError("Ray returned an incomplete set of blocks")  # a bug, not a user error
    return results


def _collect(
    ray: Any, ds: Any, on_row: Callable[[dict[str, Any]], None] | None = None
) -> list[dict[str, Any]]:
    """Run the dataset and gather its (small) rows as blocks finish; a block's DataprepError is raised here."""
    rows = []
    for row in ds.iter_rows():
        _raise_remote([row])
        rows.append(row)
        if on_row is not None:
            on_row(row)
    return rows


# -- stats ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MeasureJob(BlockJob):
    """Everything a measuring actor needs besides the spec: the blocks, the bound converter, the batch size."""

    measure_rows: int


def block_conversations(
    job: BlockJob, index: int, on_reject: Callable[[Any], None] | None = None
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(row, valid conversation) of one block, as ``pipeline.conversations`` yields them (rejects to
    ``on_reject``)."""
    return job.pipeline.conversations(job.batches(index), on_reject)


class MeasureActor:
    """A Ray actor: loads the tokenizer (builds the Measurer) once, then converts and measures whole blocks."""

    def __init__(self, shared: list[Any]):
        # One Rust thread per actor: Ray gives each actor a CPU, as the local engine gives each worker process.
        os.environ.setdefault("RAYON_NUM_THREADS", "1")
        import ray

        from .measure import Measurer

        # (spec, job) travel once through the object store (the tokenizer JSON can be megabytes); the driver
        # holds the reference for the whole run.
        spec, job = ray.get(shared[0])

        self.measurer = Measurer(spec)
        self.job = job

    def measure_block(
        self, index: int
    ) -> tuple[list[tuple[list[int], Any]], list[tuple[int, str, str]], Any, Any]:
        """(row numbers, BatchCounts) per measured batch of the block, in order, the rows the converter
        rejected as (row, code, message), the block's quality lint and the converter's notes on it (both merged
        by the driver in block order, as the local engine sees the rows)."""
        from concurrent.futures import ThreadPoolExecutor

        from converters._common import Notes

        from .measure import batched
        from .quality import QualityLint

        m = self.measurer
        out: list[tuple[list[int], Any]] = []
        skipped: list[tuple[int, str, str]] = []
        lint = QualityLint(mergeable=True)
        self.job.pipeline.notes = Notes()

        def reject(r: Any) -> None:
            skipped.append((int(r.row), r.code, r.message))

        def linted(items: Any) -> Any:
            for row, conv in items:
                lint.add(row, conv)
                yield row, conv

        # As the local engine does: render batch k+1 while a thread encodes batch k (encoding frees the GIL).
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = None
            convs_of_block = linted(block_conversations(self.job, index, reject))
            for rows, convs in batched(convs_of_block, self.job.measure_rows):
                fut = pool.submit(m.count_batch, m.render_batch(convs))
                if pending is not None:
                    out.append((pending[0], pending[1].result()))
                pending = (rows, fut)
            if pending is not None:
                out.append((pending[0], pending[1].result()))
        return out, skipped, lint, self.job.pipeline.notes.to_dict()

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        idx = [int(i) for i in batch["index"]]
        done = [
            _guarded(lambda i=i: pickle.dumps(self.measure_block(i), protocol=pickle.HIGHEST_PROTOCOL), b"")
            for i in idx
        ]
        return {"index": idx, "parts": [d[0] for d in done], "error": [d[1] for d in done]}


def _subset(rows: list[int], bc: Any, keep: Any) -> tuple[list[int], Any]:
    """The part of a measured batch whose positions ``keep`` (a bool array over the batch) selects."""
    import numpy as np

    from .measure import BatchCounts

    keep = np.asarray(keep, dtype=bool)
    newpos = np.cumsum(keep) - 1
    ok_keep = np.flatnonzero(keep[bc.ok]) if len(bc.ok) else np.zeros(0, dtype=np.int64)
    ok_new = np.full(len(bc.ok), -1, dtype=np.int64)
    ok_new[ok_keep] = np.arange(ok_keep.size)
    run_keep = ok_new[bc.run_row] >= 0 if bc.run_row.size else np.zeros(0, dtype=bool)
    sub = BatchCounts(
        ok=newpos[bc.ok[ok_keep]].astype(np.int64),
        total=bc.total[ok_keep],
        supervised=bc.supervised[ok_keep],
        turns=bc.turns[ok_keep],
        run_row=ok_new[bc.run_row[run_keep]].astype(np.int32),
        run_start=bc.run_start[run_keep],
        run_end=bc.run_end[run_keep],
        errors=[(int(newpos[i]), code, msg) for i, code, msg in bc.errors if keep[i]],
        unmaskable_from=bc.unmaskable_from[ok_keep],
    )
    return [r for r, k in zip(rows, keep.tolist(), strict=True) if k], sub


def stats_ray(
    path: str | Path,
    loaded_or_model: Any,
    spec: ConvertSpec | None = None,
    *,
    ray_address: str | None = None,
    actors: int | None = None,
    seq_lengths: Sequence[int] | None = None,
    batch_sizes: Sequence[int] | None = None,
    sample: int | None = None,
    mask_generation_prompt: bool = False,
    model_max_length: int | None = None,
    max_tokens: int | None = None,
    chat_template: str | None = None,
    batch_rows: int = 8192,
    block_rows: int = DEFAULT_BLOCK_ROWS,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    progress: Callable[[int], None] | None = None,
) -> StatsResult:
    """``compute_stats(pipeline.conversations(path, spec), loaded, ...)`` on Ray Data; the same StatsResult.

    Blocks are converted and measured in a pool of ``actors`` Ray actors (default: one per CPU of the cluster,
    at most one per block), each loading the tokenizer once. The per-row count arrays come back to the driver,
    which reduces them in input order with the local engine's distribution code. ``sample``: the same rows the
    local engine's seeded reservoir picks (every row is measured, then the sample is selected).
    """
    from .measure import DEFAULT_BATCH_ROWS, Collector, make_spec
    from .stats import (
        DEFAULT_BATCH_SIZES,
        DEFAULT_SEQ_LENGTHS,
        Skipped,
        reservoir_sample,
        stats_from_counts,
        tokenizer_max_length,
    )

    if sample is not None and sample <= 0:
        raise ValueError("sample must be positive")
    import_ray()  # the missing extra is the first thing a user hears about
    loaded = loaded_or_model
    if isinstance(loaded_or_model, (str, Path)):
        from .tokenizer import load_tokenizer

        loaded = load_tokenizer(str(loaded_or_model), chat_template=chat_template)
        if loaded.template is None:
            raise FindingError(
                finding(
                    "chat_template_missing",
                    f"{loaded_or_model}: the tokenizer has no chat template to measure through",
                )
            )
    mspec = make_spec(
        loaded, mask_generation_prompt=mask_generation_prompt, portable=True
    )  # actors on other nodes rebuild it
    convert = spec or ConvertSpec()
    path = str(path)
    _refuse_stdin(path == "-")
    with LazyRay(ray_address) as lazy:
        plan, ray_ctx = _plan_on_ray(lazy, path, convert, batch_rows, block_rows, block_bytes)
        job = MeasureJob.planned(plan, convert.encoding, batch_rows, measure_rows=DEFAULT_BATCH_ROWS)
        shared = ray_ctx.put((mspec, job))
        cpus = int(ray_ctx.cluster_resources().get("CPU", 1))
        size = max(1, min(actors or cpus, len(plan.blocks)))
        items = [{"index": b.index} for b in plan.blocks]
        ds = ray_ctx.data.from_items(items, override_num_blocks=len(items)).map_batches(
            MeasureActor,
            batch_size=1,
            fn_constructor_args=([shared],),
            compute=ray_ctx.data.ActorPoolStrategy(size=size),
            num_cpus=1,
        )
        by_index: dict[int, tuple[Any, ...]] = {}

        def arrived(row: dict[str, Any]) -> None:
            block = pickle.loads(row["parts"])  # our own workers' results, never input data
            by_index[int(row["index"])] = block
            parts = block[0]
            if progress is not None:
                progress(sum(len(rows) for rows, _ in parts))

        _collect(ray_ctx, ds, arrived)
    parts = [p for i in range(len(plan.blocks)) for p in by_index[i][0]]
    from converters._common import Notes

    from .pipeline import note_findings
    from .quality import QualityLint

    lint = QualityLint()
    notes = Notes()
    for i in range(len(plan.blocks)):  # in block order: first rows and examples as the local engine has them
        lint.merge(by_index[i][2])
        notes.merge(Notes.from_dict(by_index[i][3]))
    skipped = Skipped()
    for i in range(len(plan.blocks)):
        for row, code, message in by_index[i][1]:
            skipped.add(row, code, message)
    rows_read: int | None = None
    if sample is not None:
        import numpy as np

        n = sum(len(rows) for rows, _ in parts)
        chosen, rows_read = reservoir_sample(((i, None) for i in range(n)), sample)
        keep = np.zeros(n, dtype=bool)
        keep[[i for i, _ in chosen]] = True
        at, picked = 0, []
        for rows, bc in parts:
            k = keep[at : at + len(rows)]
            at += len(rows)
            if k.any():
                picked.append(_subset(rows, bc, k))
        parts = picked
    col = Collector()
    for rows, bc in parts:
        col.add(rows, bc)
    counts = col.result(mspec.mask_source)
    mml = model_max_length if model_max_length is not None else tokenizer_max_length(loaded)
    result = stats_from_counts(
        counts,
        seq_lengths=DEFAULT_SEQ_LENGTHS if seq_lengths is None else seq_lengths,
        batch_sizes=DEFAULT_BATCH_SIZES if batch_sizes is None else batch_sizes,
        model_max_length=mml,
        rows_read=None if rows_read is None else rows_read + skipped.total,
        sampled=sample is not None and rows_read > len(counts) + len(counts.rejected),
        skipped=skipped,
        mask_generation_prompt=mask_generation_prompt,
        max_tokens=max_tokens,
    )
    import dataclasses

    # as the local engine orders them: the stats', the quality lint's, then the converter's notes
    return dataclasses.replace(
        result,
        findings=(*result.findings, *lint.findings(), *note_findings(notes)),
        quality=lint.to_dict(),
    )


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
