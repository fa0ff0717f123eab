"""Alpaca: ``instruction``, ``input`` (optional), ``output``, optional ``system`` and ``history``.

The user turn is the instruction, then a blank line and the input when there is one; ``history`` pairs
([question, answer], ...) come before it as earlier turns.
"""

from __future__ import annotations

from typing import Any

from ._flat import FlatConverter, FlatSpec

SPEC = FlatSpec(user=(("instruction", True), ("input", False)), assistant="output", history="history")


class Alpaca(FlatConverter):
    name = "alpaca"
    description = "instruction, input?, output, system?, history?"

    @classmethod
    def spec_for(cls, columns: list[str]) -> FlatSpec | None:
        return SPEC if {"instruction", "output"} <= set(columns) else None

    @classmethod
    def score(cls, columns: list[str], sample: list[dict[str, Any]]) -> tuple[float, list[str]]:
        if cls.spec_for(columns) is None:
            return 0.0, []
        matched = [c for c in SPEC.columns if c in columns]
        return (0.95 if "input" in columns else 0.9), matched
