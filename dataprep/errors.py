"""User-facing errors. The CLI catches ``DataprepError`` only; anything else is a bug and propagates.

DataprepError            shown to the user as ``error[code]: message`` + ``hint:``; carries a Finding
+-- UsageError           bad flags or values (exit 2)
+-- UnreadableInput      the input cannot be read at all (exit 2, ``unreadable_input``)
+-- ModelNotFound        the model is neither a folder nor in the local HF cache (exit 2)
+-- MissingDependency    an optional extra is not installed (exit 2)
+-- OutputNotWritable    an output cannot be written: full disk, read-only, no permission... (exit 2)
+-- FindingError         a library call stopped on an error-level finding (exit 1), e.g. packed input
"""

from __future__ import annotations

from pathlib import Path

from .findings import EXIT_FINDINGS, EXIT_USAGE, Finding, finding


class DataprepError(Exception):
    exit_code = EXIT_USAGE

    def __init__(self, f: Finding):
        super().__init__(f.message)
        self.finding = f


class UsageError(DataprepError):
    """A request that cannot be done as asked; ``$[param]`` in the message or hint names an option (see
    ``findings``: a Python caller reads ``param``, the CLI its flag)."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(finding("usage_error", message, hint=hint))


def _where(path: str | Path, line: int | None) -> str:
    return f"{path}:{line}" if line is not None else str(path)


class UnreadableInput(DataprepError):
    """``PATH[:LINE]: what is wrong``; ``line`` is 1-based."""

    def __init__(self, path: str | Path, message: str, hint: str | None = None, line: int | None = None):
        self.path, self.line = str(path), line
        super().__init__(finding("unreadable_input", f"{_where(path, line)}: {message}", hint=hint))


class ModelNotFound(DataprepError):
    def __init__(self, message: str, hint: str | None = None):
        super().__init__(finding("model_not_found", message, hint=hint))


class MissingDependency(DataprepError):
    def __init__(self, message: str, hint: str | None = None):
        super().__init__(finding("missing_dependency", message, hint=hint))


class FindingError(DataprepError):
    """Raised where a library call cannot go on past an error-level finding (packed input, say)."""

    exit_code = EXIT_FINDINGS


# errno -> what to do about it, for outputs
_OUTPUT_HINTS = {
    "ENOSPC": "free space on that device, or write the output elsewhere",
    "EDQUOT": "the disk quota is used up: free space, or write the output elsewhere",
    "EFBIG": "the file would pass a size limit (ulimit -f, or the filesystem's): write it elsewhere",
    "EROFS": "that filesystem is read-only: choose another output path",
    "EACCES": "no permission to write there: choose another output path, or fix the folder's permissions",
    "EPERM": "not permitted to write there: choose another output path",
    "EISDIR": "the output path is a folder: give a file path",
    "ENOTDIR": "a part of the output path is a file, not a folder",
    "ENAMETOOLONG": "the output name is too long for the filesystem: shorten it",
    "ENOENT": "a folder on the output path does not exist and cannot be created",
    "EIO": "the device reported an I/O error: check it, or write elsewhere",
}


def os_error_text(err: BaseException) -> tuple[str, str | None]:
    """``(cause, errno name)`` of an OS error: 'No space left on device (ENOSPC)'."""
    import errno as _errno

    code = getattr(err, "errno", None)
    name = _errno.errorcode.get(code) if isinstance(code, int) else None
    text = getattr(err, "strerror", None) or str(err) or type(err).__name__
    return (f"{text} ({name})" if name else text), name


class OutputNotWritable(DataprepError):
    """``PATH: cannot write: cause``; the partial output is already gone (atomic writes)."""

    def __init__(self, path: str | Path, err: BaseException):
        cause, name = os_error_text(err)
        self.path = str(path)
        super().__init__(
            finding(
                "output_not_writable",
                f"{path}: cannot write: {cause}; nothing was left half-written",
                hint=_OUTPUT_HINTS.get(name or "", "choose another output path"),
            )
        )
