"""Atomic output: write to a temp file beside the target, then rename; refuse to overwrite an input."""

from __future__ import annotations

import contextlib
import glob
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from .errors import DataprepError
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


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Yield a file object; on success it replaces ``path`` in one rename, on error it vanishes."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    binary = "b" in mode
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    _chmod_like_open(fd)
    try:
        with os.fdopen(fd, mode, encoding=None if binary else encoding, newline=None if binary else "") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path for writers that want a path (pyarrow, polars); renamed onto ``path`` on success."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    _chmod_like_open(fd)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
