"""``--engine local|ray`` and ``--ray-address`` for the commands that read whole datasets (normalize, stats).

The commands add ``@engine_options`` and pass the values to ``dataprep.engine``'s ``normalize_on`` / ``stats_on``,
which pick the engine; Ray is imported only when the ray engine runs.
"""

from __future__ import annotations

from collections.abc import Callable

import click

from ..engine import ENGINES


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
