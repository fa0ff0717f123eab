"""Whole-dataset jobs on the engine asked for: this machine (the default, nothing beyond the base install) or Ray
Data (``dataprep.engine_ray``, imported only when asked for). Both give the same result types, and the same bytes.

``normalize_on`` and ``stats_on`` pick the engine; ``stats_file`` is the stats command's whole job (tokenizer,
measuring, the per-row file, the check against the installed AutoModel).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import UsageError

if TYPE_CHECKING:  # the CLI imports ENGINES for --help: nothing heavier at import time
    from .pipeline import ConvertSpec

ENGINES = ("local", "ray")


def check_engine(engine: str, ray_address: str | None) -> None:
    if engine not in ENGINES:
        raise UsageError(f"$[engine] {engine!r}", hint="valid engines: " + ", ".join(ENGINES))
    if engine == "local" and ray_address:
        raise UsageError("$[ray_address] needs $[engine] ray", hint="add $[engine] ray")


def normalize_on(
    engine: str,
    inp: str | Path,
    out: str | Path,
    spec: ConvertSpec | None = None,
    *,
    ray_address: str | None = None,
    merge: bool = False,
    **kwargs: Any,
) -> Any:
    """``normalize(inp, out, spec, **kwargs)`` on ``engine``; a NormalizeResult (RayNormalizeResult on Ray).

    The local engine always writes one file, so ``merge`` changes nothing there.
    """
    check_engine(engine, ray_address)
    if engine == "local":
        from .normalize import normalize

        return normalize(inp, out, spec, **kwargs)
    if kwargs.get("max_tokens") is not None:
        raise UsageError(
            "$[max_tokens] is not available with $[engine] ray yet",
            hint="normalize locally with $[max_tokens], or set long rows aside in preflight / stats $[max_tokens]",
        )
    from .engine_ray import normalize_ray

    return normalize_ray(inp, out, spec, ray_address=ray_address, merge=merge, **kwargs)


def stats_on(
    engine: str,
    path: str | Path,
    loaded: Any,
    spec: ConvertSpec | None = None,
    *,
    ray_address: str | None = None,
    workers: int | str = 1,
    **stats_kwargs: Any,
) -> Any:
    """``stats.stats_of_input(path, loaded, spec, **stats_kwargs)`` on ``engine``; a StatsResult.

    ``workers``: measuring processes (a number or "auto"). With Ray, a number > 1 fixes the number of measuring
    actors (default and "auto": one per cluster CPU).
    """
    check_engine(engine, ray_address)
    if engine == "local":
        from .stats import stats_of_input

        return stats_of_input(path, loaded, spec, workers=workers, **stats_kwargs)
    if stats_kwargs.get("eval_paths"):
        raise UsageError(
            "$[eval_paths] is not available with $[engine] ray yet", hint="run stats $[eval_paths] locally"
        )
    from .engine_ray import stats_ray

    return stats_ray(
        path,
        loaded,
        spec,
        ray_address=ray_address,
        actors=workers if isinstance(workers, int) and workers > 1 else None,
        **stats_kwargs,
    )


@dataclass(frozen=True)
class StatsRun:
    """What ``stats_file`` did: the stats, the tokenizer they were measured with, the trainer check if asked."""

    result: Any  # stats.StatsResult
    loaded: Any  # tokenizer.LoadedTokenizer
    trainer_check: Any = None  # trainer_check.TrainerCheck

    @property
    def findings(self) -> list[Any]:
        return [
            *self.result.findings,
            *(self.trainer_check.findings() if self.trainer_check is not None else []),
        ]


def stats_file(
    path: str,
    model: str,
    spec: ConvertSpec | None = None,
    *,
    engine: str = "local",
    ray_address: str | None = None,
    chat_template: str | None = None,
    allow_download: bool = False,
    per_row: str | None = None,
    force: bool = False,
    trainer_check: int | None = None,
    mask_generation_prompt: bool = False,
    **stats_kwargs: Any,
) -> StatsRun:
    """Token statistics of ``path`` (any shape the row pipeline reads) through ``model``'s chat template, on
    ``engine``. ``per_row``: also write the per-row counts there (checked before measuring). ``trainer_check``:
    read that many sampled rows again with the installed nemo-automodel (refused first when it is missing).
    ``stats_kwargs``: ``stats_on``'s (workers, seq_lengths, batch_sizes, sample, max_tokens, eval_paths, progress).
    """
    from .errors import FindingError, MissingDependency
    from .findings import finding
    from .stats import check_per_row, write_per_row
    from .tokenizer import load_tokenizer

    if per_row:
        check_per_row(per_row, [path], force=force)
    if trainer_check:
        from .trainer_check import installed_automodel

        if installed_automodel() is None:
            raise MissingDependency(
                "$[trainer_check] reads rows with AutoModel's own ChatDataset: nemo-automodel is not installed",
                hint="run it in the training environment (pip install nemo-automodel), or drop $[trainer_check]",
            )
    loaded = load_tokenizer(model, chat_template=chat_template, allow_download=allow_download)
    if loaded.template is None:
        raise FindingError(
            finding(
                "chat_template_missing", f"{model}: the tokenizer has no chat template to measure through"
            )
        )
    result = stats_on(
        engine,
        path,
        loaded,
        spec,
        ray_address=ray_address,
        mask_generation_prompt=mask_generation_prompt,
        **stats_kwargs,
    )
    if per_row:
        write_per_row(per_row, result.counts)
    checked = None
    if trainer_check:
        checked = _trainer_check(path, spec, result.counts, loaded, trainer_check, mask_generation_prompt)
    return StatsRun(result, loaded, checked)


def _trainer_check(path: str, spec: Any, counts: Any, loaded: Any, n: int, mgp: bool) -> Any:
    """A seeded sample of the rows stats measured (or rejected), read again by the installed AutoModel."""
    from .pipeline import conversations
    from .stats import reservoir_sample
    from .trainer_check import check_rows

    known = set(counts.rows.tolist()) | {r for r, _, _ in counts.rejected}
    rows, _ = reservoir_sample(((r, c) for r, c in conversations(path, spec) if r in known), n)
    return check_rows(rows, counts, loaded, mask_generation_prompt=mgp)
