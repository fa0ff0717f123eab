"""Shapes that are not SFT data, refused with their own codes: preference pairs and lone text.

Preference data (``chosen``/``rejected``) is refused (``preference_data``) unless ``--take chosen``
fine-tunes on the chosen answers; a lone text column is pretraining data (``pretraining_text``).
"""

from __future__ import annotations

from typing import Any

from dataprep.errors import FindingError
from dataprep.findings import finding

from ._common import Converter, ConvertOptions, RowReject, maybe_json, text_of
from .openai_messages import convert_messages

TEXT_COLUMNS = ("text", "content", "document", "body")


class Preference(Converter):
    name = "preference"
    description = "prompt?, chosen, rejected (refused unless --take chosen)"

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
        return 1.0, [c for c in ("prompt", "chosen", "rejected", "system") if c in columns]

    def convert_record(self, record: dict[str, Any]) -> dict[str, Any]:
        chosen = maybe_json(record.get("chosen"))
        prompt = maybe_json(record.get("prompt"))
        if chosen is None:
            raise RowReject("missing_field", "chosen is missing")
        if isinstance(chosen, (list, dict)):
            tail = convert_messages(self, chosen, "chosen")
            if tail and tail[0]["role"] != "assistant" or prompt is None:
                return {"messages": tail}
        else:
            tail = [{"role": "assistant", "content": text_of(chosen, "chosen") or ""}]
        if prompt is None:
            raise RowReject("missing_field", "prompt is missing (chosen holds only the answer)")
        if isinstance(prompt, (list, dict)):
            head = convert_messages(self, prompt, "prompt")
        else:
            head = [{"role": "user", "content": text_of(prompt, "prompt") or ""}]
        return {"messages": head + tail}


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
