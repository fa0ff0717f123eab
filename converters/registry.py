"""The one registry of record shapes (name -> converter class) and detection from columns + a sample.

The registry is a tuple built here, not filled by import side effects; an unknown name is an error that
lists the valid ones. ``detect`` scores every shape and picks the best; nothing matching, or two shapes
tying for the best score, is ``unknown_schema`` with the columns and the flags that would fix it.
Preference markers (chosen/rejected columns, a KTO label) outrank the conversation columns beside them,
which are then the prompt: such a record is preference data whatever SFT shape its other columns match.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dataprep.errors import FindingError, UsageError
from dataprep.findings import finding

from ._common import Converter
from .alpaca import Alpaca
from .dolly import Dolly
from .oasst import OASST
from .openai_messages import OpenAIMessages
from .prompt_completion import PromptCompletion
from .refusals import KTO, Preference, PretrainingText
from .sharegpt import ShareGPT

SHAPES: tuple[type[Converter], ...] = (
    OpenAIMessages,
    ShareGPT,
    Alpaca,
    PromptCompletion,
    Dolly,
    OASST,
    Preference,
    KTO,
    PretrainingText,
)
PREFERENCE_SHAPES = frozenset({Preference.name, KTO.name})


def converters() -> dict[str, type[Converter]]:
    """Every shape by name, in the order detection lists them."""
    return {c.name: c for c in SHAPES}


def names() -> list[str]:
    return [c.name for c in SHAPES]


def get(name: str) -> type[Converter]:
    """The converter class for ``name``; an unknown name is a UsageError listing the valid names."""
    table = converters()
    if name not in table:
        raise UsageError(f"unknown format {name!r}", hint="valid formats: " + ", ".join(table))
    return table[name]


@dataclass(frozen=True)
class Detection:
    """The shape chosen for an input, how sure detection is (0..1), and the columns that decided it."""

    shape: str
    confidence: float
    matched: tuple[str, ...]
    forced: bool = False
    candidates: tuple[tuple[str, float], ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "shape": self.shape,
            "confidence": self.confidence,
            "matched": list(self.matched),
            "forced": self.forced,
            "candidates": [{"shape": s, "confidence": c} for s, c in self.candidates],
        }


def _unknown(columns: list[str], why: str) -> FindingError:
    return FindingError(
        finding(
            "unknown_schema",
            f"{why}; columns: {', '.join(columns) if columns else '(none)'}",
            hint=(
                "force a shape with $[fmt] NAME (" + ", ".join(names()) + ") or map columns with "
                "$[mapping] target=source (e.g. $[mapping] instruction=question $[mapping] output=answer)"
            ),
            columns=list(columns),
        )
    )


def detect(columns: list[str], sample: list[dict[str, Any]]) -> Detection:
    """Score every shape on the column names and a few records; raise ``unknown_schema`` when unsure."""
    scored = []
    for conv in SHAPES:
        score, matched = conv.score(list(columns), sample)
        if score > 0:
            scored.append((round(score, 3), conv.name, tuple(matched)))
    scored.sort(key=lambda s: -s[0])
    if not scored:
        raise _unknown(columns, "no record shape matches the columns")
    pool = [s for s in scored if s[1] in PREFERENCE_SHAPES] or scored
    if len(pool) > 1 and pool[0][0] == pool[1][0]:
        raise _unknown(columns, f"the shapes {pool[0][1]} and {pool[1][1]} match equally well")
    best = pool[0]
    return Detection(best[1], best[0], best[2], candidates=tuple((n, s) for s, n, _ in scored))


def forced(name: str, columns: list[str], sample: list[dict[str, Any]]) -> Detection:
    """The Detection for ``--format NAME`` (validated name; the score is reported, not required)."""
    conv = get(name)
    score, matched = conv.score(list(columns), sample)
    return Detection(name, round(score, 3), tuple(matched), forced=True)
