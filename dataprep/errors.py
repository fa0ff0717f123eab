"""User-facing errors. The CLI catches ``DataprepError`` only; anything else is a bug and propagates.

DataprepError            shown to the user as ``error[code]: message`` + ``hint:``; carries a Finding
+-- UsageError           bad flags or values (exit 2)
+-- UnreadableInput      the input cannot be read at all (exit 2, ``unreadable_input``)
+-- ModelNotFound        the model is neither a folder nor in the local HF cache (exit 2)
+-- MissingDependency    an optional extra is not installed (exit 2)
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
