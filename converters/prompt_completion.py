"""Prompt/completion and its synonyms, and the conversational form (both sides lists of messages).

Column pairs, in the order they are tried: prompt/completion, prompt/response, context + question +
answer, question/answer, query/response, instruction/response, input/output. In the conversational form
(TRL's) ``prompt`` and ``completion`` hold message lists (or JSON strings of them).
"""

from __future__ import annotations

from typing import Any

from ._common import RowReject, maybe_json, text_of
from ._flat import FlatConverter, FlatSpec
from .openai_messages import convert_messages

PAIRS: tuple[tuple[str, str], ...] = (
    ("prompt", "completion"),
    ("prompt", "response"),
    ("question", "answer"),
    ("query", "response"),
    ("instruction", "response"),
    ("input", "output"),
)


def _is_messages(v: Any) -> bool:
    try:
        v = maybe_json(v)
    except RowReject:
        return False
    return isinstance(v, list) and (not v or isinstance(v[0], dict))


class PromptCompletion(FlatConverter):
    name = "prompt_completion"
    description = "prompt/completion (or response), question/answer (+ context), query/response, input/output"

    @classmethod
    def spec_for(cls, columns: list[str]) -> FlatSpec | None:
        cols = set(columns)
        for p, c in PAIRS:
            if p in cols and c in cols:
                if (p, c) == ("question", "answer") and "context" in cols:
                    return FlatSpec(user=(("context", False), ("question", True)), assistant="answer")
                return FlatSpec(user=((p, True),), assistant=c)
        return None

    @classmethod
    def score(cls, columns: list[str], sample: list[dict[str, Any]]) -> tuple[float, list[str]]:
        spec = cls.spec_for(columns)
        if spec is None:
            return 0.0, []
        matched = [c for c in spec.columns if c in columns]
        first = next((r.get(spec.user[-1][0]) for r in sample if r.get(spec.user[-1][0]) is not None), None)
        if first is not None and _is_messages(first):
            return 0.9, matched
        return (0.85 if len(spec.user) > 1 else 0.8), matched

    def convert_record(self, record: dict[str, Any], spec: FlatSpec | None = None) -> dict[str, Any]:
        spec = spec or self._spec(list(record))
        p, c = spec.user[-1][0], spec.assistant
        if _is_messages(record.get(p)) or _is_messages(record.get(c)):
            return self._conversational(record, p, c)
        return super().convert_record(record, spec)

    def _conversational(self, record: dict[str, Any], p: str, c: str) -> dict[str, Any]:
        prompt = record.get(p)
        if isinstance(maybe_json(prompt), list):
            head = convert_messages(self, prompt, p)
        else:
            head = [{"role": "user", "content": text_of(prompt, p)}]
        completion = record.get(c)
        if isinstance(maybe_json(completion), list):
            tail = convert_messages(self, completion, c)
        else:
            tail = [{"role": "assistant", "content": text_of(completion, c)}]
        return {"messages": head + tail}
