"""Atomic output: write to a temp file beside the target, then rename; refuse to overwrite an input."""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from .errors import DataprepError, OutputNotWritable
from .findings import finding


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    pa, pb = Path(a), Path(b)
    try:
        return pa.exists() and pb.exists() and os.path.samefile(pa, pb)
    except OSError:
        return False


def overwrites_input(out: str | os.PathLike, src: str | os.PathLike) -> bool:
    """True when writing ``out`` would replace ``src`` or a file ``src`` reads: a folder of shards (any file
    under it) or a glob (any file it matches)."""
    out_p, src_s = Path(out), str(src)
    src_p = Path(src_s).expanduser()
    if out_p.resolve() == src_p.resolve() or same_file(out_p, src_p):
        return True
    if not out_p.exists():
        return False
    if src_p.is_dir():
        return src_p.resolve() in out_p.resolve().parents
    if glob.has_magic(src_s):
        return any(same_file(out_p, m) for m in glob.iglob(os.path.expanduser(src_s), recursive=True))
    return False


def check_output_path(out: str | os.PathLike, inputs: list[str | os.PathLike], force: bool = False) -> None:
    """Refuse OUT when it is one of the inputs (always) or exists (unless ``force``)."""
    out_p = Path(out)
    for src in inputs:
        if str(src) == "-":
            continue
        if overwrites_input(out_p, src):
            raise DataprepError(
                finding("output_would_overwrite_input", f"{out}: the output path is the input {src}")
            )
    if out_p.exists() and not force:
        raise DataprepError(finding("output_exists", f"{out}: already exists"))


def _chmod_like_open(fd: int) -> None:
    """mkstemp makes 0600 files; give the output the mode open() would (0666 less the umask)."""
    mask = os.umask(0)
    os.umask(mask)
    os.fchmod(fd, 0o666 & ~mask)


# OS errors that only a write raises: inside an atomic block they are the output's, whatever else the block does
# (an input read never fails with these)
_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})
_WRITE_TEXTS = ("No space left", "Read-only file system", "File too large", "Disk quota exceeded")
TEMP_SUFFIX = ".tmp"


def _temp_prefix(target: Path) -> str:
    """``.NAME.PID.``: the pid tells a later run whether the writer of a leftover temp file is still alive."""
    return f".{target.name}.{os.getpid()}."


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's process: leave its file alone
    return True


def remove_stale_temps(target: str | os.PathLike) -> list[Path]:
    """Remove the temp files an earlier run left beside ``target`` when it was killed (SIGKILL, power loss):
    ``.NAME.PID.*.tmp`` whose PID is no longer running. Returns what was removed."""
    target = Path(target)
    removed: list[Path] = []
    try:
        candidates = list(target.parent.glob(f".{glob.escape(target.name)}.*{TEMP_SUFFIX}"))
    except OSError:
        return removed
    for p in candidates:
        parts = p.name[len(target.name) + 2 :].split(".")
        if not parts or not parts[0].isdigit() or int(parts[0]) == os.getpid() or _pid_alive(int(parts[0])):
            continue
        with contextlib.suppress(OSError):
            p.unlink()
            removed.append(p)
    return removed


def _is_write_error(err: BaseException) -> bool:
    if not isinstance(err, OSError):
        return False
    return err.errno in _WRITE_ERRNOS or any(t in str(err) for t in _WRITE_TEXTS)


def _make_temp(target: Path) -> tuple[int, str]:
    """The temp file beside ``target`` (its folder created), stale temps of killed runs removed; any OS error is
    the output's (``OutputNotWritable``)."""
    try:
        if target.is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(target))
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(target)
        return tempfile.mkstemp(prefix=_temp_prefix(target), suffix=TEMP_SUFFIX, dir=target.parent)
    except OSError as err:
        raise OutputNotWritable(target, err) from None


def _finish(tmp: str, target: Path) -> None:
    try:
        os.replace(tmp, target)
    except OSError as err:
        raise OutputNotWritable(target, err) from None


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Yield a file object; on success it replaces ``path`` in one rename, on error (or a signal) it vanishes.

    A write error (full disk, read-only filesystem, a size limit...) becomes ``OutputNotWritable`` naming
    ``path``; other exceptions pass through unchanged.
    """
    target = Path(path)
    fd, tmp = _make_temp(target)
    _chmod_like_open(fd)
    try:
        try:
            with os.fdopen(fd, mode, encoding=None if binary_mode(mode) else encoding,
                           newline=None if binary_mode(mode) else "") as fh:  # fmt: skip
                yield fh
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as err:
            if _is_write_error(err):
                raise OutputNotWritable(target, err) from None
            raise
        _finish(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def binary_mode(mode: str) -> bool:
    return "b" in mode


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path for writers that want a path (pyarrow, polars); renamed onto ``path`` on success."""
    target = Path(path)
    fd, tmp = _make_temp(target)
    _chmod_like_open(fd)
    os.close(fd)
    try:
        try:
            yield Path(tmp)
        except OSError as err:
            if _is_write_error(err):
                raise OutputNotWritable(target, err) from None
            raise
        _finish(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
