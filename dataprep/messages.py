"""The conversation schema AutoModel's ChatDataset reads, and the pure function that checks it.

A conversation is JSON-native data; the normalized output holds exactly these keys, in this order::

    {"messages": [message, ...], "tools"?: [function schema, ...]}
    message: {"role": "system" | "user" | "assistant" | "tool", "content": str, "name"?: str,
              "tool_calls"?: [{"id": str, "type": "function", "function": {"name": str, "arguments": str}}],
              "tool_call_id"?: str, "reasoning_content"?: str}

(``arguments`` is a JSON document as a string.) ``validate_conversation`` holds a row to it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .safejson import loads as safe_loads

ROLES: tuple[str, ...] = ("system", "user", "assistant", "tool")
MESSAGE_KEYS: tuple[str, ...] = ("role", "content", "name", "tool_calls", "tool_call_id", "reasoning_content")


@dataclass(frozen=True)
class Problem:
    """One broken invariant: a catalogued row code, a message, and the message index (None: the row)."""

    code: str
    message: str
    index: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "index": self.index}


def _blank(s: Any) -> bool:
    return not isinstance(s, str) or not s.strip()


def _check_tool_call(i: int, j: int, call: Any) -> Problem | None:
    where = f"message {i}: tool call {j}"
    if not isinstance(call, dict):
        return Problem("invalid_tool_call", f"{where} is not an object", i)
    if _blank(call.get("id")):
        return Problem("invalid_tool_call", f"{where} has no id", i)
    if call.get("type", "function") != "function":
        return Problem("invalid_tool_call", f"{where} has type {call.get('type')!r}, not 'function'", i)
    fn = call.get("function")
    if not isinstance(fn, dict) or _blank(fn.get("name")):
        return Problem("invalid_tool_call", f"{where} has no function name", i)
    args = fn.get("arguments")
    if not isinstance(args, str):
        return Problem("invalid_tool_call", f"{where}: arguments are not a JSON string", i)
    try:
        safe_loads(args)
    except ValueError:
        return Problem("invalid_tool_call", f"{where}: arguments are not valid JSON", i)
    return None


def validate_conversation(conv: Any) -> list[Problem]:
    """Check one conversation against the schema ChatDataset accepts; return every problem found.

    Invariants (each broken one is a Problem with a catalogued code and the message index):

    - the row is an object with a non-empty ``messages`` list of objects (``missing_field``);
      ``tools``, when present, is a list of objects (``invalid_tool_call``);
    - every role is one of system, user, assistant, tool (``unknown_role``);
    - ``content`` is a string (``missing_field``); system and user content is not blank, and neither is the
      content of an assistant message without tool calls (``empty_content``);
    - a system message appears only at index 0 (``role_order``);
    - at least one assistant message has non-blank content (``no_assistant_turn``);
    - assistant ``tool_calls`` are ``{"id", "type": "function", "function": {"name", "arguments"}}`` with
      ``arguments`` a JSON string (``invalid_tool_call``);
    - a tool message has a non-empty ``tool_call_id`` (``invalid_tool_call``) that an earlier assistant
      message's tool call carries (``role_order``);
    - ``reasoning_content``, ``name`` and ``tool_call_id``, when present, are strings (``missing_field``).
    """
    if not isinstance(conv, dict):
        return [Problem("missing_field", "the row is not an object")]
    messages = conv.get("messages")
    if not isinstance(messages, list) or not messages:
        what = "an empty 'messages' list" if isinstance(messages, list) else "no 'messages' list"
        return [Problem("missing_field", f"the row has {what}")]
    problems: list[Problem] = []
    tools = conv.get("tools")
    if tools is not None and (not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools)):
        problems.append(Problem("invalid_tool_call", "'tools' is not a list of objects"))
    call_ids: set[str] = set()
    answered = False
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            problems.append(Problem("missing_field", f"message {i} is not an object", i))
            continue
        role = m.get("role")
        if role not in ROLES:
            problems.append(Problem("unknown_role", f"message {i} has role {role!r}", i))
            continue
        content = m.get("content")
        if not isinstance(content, str):
            problems.append(Problem("missing_field", f"message {i} ({role}) has no string content", i))
            continue
        for key in ("name", "tool_call_id", "reasoning_content"):
            if key in m and not isinstance(m[key], str):
                problems.append(Problem("missing_field", f"message {i}: {key} is not a string", i))
        if role == "system" and i != 0:
            problems.append(Problem("role_order", f"system message at index {i}; system goes only first", i))
        calls = m.get("tool_calls")
        if calls is not None and role != "assistant":
            problems.append(Problem("invalid_tool_call", f"message {i} ({role}) carries tool_calls", i))
        if role == "assistant" and calls is not None:
            if not isinstance(calls, list) or not calls:
                problems.append(
                    Problem("invalid_tool_call", f"message {i}: tool_calls is not a non-empty list", i)
                )
            else:
                for j, call in enumerate(calls):
                    p = _check_tool_call(i, j, call)
                    if p is not None:
                        problems.append(p)
                    if isinstance(call, dict) and isinstance(call.get("id"), str):
                        call_ids.add(call["id"])  # a broken call still has its id: no second finding
        if role == "tool":
            tcid = m.get("tool_call_id")
            if _blank(tcid):
                problems.append(Problem("invalid_tool_call", f"message {i} (tool) has no tool_call_id", i))
            elif tcid not in call_ids:
                problems.append(
                    Problem(
                        "role_order", f"tool message at index {i} answers no earlier tool call {tcid!r}", i
                    )
                )
        elif role in ("system", "user") and not content.strip():
            problems.append(Problem("empty_content", f"message {i} ({role}) has empty content", i))
        elif role == "assistant":
            if content.strip():
                answered = True
            elif not calls:
                problems.append(Problem("empty_content", f"message {i} (assistant) has empty content", i))
    if not answered and not any(
        p.code in ("empty_content", "unknown_role", "missing_field") for p in problems
    ):
        problems.append(Problem("no_assistant_turn", "no assistant message with content"))
    return problems


# -- a whole JSONL file (``dataprep validate``) -----------------------------------------------------------

FIRST_ROWS = 20
_VALIDATE_HINTS = {
    "missing_field": 'each line is {"messages": [{"role", "content"}, ...]}: convert records with `dataprep normalize`',
    "non_text_content": "ChatDataset keeps only the text parts: convert with `dataprep normalize --text-only`, "
    "or use a vision-language recipe",
}
MAX_PROBLEMS = 100


@dataclass(frozen=True)
class ValidateResult:
    """Per-line checks of a messages JSONL: counts by code, the first lines of each, the first problems."""

    path: str
    rows: int
    valid: int
    by_code: dict[str, int]
    first_rows: dict[str, tuple[int, ...]]
    first_message: dict[str, str]
    problems: tuple[dict[str, Any], ...]
    file_problem: str | None = None  # why AutoModel's ChatDataset would not read the file as it is

    @property
    def invalid(self) -> int:
        return self.rows - self.valid

    def findings(self) -> list[Any]:
        from .findings import finding

        out = []
        if self.file_problem:
            out.append(finding("chat_dataset_cannot_read", f"{self.path}: {self.file_problem}"))
        for code, n in sorted(self.by_code.items(), key=lambda kv: (-kv[1], kv[0])):
            rows = self.first_rows[code]
            out.append(
                finding(
                    code,
                    f"{n} line{'s' if n != 1 else ''} (first: line {rows[0]}: {self.first_message[code]})",
                    rows=rows,
                    hint=_VALIDATE_HINTS.get(code),
                    count=n,
                )
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "rows": self.rows,
            "valid": self.valid,
            "invalid": self.invalid,
            "by_code": dict(sorted(self.by_code.items())),
            "problems": list(self.problems),
            "file_problem": self.file_problem,
        }


def _open_lines(path: str):
    """The decompressed bytes of a JSONL file; anything that is not line-oriented text is UnreadableInput."""
    from .errors import UnreadableInput
    from .sources.sniff import open_decompressed, sniff_file

    if path == "-":
        import sys

        return sys.stdin.buffer
    # Sniff the content (not the extension): an empty file, binary garbage, a corrupt archive or a Parquet /
    # Arrow / .npy file is unreadable as JSONL as a whole (exit 2), not one invalid_json per "line".
    sniffed = sniff_file(path)
    if sniffed.format in ("parquet", "arrow", "npy"):
        raise UnreadableInput(
            path,
            f"a {sniffed.format} file, not messages JSONL",
            hint="validate checks the JSONL ChatDataset reads: convert it with dataprep normalize IN OUT.jsonl",
        )
    try:
        return open_decompressed(path, sniffed.compression)
    except OSError as e:
        raise UnreadableInput(path, e.strerror or str(e)) from None


def _as_chat_dataset_reads(obj: Any) -> tuple[Any, list[Problem]]:
    """What ChatDataset makes of a row: ``content: null`` reads as "", a list of parts keeps its text parts.

    (An assistant tool call with ``content: null`` is the OpenAI form and trains fine.) Image or audio parts
    are a ``non_text_content`` problem: ChatDataset would drop them without a word.
    """
    if not isinstance(obj, dict) or not isinstance(obj.get("messages"), list):
        return obj, []
    from .trainer import message_text

    problems: list[Problem] = []
    messages = []
    for i, m in enumerate(obj["messages"]):
        if (
            isinstance(m, dict)
            and "content" in m
            and (m["content"] is None or isinstance(m["content"], list))
        ):
            found = _part_problem(m["content"], f"message {i} ({m.get('role')})")
            if found is not None:
                problems.append(Problem(*found, i))
            m = {**m, "content": message_text(m["content"])}  # what ChatDataset hands the template
        if isinstance(m, dict) and isinstance(m.get("tool_calls"), list):
            # ChatDataset JSON-dumps non-string arguments.
            calls = [
                {**c, "function": {**c["function"], "arguments": json.dumps(c["function"]["arguments"])}}
                if isinstance(c, dict)
                and isinstance(c.get("function"), dict)
                and isinstance(c["function"].get("arguments"), (dict, list))
                else c
                for c in m["tool_calls"]
            ]
            m = {**m, "tool_calls": calls}
        messages.append(m)
    return {**obj, "messages": messages}, problems


TEXT_PART_TYPES = frozenset({"text", "input_text", "output_text"})
NON_TEXT_PART_TYPES = frozenset(
    {"image", "image_url", "input_image", "audio", "input_audio", "audio_url", "video", "video_url", "file"}
)


def _part_problem(content: Any, where: str) -> tuple[str, str] | None:
    """(code, message) of the first content part ChatDataset would drop without a word: a part that is not an
    object, a text part whose text is not under ``text``, an image/audio/video part, a part of unknown type."""
    if not isinstance(content, list):
        return None
    for part in content:
        if not isinstance(part, dict):
            return "missing_field", f"{where}: content part {part!r} is not an object (ChatDataset drops it)"
        kind = part.get("type") or ("text" if part.get("text") is not None else None)
        if kind in TEXT_PART_TYPES:
            if not isinstance(part.get("text"), str):
                return "missing_field", f"{where}: a text part without 'text' (ChatDataset reads only 'text')"
        elif kind in NON_TEXT_PART_TYPES or any(
            part.get(k) is not None for k in ("image", "image_url", "audio")
        ):
            return "non_text_content", f"{where} has a {kind or 'media'} part"
        else:
            return "non_text_content", f"{where} has a content part of unknown type {kind!r}"
    return None


def chat_dataset_file_problem(path: str, compression: str | None = None) -> str | None:
    """Why AutoModel 0.7.0's ChatDataset would not read ``path`` line by line (None: it would).

    It reads ``.jsonl``/``.ndjson`` line by line, parses any other name as ONE JSON document (a JSONL file named
    ``.json`` fails with "Extra data"), and never decompresses.
    """
    if path == "-":
        return None
    if compression and compression != "none":
        return f"{compression}-compressed: ChatDataset does not decompress"
    suffix = Path(path).suffix.lower()
    if suffix not in (".jsonl", ".ndjson"):
        return f"named {suffix or 'without a suffix'}: ChatDataset parses it as one JSON document, not line by line"
    return None


def validate_file(path: str) -> ValidateResult:
    """Check every line of a messages JSONL with ``validate_conversation``; line numbers are 1-based.

    Blank lines are skipped (not counted); a line that is not JSON or not UTF-8 is ``invalid_json``.
    """
    from .errors import UnreadableInput

    rows = valid = 0
    by_code: dict[str, int] = {}
    first_rows: dict[str, list[int]] = {}
    first_message: dict[str, str] = {}
    problems: list[dict[str, Any]] = []

    def note(line: int, p: Problem) -> None:
        by_code[p.code] = by_code.get(p.code, 0) + 1
        lst = first_rows.setdefault(p.code, [])
        if len(lst) < FIRST_ROWS:
            lst.append(line)
        first_message.setdefault(p.code, p.message)
        if len(problems) < MAX_PROBLEMS:
            problems.append({"line": line, **p.to_dict()})

    fh = _open_lines(path)
    file_problem = None
    if path != "-":
        from .sources.sniff import sniff_file

        file_problem = chat_dataset_file_problem(path, sniff_file(path).compression)
    n = 0
    try:
        for n, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            rows += 1
            try:
                obj = safe_loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                note(n, Problem("invalid_json", "the line is not UTF-8"))
                continue
            except ValueError as e:
                note(n, Problem("invalid_json", f"not valid JSON: {e}"))
                continue
            if isinstance(obj, dict) and "messages" not in obj and "conversations" in obj:
                note(n, Problem("missing_field", "a ShareGPT 'conversations' row: run dataprep normalize"))
                continue
            if isinstance(obj, dict) and isinstance(obj.get("tools"), str):
                try:
                    obj = {**obj, "tools": safe_loads(obj["tools"])}  # ChatDataset accepts a JSON string
                except ValueError:
                    note(n, Problem("invalid_tool_call", "'tools' is a string that is not JSON"))
                    continue
            obj, read_problems = _as_chat_dataset_reads(obj)
            found = read_problems + validate_conversation(obj)
            if found:
                for p in found:
                    note(n, p)
            else:
                valid += 1
    except (OSError, EOFError) as e:
        raise UnreadableInput(
            path, f"corrupt or truncated data after line {n}: {e}", hint="re-create or re-download the file"
        ) from None
    except Exception as e:  # zstandard.ZstdError has no common base with the stdlib errors
        if not type(e).__module__.startswith("zstandard"):
            raise
        raise UnreadableInput(
            path, f"corrupt zstd data: {e}", hint="re-create or re-download the file"
        ) from None
    finally:
        if path != "-":
            fh.close()
    if path == "-" and rows == 0:  # a file is sniffed for emptiness up front; stdin only now
        raise UnreadableInput(
            path, "empty input on stdin", hint="pipe JSONL into the command, one record per line"
        )
    return ValidateResult(
        path=path,
        rows=rows,
        valid=valid,
        by_code=by_code,
        first_rows={k: tuple(v) for k, v in first_rows.items()},
        first_message=first_message,
        problems=tuple(problems),
        file_problem=file_problem,
    )
