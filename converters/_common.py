"""What every converter shares: options, rejects, role aliases, content parts, message clean-up."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from dataprep.sources.base import Batch

# Role names seen in the wild -> the four ChatDataset accepts. ``function_call`` and ``observation``
# (LLaMA-Factory's ShareGPT) become an assistant tool call and its tool answer.
ROLE_ALIASES: Mapping[str, str] = {
    "system": "system",
    "user": "user",
    "human": "user",
    "prompter": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "chatgpt": "assistant",
    "model": "assistant",
    "bot": "assistant",
    "tool": "tool",
    "observation": "tool",
    "function": "tool",
    "ipython": "tool",
    "function_call": "function_call",
}

TEXT_PART_TYPES = frozenset({"text", "input_text", "output_text"})
NON_TEXT_PART_TYPES = frozenset(
    {"image", "image_url", "input_image", "audio", "input_audio", "audio_url", "video", "video_url", "file"}
)


class RowReject(Exception):  # noqa: N818 - a control-flow signal, caught per row
    """Raised inside a converter for one record; becomes a Reject with the record's row number."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Reject:
    """An input row that did not make it to the output, with why; one line of the rejects file."""

    row: int
    code: str
    message: str
    record: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {"row": self.row, "code": self.code, "message": self.message, "record": self.record}


@dataclass(frozen=True)
class ConvertOptions:
    """How the user configured the conversion (the CLI flags, as values)."""

    role_map: Mapping[str, str] = field(default_factory=dict)
    system: str | None = None
    take: str | None = None  # "chosen" turns preference pairs into SFT rows
    text_only: bool = False
    all_paths: bool = False  # OASST: every root-to-leaf path instead of the best-ranked one

    def __post_init__(self) -> None:
        # --role-map gpt=god would reject every row as unknown_role: say so once, as a usage error.
        bad = [
            f"{k}={v}"
            for k, v in self.role_map.items()
            if ROLE_ALIASES.get(v, ROLE_ALIASES.get(v.lower())) is None
        ]
        if bad:
            from dataprep.errors import UsageError

            raise UsageError(
                f"--role-map {', '.join(bad)}: the target is not a role",
                hint="map to system, user, assistant or tool (e.g. --role-map gpt=assistant)",
            )


Converted = tuple[list[tuple[int, dict[str, Any]]], list[Reject]]


class Converter:
    """Base of every record shape: a configured callable turning a Batch into conversations + rejects.

    Subclasses set ``name``, implement ``score`` (detection) and ``convert_record``; flat shapes override
    ``convert`` with a vectorized version. ``whole_input`` converters (OASST) get every batch at once.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    whole_input: ClassVar[bool] = False

    def __init__(self, options: ConvertOptions | None = None):
        self.options = options or ConvertOptions()

    @classmethod
    def score(cls, columns: list[str], sample: list[dict[str, Any]]) -> tuple[float, list[str]]:
        """(confidence 0..1, the columns that matched); 0 when the shape does not apply."""
        raise NotImplementedError

    def bind(self, columns: list[str]) -> None:
        """Called once with the whole input's columns before the first batch (flat shapes fix theirs)."""

    def convert_record(self, record: dict[str, Any]) -> dict[str, Any]:
        """One record -> one conversation; raise RowReject for a record that cannot be converted."""
        raise NotImplementedError

    def convert(self, batch: Batch) -> Converted:
        out: list[tuple[int, dict[str, Any]]] = []
        rejects: list[Reject] = []
        for row, rec in zip(batch.row_numbers(), batch.records(), strict=True):
            try:
                out.append((row, self.finish(self.convert_record(rec))))
            except RowReject as r:
                rejects.append(Reject(row, r.code, r.message, rec))
        return out, rejects

    __call__ = convert

    def finish(self, conv: dict[str, Any]) -> dict[str, Any]:
        """Add ``--system`` to a conversation without a system message."""
        sys_text = self.options.system
        msgs = conv["messages"]
        if sys_text and not (msgs and msgs[0].get("role") == "system"):
            conv["messages"] = [{"role": "system", "content": sys_text}, *msgs]
        return conv

    def role(self, raw: Any) -> str:
        """Map a role name through --role-map, then the aliases; unknown names are kept (validation rejects)."""
        if not isinstance(raw, str):
            raise RowReject("unknown_role", f"role {raw!r} is not a string")
        mapped = self.options.role_map.get(raw, raw)
        return ROLE_ALIASES.get(mapped, ROLE_ALIASES.get(mapped.lower(), mapped))


