"""Prompt/completion and its synonyms, and the conversational form (both sides lists of messages).

Column pairs, in the order they are tried: prompt/completion, prompt/response, context + question +
answer, question/answer, query/response, instruction/response, input/output. In the conversational form
(TRL's) ``prompt`` and ``completion`` hold message lists (or text of them: JSON, or the Python literal pandas'
``to_csv`` writes), read per record; text columns without such a list take the vectorized path.
"""

from __future__ import annotations

from typing import Any

from dataprep.sources.base import Batch

from ._common import RowReject, parse_cell, text_of
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
        v, _ = parse_cell(v)  # only looking: a text prompt that parses is not noted as a Python literal
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

    def _vectorizable(self, batch: Batch, spec: FlatSpec) -> bool:
        """Not when a text prompt or completion opens a list: message lists stored as text (a CSV of the
        conversational form, JSON or pandas' Python literal) are parsed per record, never written as text."""
        if not super()._vectorizable(batch, spec):
            return False
        import pyarrow as pa
        import pyarrow.compute as pc

        table = batch.table
        for col in (spec.user[-1][0], spec.assistant):
            if col in table.column_names:
                values, t = table.column(col), table.schema.field(col).type
                if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
                    opens_list = pc.match_substring_regex(values.cast(pa.large_string()), r"^\s*\[")
                    if pc.any(opens_list).as_py():
                        return False
        return True

    def convert_record(self, record: dict[str, Any], spec: FlatSpec | None = None) -> dict[str, Any]:
        spec = spec or self._spec(list(record))
        p, c = spec.user[-1][0], spec.assistant
        if _is_messages(record.get(p)) or _is_messages(record.get(c)):
            return self._conversational(record, p, c)
        return super().convert_record(record, spec)

    def _conversational(self, record: dict[str, Any], p: str, c: str) -> dict[str, Any]:
        prompt = record.get(p)
        if isinstance(parse_cell(prompt, p)[0], list):
            head = convert_messages(self, prompt, p)
        else:
            head = [{"role": "user", "content": text_of(prompt, p)}]
        completion = record.get(c)
        if isinstance(parse_cell(completion, c)[0], list):
            tail = convert_messages(self, completion, c)
        else:
            tail = [{"role": "assistant", "content": text_of(completion, c)}]
        return {"messages": head + tail}
