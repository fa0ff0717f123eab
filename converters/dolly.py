"""Dolly (databricks-dolly-15k): ``instruction``, ``context``, ``response``, ``category``.

The user turn is the instruction, then a blank line and the context when there is one; ``category`` is
metadata and is not part of the conversation.
"""

from __future__ import annotations

from typing import Any

from ._flat import FlatConverter, FlatSpec

SPEC = FlatSpec(user=(("instruction", True), ("context", False)), assistant="response")


class Dolly(FlatConverter):
    name = "dolly"
    description = "instruction, context?, response, category?"

    @classmethod
    def spec_for(cls, columns: list[str]) -> FlatSpec | None:
        return SPEC if {"instruction", "response"} <= set(columns) else None

    @classmethod
    def score(cls, columns: list[str], sample: list[dict[str, Any]]) -> tuple[float, list[str]]:
        cols = set(columns)
        if not {"instruction", "response"} <= cols or not cols & {"context", "category"}:
            return 0.0, []
        matched = [c for c in ("instruction", "context", "response", "category") if c in cols]
        return 0.9 + 0.05 * ("context" in cols) + 0.05 * ("category" in cols), matched
