"""What every converter shares: options, rejects, role aliases, content parts, message clean-up."""

from __future__ import annotations

import ast
import json
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, ClassVar

from dataprep import messages as _messages
from dataprep.safejson import loads as safe_loads
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

# the content-part types, as the schema (dataprep.messages) names them
TEXT_PART_TYPES, NON_TEXT_PART_TYPES = _messages.TEXT_PART_TYPES, _messages.NON_TEXT_PART_TYPES


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
                f"$[role_map] {', '.join(bad)}: the target is not a role",
                hint="map to system, user, assistant or tool (e.g. $[role_map] gpt=assistant)",
            )


Converted = tuple[list[tuple[int, dict[str, Any]]], list[Reject]]

NOTE_FIRST_ROWS = 20  # row numbers kept per note code (the count is always the whole)


@dataclass
class Notes:
    """Facts about rows that were converted, worth one finding per input but no reject: code -> count, rows.

    A converter records them with ``note(code)`` while it converts a record; a row counts once per code, and
    only when it converts (a RowReject drops its notes: the rejects file already says what happened to it).
    normalize turns each code into one finding (``python_literal_cells``, ``loss_weight_ignored``).
    """

    counts: dict[str, int] = field(default_factory=dict)
    rows: dict[str, list[int]] = field(default_factory=dict)

    def add(self, code: str, row: int) -> None:
        self.counts[code] = self.counts.get(code, 0) + 1
        first = self.rows.setdefault(code, [])
        if len(first) < NOTE_FIRST_ROWS:
            first.append(row)

    def merge(self, other: Notes) -> None:
        """Add ``other``'s counts; its rows come after ours (merge in input order)."""
        for code, n in other.counts.items():
            self.counts[code] = self.counts.get(code, 0) + n
            first = self.rows.setdefault(code, [])
            first.extend(other.rows.get(code, [])[: NOTE_FIRST_ROWS - len(first)])

    def to_dict(self) -> dict[str, Any]:
        return {"counts": dict(self.counts), "rows": {k: list(v) for k, v in self.rows.items()}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Notes:
        return cls(dict(d.get("counts", {})), {k: list(v) for k, v in d.get("rows", {}).items()})


# The notes of the record being converted. A context variable rather than an argument, so that helpers deep
# in a conversion (maybe_json, content parsing) can note what they saw without every caller passing a sink;
# outside a conversion (detection's sample) it is None and noting does nothing.
_ROW_NOTES: ContextVar[set[str] | None] = ContextVar("dataprep_row_notes", default=None)


def note(code: str) -> None:
    """Record a finding code about the record being converted (see ``Notes``); a no-op outside a conversion."""
    codes = _ROW_NOTES.get()
    if codes is not None:
        codes.add(code)


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
        self.notes = Notes()  # of the rows converted so far; normalize reads (and resets) it per run

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
        return self.convert_each(batch, self.convert_record)

    __call__ = convert

    def convert_each(
        self, batch: Batch, convert_record: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> Converted:
        """``convert_record`` on every record of the batch: conversations, rejects, and the notes (``note``) of
        the rows that convert; a rejected row's notes are dropped."""
        out: list[tuple[int, dict[str, Any]]] = []
        rejects: list[Reject] = []
        for row, rec in zip(batch.row_numbers(), batch.records(), strict=True):
            codes: set[str] = set()
            token = _ROW_NOTES.set(codes)
            try:
                conv = self.finish(convert_record(rec))
            except RowReject as r:
                rejects.append(Reject(row, r.code, r.message, rec))
                continue
            finally:
                _ROW_NOTES.reset(token)
            out.append((row, conv))
            for code in codes:
                self.notes.add(code, row)
        return out, rejects

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
            # LLaMA-Factory v1 writes the text of a part under "value"
            t = part.get("text") if part.get("text") is not None else part.get("value")
            if not isinstance(t, str):
                raise RowReject("missing_field", f"{where}: text part without text (no 'text' or 'value')")
            texts.append(t)
        elif kind in NON_TEXT_PART_TYPES or any(
            part.get(k) is not None for k in ("image", "image_url", "audio")
        ):
            if not text_only:
                raise RowReject("non_text_content", f"{where} has a {kind or 'media'} part")
        else:
            raise RowReject("non_text_content", f"{where} has a content part of unknown type {kind!r}")
    return "\n".join(texts)


# A Python literal longer than this is not parsed: ast builds a node per element, so a hostile cell of a
# million "0," costs ~0.5 GB and a second. JSON, parsed first, has no such limit.
MAX_LITERAL_CHARS = 1 << 20
_PLAIN = (str, int, float, bool, type(None))


def _plain(value: Any, depth: int = 0) -> bool:
    """True for JSON-like data: str/int/float/bool/None in lists and str-keyed dicts (no tuple, set, bytes)."""
    if isinstance(value, _PLAIN):
        return True
    if depth > 200:  # the parser refuses deeper nesting anyway
        return False
    if isinstance(value, list):
        return all(_plain(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v, depth + 1) for k, v in value.items())
    return False


def python_literal(text: str) -> Any:
    """A list or dict written as a Python literal (pandas ``to_csv`` writes a cell's ``repr``), or ValueError.

    ``ast.literal_eval`` evaluates literals only (no names, calls or attributes: safe on any text); the result
    must be plain JSON-like data, and over-long or over-nested text is refused rather than parsed.
    """
    if len(text) > MAX_LITERAL_CHARS:
        raise ValueError(f"{len(text)} characters, over the {MAX_LITERAL_CHARS} read as a Python literal")
    try:
        value = ast.literal_eval(text.strip())
    except SyntaxError as e:
        raise ValueError(e.msg) from None
    except ValueError:
        # its message holds a node's memory address: say it in words (the rejects file is deterministic)
        raise ValueError("it holds a name, call or expression, not only literals") from None
    except TypeError as e:  # e.g. a list as a dict key
        raise ValueError(str(e)) from None
    except (MemoryError, RecursionError):
        raise ValueError("too large or too deeply nested") from None
    if not isinstance(value, (list, dict)) or not _plain(value):
        raise ValueError("not a list or dict of plain values (str, int, float, bool, None)")
    return value


def parse_cell(value: Any, what: str = "the column") -> tuple[Any, bool]:
    """(value, read as a Python literal?): text that opens a list or object parsed, other values as they are.

    JSON first; text JSON refuses that is a Python literal (pandas ``to_csv`` of lists/dicts: single quotes,
    None, True) is read too. Text that is neither is ``invalid_json``, naming ``what`` and both errors.
    Pure (notes nothing): for callers that only look, such as a check of whether a column holds messages.
    """
    if isinstance(value, str):
        s = value.lstrip()
        if s[:1] in ("[", "{"):
            try:
                return safe_loads(value), False
            except ValueError as e:
                json_error = str(e)
            try:
                return python_literal(s), True
            except ValueError as e:
                raise RowReject(
                    "invalid_json", f"{what} is neither JSON ({json_error}) nor a Python literal ({e})"
                ) from None
    return value, False


def maybe_json(value: Any, what: str = "the column") -> Any:
    """A list or object stored as text (a CSV or Parquet column) -> the parsed value (``parse_cell``); a Python
    literal is noted as ``python_literal_cells``, so the input's report says which syntax it held."""
    parsed, literal = parse_cell(value, what)
    if literal:
        note("python_literal_cells")
    return parsed


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
    calls = maybe_json(calls, f"{where}.tool_calls")
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
    tools = maybe_json(tools, "tools")
    if tools is None or tools == [] or tools == "":
        return None
    if isinstance(tools, dict):
        tools = [tools]
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise RowReject("invalid_tool_call", "'tools' is not a list of objects")
    return prune_nulls(tools)
