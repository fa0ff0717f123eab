"""``normalize`` on Ray: each block converted by a Ray Data task into its own output and rejects shards, then
the shards moved into place (a folder) or concatenated in input order (``merge``)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..normalize import FIRST_ROWS, NormalizeResult, check_dedup, line_digest
from ..pipeline import ConvertSpec
from .blocks import DEFAULT_BLOCK_BYTES, DEFAULT_BLOCK_ROWS, BlockJob, InputPlan, _plan_on_ray, _refuse_stdin
from .session import LazyRay, _collect, _guarded, import_ray

SHARD_NAME = "part-{:05d}.jsonl"


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


@dataclass(frozen=True)
class ConvertJob(BlockJob):
    """Everything a worker needs for normalize (pickled once into the Ray Data operator)."""

    out_dir: str
    rejects_dir: str


def convert_block(job: ConvertJob, index: int) -> BlockCounts:
    """Convert one block with the local engine's functions; write its output and rejects shards (atomically)."""
    from ..atomic import atomic_write
    from ..normalize import write_converted

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
                h = line_digest(line.rstrip(b"\n"))
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
    dedup: bool | str = False,
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
    from ..atomic import atomic_write
    from ..normalize import Notes, check_outputs, default_rejects_path

    spec = spec or ConvertSpec()
    dedup = check_dedup(dedup)
    if dedup == "near":
        # the first of a near-duplicate cluster is a question of input order over every shard: one sequential
        # index, which Ray's independent block workers do not have
        raise UsageError(
            "$[dedup] near is not available with $[engine] ray",
            hint="normalize locally with $[dedup] near (about 1 KB of memory per kept row)",
        )

    inp, out = str(inp), Path(out)
    rejects_path = (
        Path(rejects)
        if rejects is not None
        else (default_rejects_path(out) if merge else default_rejects_dir(out))
    )
    check_outputs(inp, out, rejects_path, force=force, hint="write rejects to another path")
    if dedup and not merge:
        raise UsageError(
            "$[dedup] with $[engine] ray needs $[merge] (duplicates are found across every shard)",
            hint="add $[merge], or run $[engine] local $[dedup] on the merged output",
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
