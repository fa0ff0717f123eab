"""Shapes that are not SFT data, refused with their own codes: preference data and lone text.

Preference pairs (``chosen``/``rejected``, with the prompt in ``prompt``, or in ``conversations``/``messages`` as
LLaMA-Factory's ShareGPT form has it) and KTO data (one answer per row, labelled desirable or not by
``kto_tag`` or a boolean ``label``) are refused (``preference_data``) unless ``--take chosen`` fine-tunes on the
chosen answers, or on the rows labelled desirable. A lone text column is pretraining data (``pretraining_text``).
"""

from __future__ import annotations

from typing import Any

from dataprep.errors import FindingError
from dataprep.findings import finding

from ._common import Converter, ConvertOptions, RowReject, clean_tools, maybe_json, text_of
from .alpaca import Alpaca
from .dolly import Dolly
from .openai_messages import OpenAIMessages, convert_messages, system_from
from .prompt_completion import PromptCompletion
from .sharegpt import ShareGPT

TEXT_COLUMNS = ("text", "content", "document", "body")
# Where a preference record keeps the prompt the chosen answer replies to, in the order they are looked for.
PROMPT_COLUMNS = ("prompt", "conversations", "messages")


class Preference(Converter):
    name = "preference"
    description = "prompt (or conversations/messages)?, chosen, rejected (refused unless $[take] chosen)"

    def __init__(self, options: ConvertOptions | None = None):
        super().__init__(options)
        if self.options.take != "chosen":
            raise FindingError(
                finding("preference_data", "the input holds preference pairs (chosen/rejected), not SFT rows")
            )

    @classmethod
    def score(cls, columns: list[str], sample: list[dict[str, Any]]) -> tuple[float, list[str]]:
        if not {"chosen", "rejected"} <= set(columns):
            return 0.0, []
        return 1.0, [c for c in (*PROMPT_COLUMNS, "chosen", "rejected", "system", "tools") if c in columns]

    def convert_record(self, record: dict[str, Any]) -> dict[str, Any]:
        """The prompt, then the chosen answer as the last turn(s); ``chosen`` holding the whole conversation
        (TRL's implicit prompt) is taken as it is."""
        chosen = maybe_json(record.get("chosen"), "chosen")
        if chosen is None:
            raise RowReject("missing_field", "chosen is missing")
        where = next((c for c in PROMPT_COLUMNS if record.get(c) is not None), None)
        prompt = maybe_json(record.get(where), where) if where else None
        if isinstance(chosen, (list, dict)):
            tail = convert_messages(self, chosen, "chosen")
        else:
            tail = [{"role": "assistant", "content": text_of(chosen, "chosen") or ""}]
        if tail and tail[0]["role"] != "assistant":
            messages = tail
        elif prompt is None:
            raise RowReject(
                "missing_field",
                "prompt is missing (no prompt, conversations or messages; chosen holds only the answer)",
            )
        elif isinstance(prompt, (list, dict)):
            messages = convert_messages(self, prompt, where or "prompt") + tail
        else:
            messages = [{"role": "user", "content": text_of(prompt, where or "prompt") or ""}] + tail
        conv: dict[str, Any] = {"messages": system_from(self, record, messages)}
        tools = clean_tools(record.get("tools"))
        if tools is not None:
            conv["tools"] = tools
        return conv


# The shapes a KTO row's conversation may take (its label column aside).
KTO_SHAPES: tuple[type[Converter], ...] = (OpenAIMessages, ShareGPT, Alpaca, PromptCompletion, Dolly)


def kto_label(columns: list[str], sample: list[dict[str, Any]]) -> str | None:
    """The column labelling each row desirable or not: ``kto_tag`` (LLaMA-Factory), or ``label`` (TRL's unpaired
    preference) when it holds booleans next to a conversation; a ``label`` of class names is not KTO."""
    if "kto_tag" in columns:
        return "kto_tag"
    if "label" in columns and {"messages", "conversations", "completion"} & set(columns):
        values = [r.get("label") for r in sample if r.get("label") is not None]
        if values and all(isinstance(v, bool) for v in values):
            return "label"
    return None


