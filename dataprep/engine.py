"""Which engine runs a whole-dataset job: this machine (the default, nothing beyond the base install) or Ray Data
(``dataprep.engine_ray``, imported only when asked for). Both give the same result types, and the same bytes."""

from __future__ import annotations

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
    if kwargs.get("dedup") == "near":
        # the first of a near-duplicate cluster is a question of input order over every shard: one sequential
        # index, which Ray's independent block workers do not have
        raise UsageError(
            "$[dedup] near is not available with $[engine] ray",
            hint="normalize locally with $[dedup] near (about 1 KB of memory per kept row)",
        )
    if kwargs.get("dedup") == "exact":
        kwargs["dedup"] = True
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
