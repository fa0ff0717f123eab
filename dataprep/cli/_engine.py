"""``--engine local|ray`` and ``--ray-address`` for the commands that read whole datasets (normalize, stats).

The commands stay thin: they add ``@engine_options`` and call ``dispatch_normalize`` / ``dispatch_stats``
instead of the library function; the local engine is the default and needs nothing beyond the base install.
Ray is imported only when ``--engine ray`` runs (``dataprep.engine_ray``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import click

from ..errors import UsageError

ENGINES = ("local", "ray")


def engine_options(f: Callable | None = None, *, merge: bool = False) -> Callable:
    """--engine and --ray-address (and --merge with ``merge=True``); use as ``@engine_options`` or
    ``@engine_options(merge=True)``."""

    def decorate(fn: Callable) -> Callable:
        if merge:
            fn = click.option(
                "--merge",
                is_flag=True,
                help="--engine ray: write OUT as one file (shards concatenated in input order), "
                "not a folder of part-NNNNN.jsonl shards.",
            )(fn)
        fn = click.option(
            "--ray-address",
            metavar="auto|HOST:PORT",
            help="--engine ray: the cluster to run on [default: $RAY_ADDRESS, else a local Ray].",
        )(fn)
        fn = click.option(
            "--engine",
            type=click.Choice(ENGINES),
            default="local",
            show_default=True,
            help="Run on this machine, or on Ray Data (needs pip install 'dataprep[ray]').",
        )(fn)
        return fn

    return decorate(f) if f is not None else decorate


def _check_local(engine: str, ray_address: str | None) -> None:
    if engine not in ENGINES:
        raise UsageError(f"--engine {engine!r}", hint="valid engines: " + ", ".join(ENGINES))
    if engine == "local" and ray_address:
        raise UsageError("--ray-address needs --engine ray", hint="add --engine ray")


def dispatch_normalize(
    engine: str, ray_address: str | None, merge: bool, inp: str | Path, out: str | Path, **kwargs: Any
) -> Any:
    """``normalize(inp, out, **kwargs)`` on the chosen engine; returns a NormalizeResult.

    The local engine always writes one file, so ``merge`` changes nothing there.
    """
    _check_local(engine, ray_address)
    if engine == "local":
        from ..normalize import normalize

        return normalize(inp, out, **kwargs)
    if kwargs.get("dedup") == "near":
        # the first of a near-duplicate cluster is a question of input order over every shard: one sequential
        # index, which Ray's independent block workers do not have
        raise UsageError(
            "--dedup near is not available with --engine ray",
            hint="normalize locally with --dedup near (about 1 KB of memory per kept row)",
        )
    if kwargs.get("dedup") == "exact":
        kwargs["dedup"] = True
    if kwargs.get("max_tokens") is not None:
        raise UsageError(
            "--max-tokens is not available with --engine ray yet",
            hint="normalize locally with --max-tokens, or set long rows aside in preflight / stats --max-tokens",
        )
    from ..engine_ray import normalize_ray

    return normalize_ray(inp, out, ray_address=ray_address, merge=merge, **kwargs)


def dispatch_stats(
    engine: str,
    ray_address: str | None,
    path: str,
    loaded: Any,
    *,
    convert: Mapping[str, Any],
    workers: int | str = 1,
    **stats_kwargs: Any,
) -> Any:
    """``compute_stats(iter_conversations(path, **convert), loaded, **stats_kwargs)`` on the chosen engine.

    ``convert``: iter_conversations' options (fmt, mapping, role_map, system, take, text_only, encoding).
    ``workers``: measure_conversations' (a number or "auto"). With Ray, a number > 1 fixes the number of
    measuring actors (default and "auto": one per cluster CPU).
    """
    _check_local(engine, ray_address)
    if engine == "local":
        import dataclasses

        from converters._common import Notes

        from ..normalize import iter_conversations, note_findings
        from ..stats import Skipped, compute_stats

        skipped = Skipped()
        notes = Notes()
        rows = iter_conversations(path, **convert, on_reject=skipped.add_reject, notes=notes)
        result = compute_stats(rows, loaded, workers=workers, skipped=skipped, **stats_kwargs)
        # what the converter noticed on rows it kept (pandas literals, loss_weight): one finding per code
        return dataclasses.replace(result, findings=(*result.findings, *note_findings(notes)))
    if stats_kwargs.get("eval_paths"):
        from ..errors import UsageError

        raise UsageError("--eval is not available with --engine ray yet", hint="run stats --eval locally")
    from ..engine_ray import stats_ray

    return stats_ray(
        path,
        loaded,
        ray_address=ray_address,
        actors=workers if isinstance(workers, int) and workers > 1 else None,
        **convert,
        **stats_kwargs,
    )
