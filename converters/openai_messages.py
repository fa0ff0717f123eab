"""OpenAI chat messages: ``{"messages": [{"role", "content", ...}], "tools"?: [...]}``.

Keeps ``tools``, assistant ``tool_calls`` (arguments made JSON strings), tool messages' ``tool_call_id``,
``name`` and ``reasoning_content``; content given as a list of parts keeps its text; null content is "".
The list may also be a JSON string (a CSV or Parquet column) or the Python literal pandas writes, and may use
ShareGPT ``from``/``value`` keys. Other message keys are dropped, LLaMA-Factory v1's ``loss_weight`` among them:
AutoModel trains every assistant turn, so an assistant turn weighted 0 is noted (``loss_weight_ignored``).
"""

from __future__ import annotations

from typing import Any, ClassVar

from ._common import (
    Converter,
    RowReject,
    clean_tool_calls,
    clean_tools,
    content_text,
    maybe_json,
    note,
    parse_cell,
    text_of,
)


def _first_value(sample: list[dict[str, Any]], column: str) -> Any:
    for rec in sample:
        v = rec.get(column)
        if v is not None:
            try:
                return parse_cell(v)[0]
            except RowReject:
                return None
    return None


def message_keys(sample: list[dict[str, Any]], column: str) -> set[str]:
    """The keys of the first message found in ``column`` of the sample (empty when none)."""
    v = _first_value(sample, column)
    if isinstance(v, list) and v and isinstance(v[0], dict):
        return set(v[0])
    return set()


def _zero_weight(w: Any) -> bool:
    """A ``loss_weight`` of 0 (LLaMA-Factory v1: this turn is not trained), given as a number."""
    return isinstance(w, (int, float)) and not isinstance(w, bool) and w == 0


def convert_messages(conv: Converter, msgs: Any, where: str = "messages") -> list[dict[str, Any]]:
    """A list of chat messages in any common spelling -> canonical messages (not yet validated)."""
    msgs = maybe_json(msgs, where)
    if msgs is None:
        raise RowReject("missing_field", f"{where} is missing")
    if isinstance(msgs, dict):
        msgs = [msgs]
    if not isinstance(msgs, list):
        raise RowReject("missing_field", f"{where} is a {type(msgs).__name__}, not a list of messages")
    text_only = conv.options.text_only
    out: list[dict[str, Any]] = []
    pending: list[str] = []  # ids of ShareGPT function_call turns not answered yet
    for i, m in enumerate(msgs):
        here = f"{where}[{i}]"
        if not isinstance(m, dict):
            raise RowReject("missing_field", f"{here} is not an object")
        # Arrow-read JSONL gives every message the union of keys (absent -> null): null means absent.
        raw_role = m.get("role") if m.get("role") is not None else m.get("from")
        if raw_role is None:
            raise RowReject("missing_field", f"{here} has no role")
        role = conv.role(raw_role)
        raw = m.get("content") if m.get("content") is not None else m.get("value")
        if role == "function_call":
            call = maybe_json(raw, here)
            calls = call if isinstance(call, list) else [call]
            if not all(isinstance(c, dict) for c in calls):
                raise RowReject("invalid_tool_call", f"{here}: a function_call turn holds no call object")
            cleaned = clean_tool_calls(
                [{**c, "id": c.get("id") or f"call_{i}_{j}"} for j, c in enumerate(calls)], here
            )
            pending = [c["id"] for c in cleaned]
            out.append({"role": "assistant", "content": "", "tool_calls": cleaned})
            continue
        msg: dict[str, Any] = {"role": role, "content": content_text(raw, text_only, here)}
        if role == "assistant" and _zero_weight(m.get("loss_weight")):
            note("loss_weight_ignored")
        name = m.get("name")
        if name is not None:
            msg["name"] = text_of(name, f"{here}.name")
        calls = m.get("tool_calls")
        if calls is not None and calls != []:
            msg["tool_calls"] = clean_tool_calls(calls, here)
        tcid = m.get("tool_call_id")
        if tcid is not None:
            msg["tool_call_id"] = text_of(tcid, f"{here}.tool_call_id")
            if msg["tool_call_id"] in pending:
                pending.remove(msg["tool_call_id"])
        elif role == "tool" and pending:
            msg["tool_call_id"] = pending.pop(0)
        reasoning = m.get("reasoning_content")
        if reasoning is not None:
            if not isinstance(reasoning, str):
                raise RowReject("missing_field", f"{here}.reasoning_content is not a string")
            msg["reasoning_content"] = reasoning
        out.append(msg)
    return out


def system_from(
    conv: Converter, record: dict[str, Any], messages: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Prepend a ``system`` column's text to messages that have no system message."""
    sys_text = text_of(record.get("system"), "system", required=False)
    if sys_text and sys_text.strip() and not (messages and messages[0].get("role") == "system"):
        return [{"role": "system", "content": sys_text}, *messages]
    return messages


class MessageListConverter(Converter):
    """A column holding the whole conversation as a list of messages, plus optional system/tools columns."""

    column: ClassVar[str] = "messages"

    def convert_record(self, record: dict[str, Any]) -> dict[str, Any]:
        messages = convert_messages(self, record.get(self.column), self.column)
        conv: dict[str, Any] = {"messages": system_from(self, record, messages)}
        tools = clean_tools(record.get("tools"))
        if tools is not None:
            conv["tools"] = tools
        return conv


class OpenAIMessages(MessageListConverter):
    name = "openai_messages"
    description = "messages: [{role, content, tool_calls?, tool_call_id?, reasoning_content?}], tools?"
    column = "messages"

    @classmethod
    def score(cls, columns: list[str], sample: list[dict[str, Any]]) -> tuple[float, list[str]]:
        if "messages" not in columns:
            return 0.0, []
        matched = ["messages", *[c for c in ("tools", "system") if c in columns]]
        keys = message_keys(sample, "messages")
        if "role" in keys:
            return 1.0, matched
        if "from" in keys:
            return 0.9, matched
        return 0.85, matched