def _kto_shape(
    columns: list[str], sample: list[dict[str, Any]]
) -> tuple[type[Converter], float, list[str]] | None:
    """The best-scoring conversation shape of a KTO row's other columns (None when none matches)."""
    best = None
    for shape in KTO_SHAPES:
        score, matched = shape.score(columns, sample)
        if score > 0 and (best is None or score > best[1]):
            best = (shape, score, matched)
    return best


def _desirable(value: Any, label: str) -> bool:
    """A KTO label as a bool: true/false, or the strings and 0/1 a CSV may hold; anything else rejects the row."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if value is None:
        raise RowReject("missing_field", f"{label} is missing")
    raise RowReject("missing_field", f"{label} is {value!r}, not true or false")


class KTO(Converter):
    """KTO data: a conversation in any SFT shape plus a desirable/undesirable label. ``--take chosen`` keeps
    the desirable rows, converted by that shape; an undesirable row goes to the rejects (``preference_data``):
    training on it would teach the answer KTO is meant to steer away from."""

    name = "kto"
    description = (
        "a conversation (messages, conversations, prompt/completion...) + kto_tag or a boolean label"
    )

    def __init__(self, options: ConvertOptions | None = None):
        super().__init__(options)
        if self.options.take != "chosen":
            raise FindingError(
                finding(
                    "preference_data",
                    "the input holds KTO data (each row's answer labelled desirable or undesirable by kto_tag "
                    "or a boolean label), not SFT rows",
                    hint="train it with a KTO recipe, or pass $[take] chosen to fine-tune on the rows labelled "
                    "desirable (true); the others go to the rejects file",
                )
            )
        self._label: str | None = None
        self._inner: Converter | None = None

    @classmethod
    def score(cls, columns: list[str], sample: list[dict[str, Any]]) -> tuple[float, list[str]]:
        label = kto_label(columns, sample)
        inner = _kto_shape([c for c in columns if c != label], sample) if label else None
        if inner is None:
            return 0.0, []
        return 1.0, [*inner[2], label]

    def bind(self, columns: list[str]) -> None:
        self._label = "kto_tag" if "kto_tag" in columns else "label"
        rest = [c for c in columns if c != self._label]
        inner = _kto_shape(rest, [])
        if inner is None:
            raise FindingError(
                finding("unknown_schema", f"KTO data whose other columns {rest} are no conversation shape")
            )
        self._inner = inner[0](self.options)
        self._inner.bind(rest)

    def convert_record(self, record: dict[str, Any]) -> dict[str, Any]:
        if self._inner is None:
            self.bind(list(record))
        label = self._label or "label"
        if not _desirable(record.get(label), label):
            raise RowReject(
                "preference_data",
                f"{label} is false: an undesirable answer (KTO), not trained when taking the chosen answers",
            )
        return self._inner.convert_record({k: v for k, v in record.items() if k != label})  # type: ignore[union-attr]


class PretrainingText(Converter):
    name = "pretraining_text"
    description = "a lone text column (refused: pretraining data)"

    def __init__(self, options: ConvertOptions | None = None):
        super().__init__(options)
        raise FindingError(
            finding("pretraining_text", "the input is a lone text column: pretraining data, not chat")
        )

    @classmethod
    def score(cls, columns: list[str], sample: list[dict[str, Any]]) -> tuple[float, list[str]]:
        texts = [c for c in columns if c in TEXT_COLUMNS]
        if len(texts) == 1 and len(columns) <= 3:
            return 0.5, texts
        if len(columns) == 1 and all(isinstance(r.get(columns[0]), str) for r in sample[:20]):
            return 0.4, list(columns)
        return 0.0, []

    def convert_record(self, record: dict[str, Any]) -> dict[str, Any]:  # pragma: no cover - refused above
        raise RowReject("missing_field", "pretraining text has no conversation")
