"""The one model of the trainer: what NeMo AutoModel's ChatDataset does to a row, step by step.

Modelled on ``nemo-automodel`` 0.7.0 and the ``transformers`` 5.18.0 it pins (read from their code and checked
by running them: ``tests/test_automodel_conformance.py``). Every command that says something about a row
(validate, check-template, stats, preflight) goes through this module, so there is one place to change when
AutoModel changes. ``ChatDataset.__getitem__`` does, in order:

1. *messages*: ``row["messages"]``, or a ShareGPT ``row["conversations"]`` list converted (human/user -> user,
   gpt/assistant/chatgpt/model/bot -> assistant, system); anything else raises.
2. *clean-up* (``_normalize_messages``): a role outside system/user/assistant/tool raises; ``content`` None ->
   "", a list keeps only its text parts joined with a SPACE, anything else ``str()`` (a dict becomes its Python
   repr); assistant ``reasoning_content`` None -> "" (not a string raises); assistant ``tool_calls`` must be a
   list of dicts with a ``function`` dict holding a non-empty ``name`` and some ``arguments`` (missing id ->
   ``call_<i>``, missing type -> ``function``), and non-string arguments are ``json.dumps``-ed with
   ``ensure_ascii=True``; a tool message without a string ``tool_call_id`` raises.
3. *tools*: a JSON string is parsed (invalid JSON raises), anything but a list raises, ``[]`` becomes None.
4. *template*: the tokenizer's (or ``dataset.chat_template``); a named-template dict gives transformers'
   choice (``tool_use`` when the row has tools and the dict has one, else ``default``). Generation tags are
   detected on the ``default`` template with ``GENERATION_TAG_RE``, which needs spaces: ``{%generation%}`` is
   not seen, and such a template is masked by prefixes.
5. *rendering* (``NeMoAutoTokenizer.apply_chat_template``): more than one system message raises; a template
   that raises "System role not supported" is rendered again with the system text merged into the first user
   turn (``SYSTEM\\nUSER``). transformers 5.18 passes the messages to the template as they are (no None-valued
   keys dropped, no reasoning aliases) and encodes the text with ``add_special_tokens=False``; an empty
   conversation raises.
6. *loss mask*: with tags, transformers' ``assistant_masks`` (``char_to_token`` of each span's first and last
   character; a span whose first character maps to no token ends the loop). Without tags, for every assistant
   message ``i`` the tokens from ``len(ids(messages[:i]))`` to ``len(ids(messages[:i+1]))``, both rendered
   WITHOUT a generation prompt, so the assistant header is trained; each prefix must reproduce the start of the
   whole rendering (a trailing EOS may differ) or ``__getitem__`` raises "Cannot build an answer-only loss mask
   from conversation prefixes". ``mask_generation_prompt: true`` then removes from each turn the block that
   ``add_generation_prompt=True`` appends to the unchanged prefix, when the turn starts with that whole block
   (both ``enable_thinking`` modes when the template reads it).
7. *truncation and shift*: ``truncation`` cuts the ids at ``seq_length`` (prefix lengths are cut the same way);
   then ``input_ids = ids[:-1]`` and ``labels = ids[1:]``, so a supervised first token is never trained.
   ``seq_length`` alone (no truncation, no ``padding: max_length``) changes nothing.

Masking is named by ``MASK_SOURCES``: ``generation_tags``, ``prefix_with_header`` (AutoModel's default without
tags) and ``prefix_without_header`` (``mask_generation_prompt: true``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .safejson import loads as safe_loads

AUTOMODEL_VERSION = "0.7.0"
TRANSFORMERS_VERSION = "5.18.0"  # what nemo-automodel 0.7.0 pins (transformers==5.18.0)

# formatting_utils.GENERATION_REGEX: at least one space on each side of the word.
GENERATION_TAG_RE = re.compile(r"\{%-?\s+generation\s+-?%\}")
# transformers' own looser test (render_jinja_template): what renders spans at all.
ANY_GENERATION_TAG_RE = re.compile(r"\{\%-?\s*generation\s*-?\%\}")

MASK_SOURCES: tuple[str, ...] = ("generation_tags", "prefix_with_header", "prefix_without_header")
MASK_SOURCE_MEANING = {
    "generation_tags": "the template's {% generation %} blocks (transformers' assistant_masks)",
    "prefix_with_header": "prefix arithmetic without a generation prompt: each assistant turn's header, "
    "content and closing markers are trained (AutoModel's default without tags)",
    "prefix_without_header": "prefix arithmetic minus the generation prompt: content and closing markers "
    "are trained, the header the template writes is not (mask_generation_prompt: true)",
}
SYSTEM_UNSUPPORTED = "System role not supported"
UNMASKABLE = "Cannot build an answer-only loss mask from conversation prefixes"

ROLES = ("system", "user", "assistant", "tool")
_SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "model": "assistant",
    "bot": "assistant",
}


class RowRejected(ValueError):
    """A row ChatDataset raises on; ``code`` is the catalogued finding code that names why."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