def text_of(value: Any, what: str, *, required: bool = True) -> str | None:
    """A scalar field as text: strings as they are, numbers and booleans as written; else RowReject."""
    if value is None:
        if required:
            raise RowReject("missing_field", f"{what} is missing")
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    raise RowReject("missing_field", f"{what} is a {type(value).__name__}, not text")


def content_text(content: Any, text_only: bool, where: str) -> str:
    """Message content as one string: None -> "", a list of parts -> the text parts joined.

    Image/audio/video parts reject the row (``non_text_content``) unless ``text_only`` keeps the text;
    a part of an unknown type rejects it too, so nothing is skipped without a word.
    """
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        content = [content]
    if not isinstance(content, list):
        return text_of(content, where) or ""
    texts: list[str] = []
    for part in content:
        if isinstance(part, str):
            texts.append(part)
            continue
        if not isinstance(part, dict):
            raise RowReject("missing_field", f"{where}: content part {part!r} is not an object")
        kind = part.get("type") or ("text" if part.get("text") is not None else None)
        if kind in TEXT_PART_TYPES:
            t = part.get("text")
            if not isinstance(t, str):
                raise RowReject("missing_field", f"{where}: text part without text")
            texts.append(t)
        elif kind in NON_TEXT_PART_TYPES or any(
            part.get(k) is not None for k in ("image", "image_url", "audio")
        ):
            if not text_only:
                raise RowReject("non_text_content", f"{where} has a {kind or 'media'} part")
        else:
            raise RowReject("non_text_content", f"{where} has a content part of unknown type {kind!r}")
    return "\n".join(texts)


def maybe_json(value: Any) -> Any:
    """A list or object stored as a JSON string (a CSV or Parquet column) -> the parsed value."""
    if isinstance(value, str):
        s = value.lstrip()
        if s[:1] in ("[", "{"):
            try:
                return json.loads(value)
            except ValueError as e:
                raise RowReject(
                    "invalid_json", f"the column holds text that is not valid JSON: {e}"
                ) from None
    return value


def prune_nulls(value: Any) -> Any:
    """Drop null-valued object keys, recursively.

    A JSONL file read through Arrow gives every object the union of the keys seen in its column (absent
    keys become null), so tool schemas and argument objects would grow keys they never had. Pruning on
    every path keeps the output the same whichever way the reader parsed the batch.
    """
    if isinstance(value, dict):
        return {k: prune_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [prune_nulls(v) for v in value]
    return value


def dump_arguments(args: Any) -> str:
    """Tool-call arguments as the JSON string ChatDataset wants (it JSON-dumps non-strings too)."""
    if isinstance(args, str):
        return args
    return json.dumps(prune_nulls(args), ensure_ascii=False, sort_keys=False)


def clean_tool_calls(calls: Any, where: str) -> list[dict[str, Any]]:
    """Tool calls in the canonical key order; ``type`` defaults to function, arguments become a string."""
    calls = maybe_json(calls)
    if not isinstance(calls, list):
        raise RowReject("invalid_tool_call", f"{where}: tool_calls is not a list")
    out = []
    for j, call in enumerate(calls):
        if not isinstance(call, dict):
            raise RowReject("invalid_tool_call", f"{where}: tool call {j} is not an object")
        fn = call.get("function")
        if not isinstance(fn, dict):  # the flat {"name", "arguments"} form
            fn = {"name": call.get("name"), "arguments": call.get("arguments")}
        if fn.get("arguments") is None:
            fn = {**fn, "arguments": {}}
        out.append(
            {
                "id": call.get("id"),
                "type": call.get("type") or "function",
                "function": {"name": fn.get("name"), "arguments": dump_arguments(fn["arguments"])},
            }
        )
    return out


def clean_tools(tools: Any) -> list[dict[str, Any]] | None:
    """The ``tools`` field as a list (ChatDataset also accepts a JSON string); None/empty -> absent."""
    tools = maybe_json(tools)
    if tools is None or tools == [] or tools == "":
        return None
    if isinstance(tools, dict):
        tools = [tools]
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise RowReject("invalid_tool_call", "'tools' is not a list of objects")
    return prune_nulls(tools)
