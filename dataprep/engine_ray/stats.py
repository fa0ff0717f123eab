"""``stats`` on Ray: blocks converted and measured in a pool of actors (one tokenizer load each); the per-row
count arrays reduced on the driver, in input order, with the local engine's distribution code."""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import FindingError
from ..findings import finding
from ..pipeline import ConvertSpec
from .blocks import DEFAULT_BLOCK_BYTES, DEFAULT_BLOCK_ROWS, BlockJob, _plan_on_ray, _refuse_stdin
from .session import LazyRay, _collect, _guarded, import_ray

if TYPE_CHECKING:
    from ..stats import StatsResult


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

        from ..measure import Measurer

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

        from ..converters._common import Notes
        from ..measure import batched
        from ..quality import QualityLint

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

    from ..measure import BatchCounts

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
    from ..measure import DEFAULT_BATCH_ROWS, Collector, make_spec
    from ..stats import (
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
        from ..tokenizer import load_tokenizer

        loaded = load_tokenizer(str(loaded_or_model), chat_template=chat_template)
        if loaded.template is None:
            raise FindingError(
                finding(
                    "chat_template_missing",
                    f"{loaded_or_model}: the tokenizer has no chat template to measure through",
                )
            )
    # portable: actors on other nodes rebuild the tokenizer from it
    mspec = make_spec(loaded, mask_generation_prompt=mask_generation_prompt, portable=True)
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
    from ..converters._common import Notes
    from ..pipeline import note_findings
    from ..quality import QualityLint

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
