"""ShareGPT: ``{"conversations": [{"from": "human", "value": ...}, ...], "system"?, "tools"?}``.

Role aliases (human, gpt, chatgpt, model, bot, observation, function_call, ...) map to the four roles;
``function_call`` turns become assistant tool calls and ``observation`` turns their tool answers.
The ``role``/``content`` key variant is read too.
"""

from __future__ import annotations

from typing import Any

from .openai_messages import MessageListConverter, message_keys


class ShareGPT(MessageListConverter):
    name = "sharegpt"
    description = "conversations: [{from, value}] (or role/content), system?, tools?"
    column = "conversations"

    @classmethod
    def score(cls, columns: list[str], sample: list[dict[str, Any]]) -> tuple[float, list[str]]:
        if "conversations" not in columns:
            return 0.0, []
        matched = ["conversations", *[c for c in ("system", "tools") if c in columns]]
        keys = message_keys(sample, "conversations")
        if "from" in keys:
            return 1.0, matched
        return 0.95, matched
