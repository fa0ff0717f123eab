"""Small row builders the CLI tests share (a module, not fixtures: they are plain functions)."""

from __future__ import annotations

import json
from pathlib import Path


def write_jsonl(path: Path, rows: list[dict], *, ensure_ascii: bool = True) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=ensure_ascii) + "\n" for r in rows), encoding="utf-8")
    return path


def chat(i: int) -> dict:
    """A two-message conversation, distinct for each i."""
    return {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