# -- steps 1-3: the row as the template receives it ----------------------------------------------------------
def message_text(value: Any) -> str:
    """A message's content as ChatDataset hands it to the template: the ``text`` of each part joined with " "
    (other parts dropped), None as ""."""
    if isinstance(value, list):
        return " ".join(p["text"] for p in value if isinstance(p, dict) and "text" in p)
    if value is None:
        return ""
    return str(value)


def _tool_calls(calls: Any, i: int) -> list[dict[str, Any]]:
    where = f"message {i}: tool_calls"
    if not isinstance(calls, list):
        raise RowRejected("invalid_tool_call", f"{where} is not a list")
    out = []
    for j, call in enumerate(calls):
        if not isinstance(call, dict):
            raise RowRejected("invalid_tool_call", f"{where}[{j}] is not an object")
        cid = call.get("id")
        if cid is None or cid == "":
            cid = f"call_{j}"
        elif not isinstance(cid, str):
            raise RowRejected("invalid_tool_call", f"{where}[{j}].id is not a string")
        ctype = call.get("type")
        if ctype is None or ctype == "":
            ctype = "function"
        elif not isinstance(ctype, str):
            raise RowRejected("invalid_tool_call", f"{where}[{j}].type is not a string")
        fn = call.get("function")
        if not isinstance(fn, dict):
            raise RowRejected("invalid_tool_call", f"{where}[{j}].function is not an object")
        if not isinstance(fn.get("name"), str) or not fn["name"]:
            raise RowRejected("invalid_tool_call", f"{where}[{j}].function.name is missing or empty")
        args = fn.get("arguments")
        if args is None:
            raise RowRejected("invalid_tool_call", f"{where}[{j}].function.arguments is missing")
        fn = dict(fn)
        if not isinstance(args, str):
            fn["arguments"] = json.dumps(args)  # ensure_ascii=True, as ChatDataset does
        out.append({**call, "id": cid, "type": ctype, "function": fn})
    return out


def clean_messages(messages: Any) -> list[dict[str, Any]]:
    """``_normalize_messages``: the messages as ChatDataset hands them to the template; raises RowRejected."""
    if not isinstance(messages, list):
        raise RowRejected("missing_field", "the row has no 'messages' (or 'conversations') list")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise RowRejected("missing_field", f"message {i} is not an object")
        role = m.get("role")
        if role not in ROLES:
            raise RowRejected("unknown_role", f"message {i} has role {role!r}")
        c = dict(m)
        c["content"] = message_text(m.get("content"))
        if role == "assistant":
            if "reasoning_content" in m:
                r = m.get("reasoning_content")
                if r is not None and not isinstance(r, str):
                    raise RowRejected("missing_field", f"message {i}: reasoning_content is not a string")
                c["reasoning_content"] = r or ""
            if "tool_calls" in m:
                c["tool_calls"] = _tool_calls(m.get("tool_calls"), i)
        if role == "tool":
            tcid = m.get("tool_call_id")
            if not isinstance(tcid, str) or not tcid:
                raise RowRejected("invalid_tool_call", f"message {i} (tool) has no tool_call_id")
        out.append(c)
    return out


def sharegpt_messages(conversations: Any) -> list[dict[str, Any]]:
    """ChatDataset's conversion of a ShareGPT ``conversations`` list (``_conversations_to_messages``)."""
    if not isinstance(conversations, list):
        raise RowRejected("missing_field", "'conversations' is not a list")
    out = []
    for i, turn in enumerate(conversations):
        if not isinstance(turn, dict):
            raise RowRejected("missing_field", f"conversations[{i}] is not an object")
        src = turn.get("from", turn.get("role"))
        role = _SHAREGPT_ROLES.get(src)
        if role is None:
            raise RowRejected("unknown_role", f"conversations[{i}] has role {src!r}")
        out.append({"role": role, "content": turn.get("value", turn.get("content", ""))})
    return out


