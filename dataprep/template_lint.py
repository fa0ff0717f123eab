"""Lint a chat template: render probe conversations made of unique sentinel strings and compare texts and tokens.

Every check is a plain text or token comparison on the renderings of a few probes:

    basic       user + assistant                     template_render_error, tools_required
    system      system + user + assistant            system_role_unsupported
    multi       [system] + 3 x (user, assistant with reasoning_content)
                                                     system_message_dropped, prefix_unstable, eos_not_trained,
                                                     generation_tags_missing, marker_not_special_token
    two users   user, user, assistant                strict_alternation
    reasoning   user + assistant with reasoning      reasoning_dropped
    tool call   user, assistant tool_call, tool, assistant (with tools)   (reported in ``probes``)
    date        basic/system with strftime_now pinned to two dates, date variables set   date_injected

plus the conversation-level constant text (``default_system_prompt_injected``), BOS counting (``double_bos``) and
the special tokens (``pad_equals_eos``). Renders go through ``dataprep.render`` (sandboxed, bounded), so a hostile
template ends as ``template_render_error``. ``assistant_spans`` gives the supervised spans of any conversation:
from ``{% generation %}`` when the template has it, else AutoModel's prefix arithmetic.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from . import trainer
from .findings import Finding, Severity, finding
from .render import DEFAULT_LIMITS, Limits, Rendered, RenderError, compile_template, render_for

# ------------------------------------------------------------------------------------------------
# Supervised spans (shared with stats)
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Span:
    """A supervised character span ``[start, end)`` of the rendered text and the tokens it covers."""

    start: int
    end: int
    tokens: int
    message_index: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "end": self.end,
            "tokens": self.tokens,
            "message_index": self.message_index,
        }


@dataclass(frozen=True)
class SupervisedRender:
    """A conversation rendered and tokenized the way the trainer does, with its supervised spans."""

    text: str
    spans: tuple[Span, ...]
    mask_source: str  # "generation_tags" | "prefix_diff" (same names as dataprep.measure)
    input_ids: tuple[int, ...]
    offsets: tuple[tuple[int, int], ...]
    mask: tuple[int, ...]  # 1 = supervised token

    @property
    def total_tokens(self) -> int:
        return len(self.input_ids)

    @property
    def supervised_tokens(self) -> int:
        return sum(self.mask)

    def to_dict(self, *, tokens: bool = False) -> dict[str, Any]:
        d: dict[str, Any] = {
            "text": self.text,
            "mask_source": self.mask_source,
            "total_tokens": self.total_tokens,
            "supervised_tokens": self.supervised_tokens,
            "spans": [s.to_dict() for s in self.spans],
        }
        if tokens:
            d["token_ids"] = list(self.input_ids)
            d["mask"] = list(self.mask)
        return d


def trainer_view(conversation: Any) -> tuple[list[dict], list[dict] | None]:
    """(messages, tools) as AutoModel's ChatDataset hands them to the template (``dataprep.trainer.row_inputs``);
    a bare list of messages is a row without tools. Raises ``trainer.RowRejected`` where ChatDataset raises."""
    row = conversation if isinstance(conversation, Mapping) else {"messages": list(conversation)}
    return trainer.row_inputs(row)


def assistant_spans(
    loaded: Any, conversation: Any, *, limits: Limits = DEFAULT_LIMITS, mask_generation_prompt: bool = False
) -> SupervisedRender:
    """Render + tokenize one conversation (``{"messages", "tools"?}`` or a message list) as the trainer does and
    mark its supervised tokens (the labels that are not -100) with ``dataprep.trainer``'s model of ChatDataset.

    Rendering is the sandboxed, bounded ``render_for``. Raises RenderError when the template fails, and
    ``trainer.RowRejected`` where ChatDataset raises (``mask_unbuildable`` when prefix masking fails).
    """
    messages, tools = trainer_view(conversation)

    def render(ms: list[dict], *, tools: Any, add_generation_prompt: bool, **kw: Any):
        out = render_for(
            loaded,
            ms,
            tools=tools,
            add_generation_prompt=add_generation_prompt,
            overrides=kw or None,
            limits=limits,
        )
        return out.text, list(out.generation_spans)

    sample = trainer.tokenizer_sample(
        loaded.tokenizer, messages, tools, render, mask_generation_prompt=mask_generation_prompt
    )
    offsets = [tuple(o) for o in sample.encoding.offsets]
    runs = trainer.mask_runs(sample.mask)
    turns = [i for i, m in enumerate(messages) if m.get("role") == "assistant"]
    names: list[int | None] = turns if len(turns) == len(runs) else [None] * len(runs)
    spans = tuple(
        Span(offsets[lo][0], offsets[hi - 1][1], hi - lo, i) for (lo, hi), i in zip(runs, names, strict=True)
    )
    mask = [0] + list(sample.mask[1:])  # labels: the first token is never one
    return SupervisedRender(
        sample.text, spans, sample.mask_source, tuple(sample.ids), tuple(offsets), tuple(mask)
    )


# ------------------------------------------------------------------------------------------------
# Probes
# ------------------------------------------------------------------------------------------------

SYS = "sentinelsystemqx"
U = ("sentineluserqa", "sentineluserqb", "sentineluserqc")
A = ("sentinelanswerqa", "sentinelanswerqb", "sentinelanswerqc")
R = ("sentinelthinkqa", "sentinelthinkqb", "sentinelthinkqc")
TOOL_NAME = "sentinel_tool_fn"
TOOL_ARG = "sentinelargqx"
TOOL_RESULT = "sentinelresultqx"
DATE_VAR = "sentineldateqx"
SENTINELS = (SYS, *U, *A, *R, TOOL_NAME, TOOL_ARG, TOOL_RESULT, DATE_VAR)

PROBE_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": TOOL_NAME,
            "description": "Look something up.",
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "string"}},
                "required": ["query"],
            },
        },
    }
]


def _user(i: int) -> dict:
    return {"role": "user", "content": U[i]}


def _assistant(i: int, reasoning: bool = False) -> dict:
    m: dict[str, Any] = {"role": "assistant", "content": A[i]}
    if reasoning:
        m["reasoning_content"] = R[i]
    return m


def _system() -> dict:
    return {"role": "system", "content": SYS}


def _tool_call_probe(arguments_as_string: bool = True) -> list[dict]:
    return [
        _user(0),
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call12345",  # 9 alphanumerics: Mistral templates insist
                    "type": "function",
                    # a JSON string, as ChatDataset passes arguments (it json-dumps non-string ones)
                    "function": {
                        "name": TOOL_NAME,
                        "arguments": json.dumps({"query": TOOL_ARG})
                        if arguments_as_string
                        else {"query": TOOL_ARG},
                    },
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call12345", "name": TOOL_NAME, "content": TOOL_RESULT},
        _assistant(1),
    ]


EXAMPLE_CONVERSATION = {
    "messages": [
        {"role": "system", "content": "You are a concise assistant."},
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And of Germany?"},
        {"role": "assistant", "content": "Berlin."},
    ]
}

_MARKER_RE = re.compile(
    r"<\|[^|<>\s]{1,40}\|>|<｜[^｜<>]{1,40}｜>|\[/?[A-Z][A-Z_]{1,30}\]|<(?:start|end)_of_turn>"
)
# anything shaped like a control token: <tag>, <|x|>, 〈|x|〉, [gMASK] (a real tokenizer knows them; a paired one may not)
_TAG_RE = re.compile(r"<[^<>\s]{1,40}>|〈[^〈〉\s]{1,40}〉|\[[^\[\]\s]{1,20}\]|<｜[^｜]{1,40}｜>")
_ROLE_WORDS = re.compile(r"\b(system|user|assistant|model|tool|bot|human)\b", re.IGNORECASE)


@dataclass
class _Ctx:
    loaded: Any
    limits: Limits
    tools: list[dict] | None = None  # PROBE_TOOLS when the template needs them
    probes: dict[str, Any] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)

    def render(self, name: str, messages: list[dict], **kw: Any) -> Rendered | RenderError:
        kw.setdefault("tools", self.tools)
        try:
            out = render_for(self.loaded, messages, limits=self.limits, **kw)
        except RenderError as err:
            self.probes[name] = {"ok": False, "error": str(err), "kind": err.kind}
            return err
        self.probes.setdefault(name, {"ok": True})
        return out

    def add(self, code: str, message: str, **kw: Any) -> None:
        self.findings.append(finding(code, message, **kw))


def _short(text: str, n: int = 160) -> str:
    text = text.replace("\n", "\\n")
    return text if len(text) <= n else text[: n - 3] + "..."


def _strip_sentinels(text: str) -> str:
    for s in SENTINELS:
        text = text.replace(s, "")
    return text


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _common_suffix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[-1 - i] == b[-1 - i]:
        i += 1
    return i


# ------------------------------------------------------------------------------------------------
# The checks
# ------------------------------------------------------------------------------------------------


def _check_basic(ctx: _Ctx) -> Rendered | None:
    basic = [_user(0), _assistant(0)]
    out = ctx.render("basic", basic)
    if isinstance(out, RenderError) and out.kind not in ("timeout", "too_large", "security", "syntax"):
        for tools in (PROBE_TOOLS, []):  # some templates want another tool schema but accept an empty list
            with_tools = ctx.render("basic_with_tools", basic, tools=tools)
            if not isinstance(with_tools, RenderError):
                break
        if not isinstance(with_tools, RenderError):
            ctx.tools = tools
            ctx.probes["tools_needed"] = tools
            ctx.add(
                "tools_required",
                f"a plain user/assistant conversation fails without tools ({out.message}) but renders with them",
                hint="pass tools with every row (AutoModel passes the row's tools, None when absent), "
                "or use a template that works without",
            )
            out = with_tools
    if isinstance(out, RenderError):
        ctx.add("template_render_error", f"a basic user/assistant conversation fails to render: {out}")
        return None
    missing = [s for s in (U[0], A[0]) if s not in out.text]
    if missing:
        ctx.add(
            "template_render_error",
            f"the rendering of a user/assistant conversation lacks the {'answer' if A[0] in missing else 'prompt'}: "
            f"{_short(out.text)}",
        )
        return None
    return out


def _check_system(ctx: _Ctx) -> bool:
    out = ctx.render("system", [_system(), _user(0), _assistant(0)])
    if isinstance(out, RenderError):
        if out.kind in ("timeout", "too_large"):
            ctx.add("template_render_error", f"a conversation with a system message fails to render: {out}")
        else:
            ctx.add("system_role_unsupported", f"the template raises on a system message: {out.message}")
        return False
    return True


def _check_default_system(ctx: _Ctx, one: Rendered) -> None:
    """Text that comes from no message: the rendering of one exchange minus the scaffolding of an exchange."""
    two = ctx.render("two_exchanges", [_user(0), _assistant(0), _user(1), _assistant(1)])
    if isinstance(two, RenderError):
        return
    start = len(one.text) if two.text.startswith(one.text) else _common_prefix(one.text, two.text)
    exchange = _strip_sentinels(two.text[start:])
    constant = _strip_sentinels(one.text)
    constant = constant[: len(constant) - _common_suffix(constant, exchange)]
    tok = ctx.loaded.tokenizer
    words = constant
    for t in sorted(tok.all_special_tokens + list(tok.get_added_vocab()), key=len, reverse=True):
        words = words.replace(t, " ")
    words = _ROLE_WORDS.sub(" ", _TAG_RE.sub(" ", _MARKER_RE.sub(" ", words)))
    if not re.search(r"[^\W\d_]{2,}", words):
        return
    block = constant
    bos = tok.bos_token
    if bos and block.startswith(bos):
        block = block[len(bos) :]
    cost = len(tok.encode(block, add_special_tokens=False))
    ctx.add(
        "default_system_prompt_injected",
        f"every row without a system message gets {cost} tokens of text no message contains: '{_short(block.strip())}'",
        token_cost=cost,
        injected_text=block,
    )


def _check_two_users(ctx: _Ctx) -> None:
    out = ctx.render("consecutive_users", [_user(0), _user(1), _assistant(0)])
    if isinstance(out, RenderError):
        ctx.add("strict_alternation", f"two user messages in a row fail to render: {out.message}")


def _multi_messages(with_system: bool) -> list[dict]:
    msgs = [_system()] if with_system else []
    for i in range(3):
        msgs += [_user(i), _assistant(i, reasoning=True)]
    return msgs


def _check_system_dropped(ctx: _Ctx, multi: Rendered) -> None:
    text = multi.text
    if SYS not in text:
        ctx.add(
            "system_message_dropped",
            "the system message's text does not appear in the rendering of a three-turn conversation",
        )
        return
    pos = text.index(SYS)
    users = [(text.find(u), k) for k, u in enumerate(U) if u in text]
    before = [k for p, k in users if p < pos]
    if before:
        ctx.add(
            "system_message_dropped",
            f"the system text is attached to user turn {max(before) + 2} of 3, not to the start: earlier turns "
            "are rendered (and trained) without it",
            attached_to_turn=max(before) + 2,
        )


def _check_prefix(ctx: _Ctx, msgs: list[dict], full: Rendered) -> bool:
    """Each partial rendering must be a prefix of the whole (what prefix-based masking assumes)."""
    problems: list[str] = []
    for i, m in enumerate(msgs):
        if m["role"] != "assistant" or i + 1 == len(msgs):
            continue
        part = ctx.render(f"prefix_{i}", msgs[: i + 1])
        if isinstance(part, RenderError):
            problems.append(f"the first {i + 1} messages fail to render ({part.message})")
            break
        if not full.text.startswith(part.text):
            at = _common_prefix(part.text, full.text)
            problems.append(
                f"rendering the first {i + 1} messages differs from the whole at char {at}: "
                f"'{_short(part.text[at:], 60)}' vs '{_short(full.text[at:], 60)}'"
            )
            break
    for i, m in enumerate(msgs):
        if problems or m["role"] != "assistant" or i == 0:
            continue
        prompt = ctx.render(f"prompt_{i}", msgs[:i], add_generation_prompt=True)
        if isinstance(prompt, RenderError) or not full.text.startswith(prompt.text):
            problems.append(
                f"the prompt before message {i + 1} (with add_generation_prompt) is not a prefix of the whole"
            )
            break
    if not problems:
        return True
    dropped_reasoning = [k + 1 for k, r in enumerate(R) if r not in full.text]
    note = ""
    if dropped_reasoning and any(r in full.text for r in R):
        note = f"; reasoning_content of earlier assistant turns ({dropped_reasoning}) is stripped"
    severity = "info" if ctx.loaded.has_generation_tags else None
    ctx.add(
        "prefix_unstable",
        problems[0]
        + note
        + (" (masks come from {% generation %} tags, so training is unaffected)" if severity else ""),
        severity=severity,
    )
    return False


def _check_generation_tags(ctx: _Ctx, prefix_ok: bool, multi_sr: Any) -> None:
    if not ctx.loaded.has_generation_tags:
        loose = trainer.ANY_GENERATION_TAG_RE.search(ctx.loaded.template or "") is not None
        note = (
            "the template writes {%generation%} without spaces, which AutoModel's tag regex does not see, so "
            if loose
            else "the template has no {% generation %} tags, so "
        )
        if multi_sr is None:
            return  # mask_unbuildable says what happens instead
        ctx.add(
            "generation_tags_missing",
            note
            + "AutoModel masks by conversation prefixes: every assistant turn's header is trained as well "
            "as its answer unless the recipe sets dataset.mask_generation_prompt: true (preflight writes it)",
            severity="warning" if loose else "info",
            prefix_masking_works=prefix_ok,
        )
        return
    if isinstance(multi_sr, RenderError) or multi_sr is None:
        return
    covered = [a for a in A if any(a in multi_sr.text[s.start : s.end] for s in multi_sr.spans)]
    if len(covered) < len(A):
        ctx.add(
            "generation_tags_missing",
            f"the template has {{% generation %}} tags but they wrap only {len(covered)} of 3 assistant answers "
            "in a three-turn conversation: the others are not trained",
            severity="warning",
        )


def _check_eos(ctx: _Ctx, sr: SupervisedRender) -> None:
    tok = ctx.loaded.tokenizer
    stop = set(ctx.loaded.stop_token_ids)
    if tok.eos_token_id is None:
        ctx.add("eos_not_trained", "the tokenizer has no EOS token: nothing teaches the model to stop")
        return
    untrained = []
    closers = []
    for k, a in enumerate(A):
        at = sr.text.find(a)
        if at < 0:
            continue
        end_char = at + len(a)
        span = next((s for s in sr.spans if s.start <= at < s.end), None)
        # tokens after the answer, up to the end of its supervised span (or the next 4 tokens when unsupervised)
        after = [i for i, (s, e) in enumerate(sr.offsets) if s >= end_char and (span is None or s < span.end)]
        supervised_after = [sr.input_ids[i] for i in after if sr.mask[i]]
        if not stop & set(supervised_after):
            untrained.append(k + 1)
            # what follows the answer, up to the next probe text
            stop_at = min(
                [p for p in (sr.text.find(x, end_char) for x in SENTINELS) if p >= 0], default=len(sr.text)
            )
            following = [sr.input_ids[i] for i in after[:6] if sr.offsets[i][0] < stop_at]
            closers.append(tok.decode(following) if following else "")
    if untrained:
        eos = f"{tok.eos_token!r} (id {tok.eos_token_id})"
        how = f"they close with {closers[0]!r}" if closers and closers[0] else "nothing closes them"
        ctx.add(
            "eos_not_trained",
            f"the supervised tokens of assistant turns {untrained} do not include the EOS {eos}: {how}; "
            "AutoModel appends EOS only at the very end of a sequence",
        )


def _check_pad(ctx: _Ctx) -> None:
    tok = ctx.loaded.tokenizer
    if tok.pad_token_id is not None and tok.pad_token_id in set(ctx.loaded.stop_token_ids):
        ctx.add(
            "pad_equals_eos",
            f"the pad token {tok.pad_token!r} (id {tok.pad_token_id}) is the stop token: a collator that masks "
            "pads masks every trained EOS too",
        )


def _check_markers(ctx: _Ctx, text: str) -> None:
    tok = ctx.loaded.tokenizer
    scaffold = _strip_sentinels(text)
    bad = {}
    for marker in dict.fromkeys(_MARKER_RE.findall(scaffold)):
        n = len(tok.encode(marker, add_special_tokens=False))
        if n > 1:
            bad[marker] = n
    if bad:
        listed = ", ".join(f"{m!r} ({n} tokens)" for m, n in bad.items())
        ctx.add(
            "marker_not_special_token",
            f"role markers the template writes split into several tokens: {listed}",
            markers=bad,
        )


def _check_double_bos(ctx: _Ctx, text: str) -> None:
    tok = ctx.loaded.tokenizer
    bos = tok.bos_token_id
    if bos is None:
        return
    trainer = tok(text, add_special_tokens=False)["input_ids"]
    script = tok(text, add_special_tokens=True)["input_ids"]
    where = []
    if trainer[:2] == [bos, bos]:
        where.append("apply_chat_template(tokenize=True), as the trainer tokenizes")
    if script[:2] == [bos, bos]:
        where.append("rendering to text then tokenizing with special tokens, as many scripts do")
    ctx.probes["bos"] = {"trainer": trainer[:3], "render_then_tokenize": script[:3]}
    if where:
        ctx.add(
            "double_bos",
            f"BOS {tok.bos_token!r} appears twice at the start when {' and when '.join(where)}"
            + ("" if len(where) > 1 else "; the other way gives one"),
            where=where,
        )


def _check_reasoning(ctx: _Ctx) -> None:
    out = ctx.render("reasoning", [_user(0), _assistant(0, reasoning=True)])
    if isinstance(out, RenderError):
        ctx.add(
            "reasoning_dropped", f"an assistant message with reasoning_content fails to render: {out.message}"
        )
    elif R[0] not in out.text:
        ctx.add("reasoning_dropped", "assistant reasoning_content does not appear in the rendering")


def _check_tool_call(ctx: _Ctx) -> None:
    tools = ctx.tools if ctx.tools is not None else PROBE_TOOLS
    out = ctx.render("tool_call", _tool_call_probe(), tools=tools)
    if isinstance(out, RenderError):
        as_dict = ctx.render("tool_call_dict_arguments", _tool_call_probe(False), tools=tools)
        if not isinstance(as_dict, RenderError):
            ctx.add(
                "template_render_error",
                f"a tool call fails to render when its arguments are a JSON string, as ChatDataset passes them "
                f"({out}), but renders when they are a dict: rows with tool calls will fail in training",
                severity="warning",
            )
        else:
            ctx.add(
                "template_render_error",
                f"a conversation with a tool call and a tool result fails to render: {out}; rows with tools will fail",
                severity="info",
            )
        return
    missing = [
        what for what, s in (("tool call", TOOL_ARG), ("tool result", TOOL_RESULT)) if s not in out.text
    ]
    ctx.probes["tool_call"]["missing"] = missing
    encoded_twice = json.dumps(json.dumps({"query": TOOL_ARG}))[1:-1]  # {\"query\": \"...\"}
    if encoded_twice in out.text:
        ctx.add(
            "tool_arguments_double_encoded",
            "tool-call arguments render as an escaped JSON string "
            f"('{_short(encoded_twice, 60)}'): the template applies tojson to arguments, and ChatDataset always "
            "passes them as a string, so the model is trained on double-encoded calls",
        )


def _template_variables(template: str) -> set[str]:
    import jinja2.meta

    env = compile_template(template).environment
    return set(jinja2.meta.find_undeclared_variables(env.parse(template)))


def _check_date(ctx: _Ctx, with_system: bool) -> None:
    template = ctx.loaded.template
    variables = _template_variables(template)
    probes = [[_user(0), _assistant(0)]]
    if with_system:
        probes.append([_system(), _user(0), _assistant(0)])
    found = []
    if "strftime_now" in variables or "strftime_now" in template:
        for day in probes:
            texts = []
            for when in (datetime(2001, 2, 3, 4, 5, 6), datetime(2002, 11, 12, 13, 14, 15)):

                def fake(fmt: str, when: datetime = when) -> str:
                    return when.strftime(fmt)

                out = ctx.render("date", day, overrides={"strftime_now": fake})
                texts.append(None if isinstance(out, RenderError) else out.text)
            if None not in texts and texts[0] != texts[1]:
                found.append("strftime_now()")
                break
    for var in sorted(v for v in variables if "date" in v.lower()):
        out = ctx.render("date", probes[-1], overrides={var: DATE_VAR})
        if not isinstance(out, RenderError) and DATE_VAR in out.text:
            found.append(f"the variable {var!r}")
    if found:
        daily = "strftime_now()" in found
        ctx.add(
            "date_injected",
            f"the template writes the date into the prompt via {' and '.join(found)}: "
            + (
                "renderings change by day"
                if daily
                # Llama 3.1: a fixed fallback date unless the caller passes the variable.
                else "the rendering changes with the value a caller passes (or carries the template's fixed fallback)"
            ),
            **(
                {}
                if daily
                else {"hint": "render training and inference with the same date variable (or none)"}
            ),
            via=found,
        )


def lint_loaded(loaded: Any, *, limits: Limits = DEFAULT_LIMITS) -> tuple[list[Finding], dict[str, Any]]:
    """Run every check on a LoadedTokenizer with a template; returns (findings, probe results)."""
    ctx = _Ctx(loaded, limits)
    if loaded.template is None:
        ctx.add("chat_template_missing", f"{loaded.model} has no chat template")
        return ctx.findings, ctx.probes
    _check_pad(ctx)
    basic = _check_basic(ctx)
    if basic is None:
        return ctx.findings, ctx.probes
    system_ok = _check_system(ctx)
    if ctx.tools is None:  # with tools the constant text holds the tool schemas, which come from the row
        _check_default_system(ctx, basic)
    else:
        ctx.probes["two_exchanges"] = {"ok": None, "skipped": "the template needs tools"}
    _check_two_users(ctx)
    msgs = _multi_messages(system_ok)
    multi = ctx.render("multi", msgs)
    multi_sr: SupervisedRender | None = None
    if isinstance(multi, RenderError):
        ctx.add(
            "template_render_error", f"a three-turn conversation fails to render: {multi}", severity="warning"
        )
        prefix_ok = False
    else:
        if system_ok:
            _check_system_dropped(ctx, multi)
        prefix_ok = _check_prefix(ctx, msgs, multi)
        try:
            multi_sr = assistant_spans(loaded, {"messages": msgs, "tools": ctx.tools}, limits=limits)
        except RenderError as err:
            ctx.probes["multi_spans"] = {"ok": False, "error": str(err)}
        except trainer.RowRejected as r:
            ctx.probes["multi_spans"] = {"ok": False, "error": r.message, "code": r.code}
            if r.code == "mask_unbuildable":
                ctx.add(
                    "mask_unbuildable",
                    "the template has no {% generation %} tags and rewrites earlier turns once later ones exist "
                    f"(a three-turn conversation): AutoModel {trainer.AUTOMODEL_VERSION} raises '{r.message}' on "
                    "every such row",
                )
        if multi_sr is not None:
            _check_eos(ctx, multi_sr)
        _check_markers(ctx, multi.text)
        _check_double_bos(ctx, multi.text)
    _check_generation_tags(ctx, prefix_ok, multi_sr)
    _check_reasoning(ctx)
    _check_tool_call(ctx)
    _check_date(ctx, system_ok)
    return ctx.findings, ctx.probes


# ------------------------------------------------------------------------------------------------
# The report (what check-template prints)
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetCheck:
    path: str
    rows_rendered: int
    rows_failed: int
    reader: str  # who read the rows: "dataprep.pipeline" (check-template), "preflight" (the rows it kept)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "rows_rendered": self.rows_rendered,
            "rows_failed": self.rows_failed,
            "reader": self.reader,
        }


@dataclass(frozen=True)
class TemplateReport:
    loaded: Any
    findings: tuple[Finding, ...]
    sample: SupervisedRender | None
    sample_messages: tuple[dict, ...] = ()
    probes: Mapping[str, Any] = field(default_factory=dict)
    dataset: DatasetCheck | None = None

    def to_dict(self, *, tokens: bool = False) -> dict[str, Any]:
        lt = self.loaded
        sample = None
        if self.sample is not None:
            sample = {"messages": list(self.sample_messages), **self.sample.to_dict(tokens=tokens)}
        d: dict[str, Any] = {
            "model": lt.model,
            "model_dir": str(lt.model_dir),
            "template_source": lt.template_source,
            "template_sha256": lt.template_sha256,
            "has_generation_tags": lt.has_generation_tags,
            "special_tokens": lt.special_tokens(),
            "findings": [f.to_dict() for f in self.findings],
            "sample": sample,
            "probes": dict(self.probes),
        }
        if self.dataset is not None:
            d["dataset"] = self.dataset.to_dict()
        return d


def check_dataset(
    loaded: Any,
    rows: Iterable[tuple[int, dict]],
    *,
    name: str = "dataset",
    reader: str = "dataprep.pipeline",
    samples: int = 100,
    limits: Limits = DEFAULT_LIMITS,
    traits: DataTraits | None = None,
) -> tuple[list[Finding], DatasetCheck, tuple[int, dict] | None]:
    """Render the first ``samples`` of a dataset's (row number, valid conversation) pairs; rows that fail are
    reported with their numbers. ``name``: the dataset in the report; ``reader``: who read the rows.

    ``traits``: counted over every row in the same pass (the rows past the sample are only counted)."""
    failures: dict[str, list[int]] = {}
    no_supervised: list[int] = []
    rejected: dict[tuple[str, str], list[int]] = {}
    rendered = 0
    first: tuple[int, dict] | None = None
    for k, (row, conv) in enumerate(rows):
        if traits is not None:
            traits.add(conv)
        if k >= samples:
            if traits is None:
                break
            continue
        first = first or (row, conv)
        try:
            sr = assistant_spans(loaded, conv, limits=limits)
        except RenderError as err:
            failures.setdefault(str(err), []).append(row)
            continue
        except trainer.RowRejected as r:
            rejected.setdefault((r.code, r.message if r.code != "mask_unbuildable" else ""), []).append(row)
            continue
        rendered += 1
        if sr.supervised_tokens == 0:
            no_supervised.append(row)
    findings = [
        finding(
            "template_render_error",
            f"{len(rows_)} of the {rendered + sum(map(len, failures.values()))} rows checked fail to render: {msg}",
            rows=rows_,
        )
        for msg, rows_ in failures.items()
    ]
    checked = rendered + sum(map(len, failures.values())) + sum(map(len, rejected.values()))
    for (code, msg), rows_ in rejected.items():
        what = (
            "AutoModel cannot build the loss mask of"
            if code == "mask_unbuildable"
            else f"AutoModel's ChatDataset raises on ({msg})"
        )
        findings.append(finding(code, f"{what} {len(rows_)} of the {checked} rows checked", rows=rows_))
    if no_supervised:
        findings.append(
            finding(
                "no_supervised_tokens",
                f"{len(no_supervised)} rendered rows have no supervised (assistant) tokens",
                rows=no_supervised,
            )
        )
    failed = sum(len(r) for r in failures.values()) + sum(len(r) for r in rejected.values())
    return findings, DatasetCheck(str(name), rendered, failed, reader), first


@dataclass
class DataTraits:
    """What a dataset carries that a template finding is about: rows with reasoning, tools, a system turn."""

    rows: int = 0
    reasoning: int = 0  # an assistant message with non-empty reasoning_content / reasoning / thinking
    tools: int = 0  # a tools list or an assistant tool call
    system: int = 0  # a system message

    def add(self, conv: Mapping[str, Any]) -> None:
        msgs = conv.get("messages") if isinstance(conv, Mapping) else None
        if not isinstance(msgs, list):
            return
        self.rows += 1
        reasoning = tools = system = False
        for m in msgs:
            if not isinstance(m, Mapping):
                continue
            role = m.get("role")
            system = system or role == "system"
            if role == "assistant":
                reasoning = reasoning or any(m.get(k) for k in ("reasoning_content", "reasoning", "thinking"))
                tools = tools or bool(m.get("tool_calls"))
        tools = tools or bool(conv.get("tools"))
        self.reasoning += reasoning
        self.tools += tools
        self.system += system

    def to_dict(self) -> dict[str, int]:
        return {"rows": self.rows, "reasoning": self.reasoning, "tools": self.tools, "system": self.system}


# finding -> (trait, what the rows carry, severity when none do, severity when some do); None keeps the catalogue's
_IN_CONTEXT: dict[str, tuple[str, str, str, str | None]] = {
    "reasoning_dropped": ("reasoning", "carry reasoning_content", "info", "error"),
    "system_role_unsupported": ("system", "have a system message", "info", None),
    "system_message_dropped": ("system", "have a system message", "info", None),
    "tools_required": ("tools", "carry tools", "warning", None),
}


def in_context(findings: Iterable[Finding], traits: DataTraits) -> list[Finding]:
    """Template findings weighed by the data they are run with: ``reasoning_dropped`` is an error when rows
    carry reasoning and only info when none do; the system-message findings are info without system
    messages; ``tools_required`` is info when every row carries tools. Each message says how many rows."""
    out = []
    for f in findings:
        ctx = _IN_CONTEXT.get(f.code)
        if ctx is None or f.rows is not None or not traits.rows:
            out.append(f)
            continue
        attr, what, none_sev, some_sev = ctx
        n = getattr(traits, attr)
        if f.code == "tools_required":
            sev = "info" if n == traits.rows else None
        else:
            sev = none_sev if n == 0 else some_sev
        note = f" ({n} of the {traits.rows} rows {what}" + (
            ": nothing is lost with this data)" if n == 0 else ")"
        )
        out.append(
            Finding(
                f.code,
                Severity(sev) if sev else f.severity,
                f.message + note,
                f.hint,
                f.rows,
                {**dict(f.data), "rows_affected": n, "rows_checked": traits.rows},
            )
        )
    return out


def lint_template(
    loaded: Any,
    rows: Iterable[tuple[int, dict]] | None = None,
    *,
    dataset: str | None = None,
    reader: str = "dataprep.pipeline",
    samples: int = 100,
    limits: Limits = DEFAULT_LIMITS,
    traits: DataTraits | None = None,
) -> TemplateReport:
    """Lint ``loaded``'s chat template (and render a dataset's first rows): the check-template report.

    ``rows``: the dataset's (row number, valid conversation) pairs (``pipeline.conversations`` of a file, or
    the rows preflight kept as it split, ``reader="preflight"``); ``dataset`` names them in the report. The
    data-dependent findings are weighed by what the rows carry (``in_context``): ``traits`` gives those counts
    when the caller already has them (preflight), else they are counted over every row.
    """
    findings, probes = lint_loaded(loaded, limits=limits)
    data_check = None
    first = None
    if rows is not None and loaded.template is not None:
        counted = DataTraits() if traits is None else None
        more, data_check, first = check_dataset(
            loaded,
            rows,
            name=dataset or "dataset",
            reader=reader,
            samples=samples,
            limits=limits,
            traits=counted,
        )
        findings += more
        traits = traits if counted is None else counted
    if traits is not None:
        findings = in_context(findings, traits)
    sample = None
    sample_messages: tuple[dict, ...] = ()
    if loaded.template is not None and not any(
        f.code == "template_render_error" and f.severity.value == "error" and f.rows is None for f in findings
    ):
        candidates = [first[1]] if first else []
        example = dict(EXAMPLE_CONVERSATION)
        if "tools_needed" in probes:
            example["tools"] = probes["tools_needed"]
        candidates.append(example)
        if any(f.code == "system_role_unsupported" for f in findings):
            candidates.append({**example, "messages": example["messages"][1:]})
        # one exchange without a system message: what a template the trainer cannot mask by prefixes still shows
        candidates.append({**example, "messages": example["messages"][1:3]})
        for conv in candidates:
            try:
                sample = assistant_spans(loaded, conv, limits=limits)
                sample_messages = tuple(conv["messages"])
                break
            except (RenderError, trainer.RowRejected):
                continue
    return TemplateReport(loaded, tuple(findings), sample, sample_messages, probes, data_check)


def check_template(
    model: str,
    dataset: str | None = None,
    *,
    chat_template: str | None = None,
    allow_download: bool = False,
    samples: int = 100,
) -> TemplateReport:
    """``dataprep check-template``: load ``model``'s tokenizer (or ``chat_template`` instead of its template) and
    lint it, with the first ``samples`` rows of ``dataset`` (any shape the row pipeline reads) rendered."""
    from .pipeline import conversations
    from .tokenizer import load_tokenizer

    loaded = load_tokenizer(model, chat_template=chat_template, allow_download=allow_download)
    rows = conversations(dataset) if dataset is not None and loaded.template is not None else None
    return lint_template(loaded, rows, dataset=dataset, samples=samples)
