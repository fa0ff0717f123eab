"""Ray plumbing both engines share: import or connect to Ray, quiet Ray Data, and gather the (small) rows a
dataset's blocks return, raising a worker's DataprepError on the driver as it was."""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
from collections.abc import Callable, Iterator
from typing import Any

from ..errors import FindingError, MissingDependency, UsageError

RAY_EXTRA_HINT = "pip install 'dataprep[ray]'"


def import_ray() -> Any:
    """The ``ray`` module with Ray Data, or MissingDependency (exit 2) naming the extra to install."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise MissingDependency(
            f"$[engine] ray needs Ray Data, which is not installed ({exc})", hint=RAY_EXTRA_HINT
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
            hint="start a cluster with `ray start --head` and pass $[ray_address] auto (or HOST:PORT), "
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


def _guarded(fn: Callable[[], Any], empty: Any) -> tuple[Any, bytes]:
    """(fn(), b"") or (empty, the pickled DataprepError's finding and exit code).

    A worker's DataprepError (an unreadable block, say) travels back as data: Ray Data re-raises UDF errors
    as its own UserCodeException and drops the original, and the DataprepError subclasses do not pickle.
    """
    from ..errors import DataprepError

    try:
        return fn(), b""
    except DataprepError as err:
        return empty, pickle.dumps((err.finding, err.exit_code))


def _raise_remote(rows: list[dict[str, Any]]) -> None:
    """Raise the first block's error (in block order) on the driver, as the DataprepError it was."""
    from ..errors import DataprepError

    for row in sorted(rows, key=lambda r: int(r["index"])):
        if row.get("error"):
            f, code = pickle.loads(row["error"])  # our own workers' results, never input data
            err = (FindingError if code == FindingError.exit_code else DataprepError)(f)
            err.exit_code = code
            raise err


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