def row_tools(row: Mapping[str, Any]) -> list[Any] | None:
    tools = row.get("tools")
    if isinstance(tools, str):
        try:
            tools = safe_loads(tools)
        except json.JSONDecodeError as e:
            raise RowRejected("invalid_tool_call", f"'tools' is a string but not valid JSON: {e}") from None
    if tools is not None and not isinstance(tools, list):
        raise RowRejected("invalid_tool_call", f"'tools' is a {type(tools).__name__}, not a list")
    return tools or None


def row_inputs(row: Any) -> tuple[list[dict[str, Any]], list[Any] | None]:
    """(messages, tools) exactly as ChatDataset passes them to ``apply_chat_template``; raises RowRejected."""
    if not isinstance(row, Mapping):
        raise RowRejected("missing_field", "the row is not an object")
    messages = row.get("messages")
    if messages is None and row.get("conversations") is not None:
        messages = sharegpt_messages(row["conversations"])
    return clean_messages(messages), row_tools(row)


# -- steps 4-5: template choice and the system-role fallback ------------------------------------------------
def tag_template(chat_template: Any) -> str:
    """The template AutoModel searches for generation tags: a named dict's ``default`` (else its first)."""
    if isinstance(chat_template, dict):
        return chat_template.get("default", next(iter(chat_template.values()), "")) or ""
    return chat_template or ""


def has_generation_tags(chat_template: Any) -> bool:
    """Whether AutoModel masks with ``{% generation %}`` (its regex, on the default template)."""
    return GENERATION_TAG_RE.search(tag_template(chat_template)) is not None


def reads_enable_thinking(chat_template: Any) -> bool:
    """Whether ``mask_generation_prompt`` renders the prompt in both ``enable_thinking`` modes."""
    text = " ".join(chat_template.values()) if isinstance(chat_template, dict) else str(chat_template or "")
    return "enable_thinking" in text


def prompt_modes(chat_template: Any) -> list[dict[str, bool]]:
    return (
        [{"enable_thinking": True}, {"enable_thinking": False}]
        if reads_enable_thinking(chat_template)
        else [{}]
    )


def resolve_mask_source(chat_template: Any, mask_generation_prompt: bool = False) -> str:
    if has_generation_tags(chat_template):
        return "generation_tags"
    return "prefix_without_header" if mask_generation_prompt else "prefix_with_header"


def system_count_check(messages: Sequence[Mapping[str, Any]]) -> None:
    n = sum(1 for m in messages if m.get("role") == "system")
    if n > 1:
        raise RowRejected(
            "role_order", f"{n} system messages: AutoModel's tokenizer accepts a single system message"
        )


def merge_system(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``_remap_system_role``: the system text moved into the first user turn (or a new user turn)."""
    system = next(m for m in messages if m.get("role") == "system")
    text = system.get("content", "")
    out: list[dict[str, Any]] = []
    merged = False
    for m in messages:
        if m.get("role") == "system":
            continue
        if not merged and m.get("role") == "user":
            out.append({**m, "content": f"{text}\n{m['content']}"})
            merged = True
        else:
            out.append(dict(m))
    if not merged:
        out.insert(0, {"role": "user", "content": text})
    return out


def is_system_unsupported(err: BaseException) -> bool:
    """The error NeMoAutoTokenizer answers with the system merge: a jinja TemplateError naming it."""
    import jinja2

    if isinstance(err, jinja2.exceptions.TemplateError):
        return SYSTEM_UNSUPPORTED in str(err)
    kind = getattr(err, "kind", None)  # dataprep.render.RenderError from raise_exception(...)
    return kind == "raised" and SYSTEM_UNSUPPORTED in str(err)


def with_system_fallback(
    render: Callable[[list[dict[str, Any]]], Any], messages: list[dict[str, Any]]
) -> Any:
    """``render(messages)`` as NeMoAutoTokenizer.apply_chat_template calls the template."""
    if not messages:
        raise RowRejected(
            "role_order", "an empty conversation: transformers cannot render it (a leading assistant turn?)"
        )
    if not any(m.get("role") == "system" for m in messages):
        return render(messages)
    system_count_check(messages)
    try:
        return render(messages)
    except Exception as err:
        if not is_system_unsupported(err):
            raise
    return render(merge_system(messages))


# -- steps 6-7: the loss mask on token ids ------------------------------------------------------------------
def consistent_prefix(prefix: Sequence[int], ref: Sequence[int], trailing: int | None = None) -> bool:
    """``_is_consistent_render_prefix``."""
    if len(prefix) > len(ref):
        return False
    if list(prefix) == list(ref[: len(prefix)]):
        return True
    return (
        len(prefix) > 1
        and trailing is not None
        and prefix[-1] == trailing
        and list(prefix[:-1]) == list(ref[: len(prefix) - 1])
    )


def divergence(prefix: Sequence[int], ref: Sequence[int]) -> int:
    """The first token position where ``prefix`` stops being a prefix of ``ref``.

    Truncated to ``seq_length`` L, both renders keep their first L tokens, so the prefix check fails exactly
    when this position is below L.
    """
    n = min(len(prefix), len(ref))
    for i in range(n):
        if prefix[i] != ref[i]:
            return i
    return n


def hf_assistant_mask(
    n: int, spans: Sequence[tuple[int, int]], char_to_token: Callable[[int], Any]
) -> list[int]:
    """transformers 5.18's ``assistant_masks`` for one text of ``n`` tokens."""
    mask = [0] * n
    for a, b in spans:
        start = char_to_token(a)
        end = char_to_token(b - 1) if b > 0 else None
        if start is None:
            break
        for t in range(start, end + 1 if end else n):
            mask[t] = 1
    return mask


@dataclass
class PrefixMask:
    mask: list[int]
    unmaskable_from: int | None  # prefix masking fails for seq_length above this token position
    reason: str | None


def prefix_mask(
    roles: Sequence[str], full: Sequence[int], prefix_ids: Callable[[int], Sequence[int]], eos_id: int | None
) -> PrefixMask:
    """``_build_multiturn_assistant_mask`` (untruncated), with where it would raise instead of raising."""
    n = len(full)
    mask = [0] * n
    lengths: dict[int, int] = {len(roles): n}
    worst: int | None = None
    reason = None
    found = False
    for idx, role in enumerate(roles):
        if role != "assistant":
            continue
        found = True
        for k in (idx, idx + 1):
            if k in lengths:
                continue
            ids = prefix_ids(k)
            if not consistent_prefix(ids, full, eos_id):
                d = divergence(ids, full)
                if worst is None or d < worst:
                    worst = d
                    reason = (
                        f"rendering the first {k} message(s) alone is not a prefix of the whole conversation "
                        f"(they differ at token {d})"
                    )
            lengths[k] = len(ids)
        for pos in range(min(lengths[idx], n), min(lengths[idx + 1], n)):
            mask[pos] = 1
    if not found:
        raise RowRejected("no_assistant_turn", "no assistant message: AutoModel's prefix masking asserts one")
    return PrefixMask(mask, worst, reason)


def appended_prompt_length(base: Sequence[int], prompted: Sequence[int], turn: Sequence[int]) -> int:
    """``_appended_generation_prompt_length``."""
    if not consistent_prefix(base, prompted):
        return 0
    block = list(prompted[len(base) :])
    return len(block) if block and list(turn[: len(block)]) == block else 0


def generation_prompt_mask(
    roles: Sequence[str],
    full: Sequence[int],
    base_ids: Callable[[int], Sequence[int]],
    prompt_ids: Callable[[int], list[Sequence[int]]],
) -> list[int]:
    """``_build_generation_prompt_mask`` (untruncated): the tokens the generation prompt supplies per turn."""
    out = [0] * len(full)
    for idx, role in enumerate(roles):
        if role != "assistant":
            continue
        try:
            base = base_ids(idx)
            if not consistent_prefix(base, full):
                continue
            prompts = prompt_ids(idx)
        except Exception:
            if idx:
                raise
            continue  # a leading assistant turn: nothing to render before it
        turn = full[len(base) :]
        matched = max(appended_prompt_length(base, p, turn) for p in prompts)
        for pos in range(len(base), min(len(base) + matched, len(full))):
            out[pos] = 1
    return out


def supervised_count(mask: Sequence[int], seq_length: int | None = None) -> int:
    """Labels that are not -100: mask positions 1..min(n, seq_length)-1 (the shift drops position 0)."""
    end = len(mask) if seq_length is None else min(len(mask), seq_length)
    return sum(mask[1:end])


def mask_runs(mask: Sequence[int]) -> list[tuple[int, int]]:
    """Runs [lo, hi) of supervised labels: mask positions >= 1 (position 0 is never a label)."""
    runs: list[tuple[int, int]] = []
    start = None
    for i in range(1, len(mask) + 1):
        on = i < len(mask) and bool(mask[i])
        if on and start is None:
            start = i
        elif not on and start is not None:
            runs.append((start, i))
            start = None
    return runs


# -- one row, the slow exact way (check-template, tests, the per-row fallback of dataprep.measure) ----------
@dataclass
class TrainerSample:
    """What ChatDataset makes of a row (untruncated): token ids, the mask before the shift, and the position
    past which prefix masking fails (None: it never does)."""

    ids: list[int]
    mask: list[int]
    mask_source: str
    text: str
    unmaskable_from: int | None = None
    unmaskable_reason: str | None = None
    encoding: Any = None  # the tokenizers Encoding of ``text`` (offsets for display)

    @property
    def total(self) -> int:
        return len(self.ids)

    def supervised(self, seq_length: int | None = None) -> int:
        return supervised_count(self.mask, seq_length)

    def raises_at(self, seq_length: int | None = None) -> bool:
        """Whether ``__getitem__`` raises UNMASKABLE (with truncation to ``seq_length``, when given)."""
        if self.unmaskable_from is None:
            return False
        return seq_length is None or self.unmaskable_from < seq_length


def trainer_sample(
    messages: list[dict[str, Any]],
    tools: list[Any] | None,
    *,
    render: Callable[..., tuple[str, list[tuple[int, int]]]],
    encode: Callable[[str], Any],
    chat_template: Any,
    eos_id: int | None,
    mask_generation_prompt: bool = False,
) -> TrainerSample:
    """Run steps 5-7 for one cleaned row.

    ``render(messages, tools=, add_generation_prompt=, **kwargs) -> (text, generation spans)`` renders the
    template transformers would pick; ``encode(text)`` returns a tokenizers ``Encoding`` (``.ids``,
    ``.char_to_token``), as ``tokenizer(text, add_special_tokens=False)`` gives it.
    """
    source = resolve_mask_source(chat_template, mask_generation_prompt)
    roles = [m.get("role") for m in messages]
    cache: dict[tuple[int, bool, tuple], list[int]] = {}

    def ids_of(k: int, gen: bool = False, **kw: Any) -> list[int]:
        key = (k, gen, tuple(sorted(kw.items())))
        if key not in cache:
            text, _ = with_system_fallback(
                lambda ms: render(ms, tools=tools, add_generation_prompt=gen, **kw), messages[:k]
            )
            cache[key] = list(encode(text).ids)
        return cache[key]

    text, spans = with_system_fallback(
        lambda ms: render(ms, tools=tools, add_generation_prompt=False), messages
    )
    enc = encode(text)
    full = list(enc.ids)
    cache[(len(messages), False, ())] = full
    unmaskable_from = reason = None
    if source == "generation_tags":
        mask = hf_assistant_mask(len(full), spans, enc.char_to_token)
    else:
        pm = prefix_mask(roles, full, ids_of, eos_id)
        mask, unmaskable_from, reason = pm.mask, pm.unmaskable_from, pm.reason
    if mask_generation_prompt:
        modes = prompt_modes(chat_template)
        gmask = generation_prompt_mask(
            roles, full, ids_of, lambda k: [ids_of(k, True, **mode) for mode in modes]
        )
        mask = [m if not g else 0 for m, g in zip(mask, gmask, strict=True)]
    return TrainerSample(full, mask, source, text, unmaskable_from, reason, enc)


def tokenizer_sample(
    tokenizer: Any,
    messages: list[dict[str, Any]],
    tools: list[Any] | None,
    render: Callable[..., tuple[str, list[tuple[int, int]]]],
    *,
    mask_generation_prompt: bool = False,
) -> TrainerSample:
    """``trainer_sample`` with a transformers tokenizer's template, EOS and encoding (``tokenizer(text,
    add_special_tokens=False)``, as ``apply_chat_template`` encodes); raises RowRejected ``mask_unbuildable``
    where the untruncated row makes ``__getitem__`` raise."""
    sample = trainer_sample(
        messages,
        tools,
        render=render,
        encode=lambda text: tokenizer(text, add_special_tokens=False).encodings[0],
        chat_template=tokenizer.chat_template,
        eos_id=tokenizer.eos_token_id,
        mask_generation_prompt=mask_generation_prompt,
    )
    if sample.raises_at(None):
        raise RowRejected("mask_unbuildable", f"{UNMASKABLE}: {sample.unmaskable_reason}")
    return sample
