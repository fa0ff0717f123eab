"""Per-row token counts, exactly as the trainer tokenizes a conversation, measured fast.

The trainer calls ``tokenizer.apply_chat_template(messages, tools=..., tokenize=True)``: render the chat template
(jinja2 sandbox), then encode the text with ``add_special_tokens=False``. This module does the same work without
the per-call overhead: the template is compiled once (by transformers' own compiler, so the environment, globals
and ``{% generation %}`` tracker are identical), conversations are rendered in batches, and the texts go through
the fast tokenizer's batch encoder (Rust, parallel, GIL released). Rendering of the next batch overlaps the
encoding of the current one; ``workers`` > 1 (or ``auto`` on a large input) hands batches to a pool of processes
started once (``_Pool``). ``Measuring`` takes rows one at a time, so preflight measures in the pass that splits.

Prefix masking renders every prefix of a conversation. A template that reads ``messages`` once, front to back,
writes each prefix as the whole's first characters plus a closing text, so the whole is rendered once and the
prefixes read off it (``_render_probed``), once the first rows showed it by rendering every prefix; each prefix's
length is then read off the whole's piece layout (``PieceCounter.layout``) instead of encoding it.

Counting only needs lengths, and the tokenizer encodes the text between added tokens piece by piece
(``PieceCounter``), so the prefix-diff path counts each distinct piece once: the prompt it renders a second time,
template scaffolding, a system prompt or tool schema shared by many rows cost a dictionary lookup. The piece
counts are checked against whole-text encoding on the first batch, and the counter switches itself off for a
tokenizer where they differ. The generation-tag path needs token positions: through the piece counter
(``PieceCounter.count_tracked``) a piece wholly inside or outside the ``{% generation %}`` spans only needs its
count, and a piece a span edge falls in is encoded with offsets. That pays only when rows share text (a system
prompt, tool schemas): it is used when the first batch agrees with whole-text encoding and the cache spares at
least half of its characters. Otherwise whole texts are encoded, and each span's tokens found with two
char-to-token lookups instead of building every token's offsets; the lookups are checked against the offsets
rule on the first rows, and dropped for the run if they ever disagree.

Per row it records, kept in int32 numpy arrays so a million rows stay a few megabytes:

- ``total``: ``len(apply_chat_template(messages, tools=tools, tokenize=True)["input_ids"])``, untruncated (the
  trainer's ``input_ids`` are these tokens minus the last one, after the shift).
- ``supervised``: the trainer's labels that are not -100, i.e. the loss mask of ``dataprep.trainer`` (the one
  model of AutoModel's ChatDataset) without position 0. ``generation_tags``: transformers' ``assistant_masks``,
  computed here with the fast paths described above. ``prefix_with_header`` / ``prefix_without_header``: every
  prefix AutoModel renders is rendered and encoded to token ids, and ``dataprep.trainer``'s prefix functions run
  on them, so the prefix check, the trailing-EOS exception and the generation-prompt block are the trainer's.
- ``turns``: the number of assistant messages.
- ``unmaskable_from``: for prefix masking, the token position past which the trainer raises "Cannot build an
  answer-only loss mask" (``NO_LIMIT`` when it never does).

Rows ChatDataset raises on while reading them (``dataprep.trainer.RowRejected``) and rows the template cannot
render are not measured; they are kept in ``TokenCounts.rejected`` with a finding code.
"""

from __future__ import annotations

import json
import os
import re
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

import numpy as np

from . import trainer
from .hf_internals import backend_of, compile_template, generate, tracking
from .trainer import MASK_SOURCES  # noqa: F401 - re-exported

_START, _END = itemgetter(0), itemgetter(1)

DEFAULT_BATCH_ROWS = 256
NO_LIMIT = np.iinfo(np.int32).max  # unmaskable_from of a row the trainer always masks


_EMPTY_I32 = np.zeros(0, dtype=np.int32)


@dataclass(frozen=True)
class TokenCounts:
    """Per-row counts in input order. ``rows`` are the 1-based input row numbers of the rows measured.

    Supervised labels sit in runs ``[run_start, run_end)`` of token positions (never position 0, which the
    shift drops), ``run_row`` indexing the row (a position in these arrays, not a row number); truncation uses
    them to tell which supervised tokens a cut keeps. Rows not measured are in ``rejected`` as (row, finding
    code, message): ``template_render_error`` when the template fails, or the code of what ChatDataset raises.
    """

    rows: np.ndarray  # int64
    total: np.ndarray  # int32
    supervised: np.ndarray  # int32
    turns: np.ndarray  # int32
    mask_source: str
    rejected: tuple[tuple[int, str, str], ...] = ()
    run_row: np.ndarray = field(default_factory=lambda: _EMPTY_I32)
    run_start: np.ndarray = field(default_factory=lambda: _EMPTY_I32)
    run_end: np.ndarray = field(default_factory=lambda: _EMPTY_I32)
    unmaskable_from: np.ndarray | None = None  # int32 per row; NO_LIMIT: prefix masking never fails

    @property
    def render_errors(self) -> tuple[tuple[int, str], ...]:
        """(row, message) of the rows the chat template could not render."""
        return tuple((r, m) for r, c, m in self.rejected if c == "template_render_error")

    def unmaskable(self, seq_length: int | None = None) -> np.ndarray:
        """Positions of the rows whose loss mask the trainer cannot build (with truncation to ``seq_length``)."""
        if self.unmaskable_from is None:
            return np.zeros(0, dtype=np.int64)
        limit = NO_LIMIT if seq_length is None else seq_length
        return np.flatnonzero(self.unmaskable_from < limit)

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    @classmethod
    def from_lists(
        cls,
        total: Iterable[int],
        supervised: Iterable[int] | None = None,
        *,
        rows: Iterable[int] | None = None,
        turns: Iterable[int] | None = None,
        runs: Iterable[tuple[int, int, int]] | None = None,
        mask_source: str = "generation_tags",
        unmaskable_from: Iterable[int] | None = None,
    ) -> TokenCounts:
        """Counts from plain lists (hand-made distributions in tests, or counts computed elsewhere).

        Without ``runs`` each row's supervised tokens are taken to be its last ones (a single-turn chat).
        """
        t = np.asarray(list(total), dtype=np.int32)
        s = t.copy() if supervised is None else np.asarray(list(supervised), dtype=np.int32)
        r = (
            np.arange(1, len(t) + 1, dtype=np.int64)
            if rows is None
            else np.asarray(list(rows), dtype=np.int64)
        )
        u = np.ones_like(t) if turns is None else np.asarray(list(turns), dtype=np.int32)
        if not (len(r) == len(t) == len(s) == len(u)):
            raise ValueError("rows, total, supervised and turns must have the same length")
        if runs is None:
            has = s > 0
            run_row = np.flatnonzero(has).astype(np.int32)
            run_start, run_end = (t - s)[has], t[has]
        else:
            arr = np.asarray(list(runs), dtype=np.int32).reshape(-1, 3)
            run_row, run_start, run_end = arr[:, 0], arr[:, 1], arr[:, 2]
        um = None if unmaskable_from is None else np.asarray(list(unmaskable_from), dtype=np.int32)
        return cls(
            r, t, s, u, mask_source, (), run_row, run_start.astype(np.int32), run_end.astype(np.int32), um
        )

    def subset(self, keep: np.ndarray) -> TokenCounts:
        """The rows where ``keep`` (one bool per row) holds, their runs re-indexed; ``rejected`` unchanged."""
        keep = np.asarray(keep, dtype=bool)
        new_pos = (np.cumsum(keep) - 1).astype(np.int32)
        run_keep = keep[self.run_row] if self.run_row.size else np.zeros(0, dtype=bool)
        return TokenCounts(
            self.rows[keep],
            self.total[keep],
            self.supervised[keep],
            self.turns[keep],
            self.mask_source,
            self.rejected,
            new_pos[self.run_row[run_keep]],
            self.run_start[run_keep],
            self.run_end[run_keep],
            None if self.unmaskable_from is None else self.unmaskable_from[keep],
        )

    def supervised_kept(self, seq_length: int) -> np.ndarray:
        """Per row, the supervised tokens left after right truncation to ``seq_length`` tokens."""
        kept = np.clip(np.minimum(self.run_end, seq_length) - self.run_start, 0, None)
        return np.bincount(self.run_row, weights=kept, minlength=len(self)).astype(np.int64)

    def first_supervised(self) -> np.ndarray:
        """Per row, the position of the first supervised token (``total`` when the row has none)."""
        first = self.total.astype(np.int64).copy()
        if self.run_row.size:
            np.minimum.at(first, self.run_row, self.run_start)
        return first


@dataclass(frozen=True)
class MeasureSpec:
    """Everything a (worker) process needs to measure exactly like the trainer; picklable."""

    tokenizer_json: str | None  # None: the Measurer is handed the tokenizer's own backend (same process)
    template: str
    tools_template: str  # the template chosen when a row has tools (differs for named template dicts)
    template_kwargs: dict[str, Any] = field(default_factory=dict)  # special tokens the template can read
    split_special_tokens: bool = False
    mask_source: str = "generation_tags"
    piece_cache: bool = True  # count text between added tokens piece by piece, each distinct piece once
    mask_generation_prompt: bool = False  # ChatDataset's mask_generation_prompt
    prompt_modes: tuple[tuple[tuple[str, bool], ...], ...] = ((),)  # enable_thinking modes of the prompt
    eos_id: int | None = None


def resolve_mask_source(chat_template: Any, mask_generation_prompt: bool = False) -> str:
    """The trainer's masking for a template (``dataprep.trainer.resolve_mask_source``)."""
    return trainer.resolve_mask_source(chat_template, mask_generation_prompt)


def make_spec(
    tokenizer_or_loaded: Any,
    *,
    mask_generation_prompt: bool = False,
    piece_cache: bool = True,
    portable: bool = False,
) -> MeasureSpec:
    """A spec from a ``LoadedTokenizer`` or a transformers fast tokenizer with a chat template.

    ``portable``: the tokenizer goes inside the spec as JSON, so another process or node can rebuild it.
    """
    tok = getattr(tokenizer_or_loaded, "tokenizer", tokenizer_or_loaded)
    template = tok.get_chat_template(None, None)
    tools_template = tok.get_chat_template(None, [{"type": "function"}])
    backend = backend_of(tok)
    return MeasureSpec(
        tokenizer_json=backend.to_str() if portable else None,
        template=template,
        tools_template=tools_template,
        template_kwargs=dict(tok.special_tokens_map),
        split_special_tokens=bool(getattr(tok, "split_special_tokens", False)),
        mask_source=resolve_mask_source(tok.chat_template, mask_generation_prompt),
        piece_cache=piece_cache,
        mask_generation_prompt=mask_generation_prompt,
        prompt_modes=tuple(tuple(m.items()) for m in trainer.prompt_modes(tok.chat_template)),
        eos_id=getattr(tok, "eos_token_id", None),
    )


class Measurer:
    """Renders and tokenizes batches of conversations; one per process."""

    INCREMENTAL_CHECKS = 64  # prefixes rendered and compared before the whole's marks are trusted
    PIECE_TRACKED_SHARE = 0.5  # generation tags: pieces only when the first batch encodes at most this share
    VERIFY_TEXTS = 256  # renders of aligned rows encoded whole on the first batch to check the piece lengths

    def __init__(self, spec: MeasureSpec, backend: Any = None):
        from tokenizers import Tokenizer

        self.spec = spec
        self.mask_source = spec.mask_source
        if backend is None:
            if spec.tokenizer_json is None:
                raise ValueError("a Measurer needs a backend tokenizer or a spec with tokenizer_json")
            backend = Tokenizer.from_str(spec.tokenizer_json)
        # apply_chat_template encodes with no truncation and no padding whatever tokenizer.json says; it sets
        # the backend the same way on every call, so doing it here changes nothing for the caller.
        if backend.truncation is not None:
            backend.no_truncation()
        if backend.padding is not None:
            backend.no_padding()
        backend.encode_special_tokens = spec.split_special_tokens
        self._backend = backend
        self._compiled = compile_template(spec.template)
        self._compiled_tools = (
            self._compiled if spec.tools_template == spec.template else compile_template(spec.tools_template)
        )
        self._kwargs = dict(spec.template_kwargs)  # transformers 5.18 passes the special tokens as they are
        # Template.render copies the template's globals (a ChainMap) into a new dict, and again into a set,
        # on every call; they are fixed once compiled, so one plain copy per template serves every row.
        self._globals = {id(c): dict(c.globals) for c in (self._compiled, self._compiled_tools)}
        self._pieces = PieceCounter.build(backend) if spec.piece_cache else None
        self._pieces_verified = False
        self._eos_text = None if spec.eos_id is None else backend.id_to_token(spec.eos_id)
        # incremental prefixes (``_render_probed``): None while the first rows check them, then True or False
        self._incremental: bool | None = None if _reads_messages_in_order(spec) else False
        # (template, tools or not, role of the last message) -> the text the template closes a render with
        self._tails: dict[tuple[int, bool, Any], str] = {}
        self._checked_prefixes = 0

    def _mask_runs(self, enc: Any, spans: list[tuple[int, int]], text_len: int) -> list[tuple[int, int]]:
        """Token runs of transformers 5.18's ``assistant_masks`` for the generation spans."""
        return _hf_runs(enc, spans)

    @property
    def piece_cache_active(self) -> bool:
        return self._pieces is not None

    def _lengths(self, texts: list[str]) -> list[int]:
        """Token counts of texts, as ``encode(text, add_special_tokens=False)`` gives them."""
        if not texts:
            return []
        if self._pieces is not None:
            counts = self._pieces.count(texts)
            if self._pieces_verified:
                return counts
            # The first batch is also encoded whole: the piecewise counts must agree on every text, or
            # this tokenizer splits in a way the piece counter does not reproduce and it is switched off.
            direct = [len(e) for e in self._backend.encode_batch_fast(texts, add_special_tokens=False)]
            if direct == counts:
                self._pieces_verified = True
            else:
                self._pieces = None
            return direct
        return [len(e) for e in self._backend.encode_batch_fast(texts, add_special_tokens=False)]

    def _tracked_exact(
        self, texts: list[str], spans: list[list[tuple[int, int]]]
    ) -> list[tuple[int, list[tuple[int, int]]]]:
        """(token count, merged mask runs) per text from whole-text encoding: the assistant-mask rule itself."""
        if not texts:
            return []
        out = []
        for enc, gen, text in zip(
            self._backend.encode_batch(texts, add_special_tokens=False), spans, texts, strict=True
        ):
            out.append((len(enc), _merge_runs(self._mask_runs(enc, gen, len(text))) if gen else []))
        return out

    def _tracked_counts(
        self, texts: list[str], spans: list[list[tuple[int, int]]]
    ) -> list[tuple[int, list[tuple[int, int]]]]:
        """Like ``_tracked_exact``; piece by piece once the piece counter agreed with it on a first batch."""
        if self._pieces is None:
            return self._tracked_exact(texts, spans)
        got = self._pieces.count_tracked(texts, spans)
        if self._pieces_verified:
            redo = [k for k, g in enumerate(got) if g is None]
            if redo:
                exact = self._tracked_exact([texts[k] for k in redo], [spans[k] for k in redo])
                for k, e in zip(redo, exact, strict=True):
                    got[k] = e
            return got  # type: ignore[return-value]
        # First batch: every text is also encoded whole; counts and mask runs must agree on every one of them,
        # or the piece counter is switched off for this tokenizer.
        # Pieces a span edge falls in need token offsets, so the piece path only saves the encoding of pieces
        # it has seen before (a shared system prompt, tool schemas); on a batch where that is under half of
        # the text (alpaca-like rows, whose answers are the edge pieces) encoding whole texts is faster.
        exact = self._tracked_exact(texts, spans)
        pays = self._pieces.last_encoded_chars <= self.PIECE_TRACKED_SHARE * sum(map(len, texts))
        if pays and all(g is None or g == e for g, e in zip(got, exact, strict=True)):
            self._pieces_verified = True
        else:
            self._pieces = None
        return exact

    # -- rendering (what render_jinja_template does for one chat) --------------------------------------------
    def _prepare(self, conv: dict) -> tuple[list[dict], Any]:
        """(messages, tools) as ChatDataset hands them to the template (``dataprep.trainer.row_inputs``)."""
        return trainer.row_inputs(conv)

    def _generate(
        self, compiled: Any, messages: list[dict], tools: Any, add_generation_prompt: bool, extra: Any = ()
    ) -> Any:
        """``compiled.generate(...)``'s stream of text, with the globals copied once per template, not per call."""
        variables = {
            "messages": messages,
            "tools": tools,
            "documents": None,
            "add_generation_prompt": add_generation_prompt,
            **self._kwargs,
            **dict(extra),
        }
        return generate(compiled, self._globals[id(compiled)], variables)

    def _render(
        self, messages: list[dict], tools: Any, add_generation_prompt: bool = False, extra: Any = ()
    ) -> str:
        compiled = self._compiled if tools is None else self._compiled_tools
        try:
            return "".join(self._generate(compiled, messages, tools, add_generation_prompt, extra))
        except Exception:  # noqa: BLE001 - what Template.render does: jinja rewrites the traceback, re-raises
            compiled.environment.handle_exception()

    def _render_tracked(self, messages: list[dict], tools: Any) -> tuple[str, list[tuple[int, int]]]:
        """What transformers' ``_render_with_assistant_indices`` does: text and ``{% generation %}`` spans."""
        compiled = self._compiled if tools is None else self._compiled_tools
        blocks: list[str] = []
        spans: list[tuple[int, int]] = []
        with tracking(compiled, blocks, spans):
            try:
                for block in self._generate(compiled, messages, tools, False):
                    blocks.append(block)
            except Exception:  # noqa: BLE001 - as Template.generate
                compiled.environment.handle_exception()
            return "".join(blocks), spans

    def _trainer_render(
        self, messages: list[dict], tools: Any, add_generation_prompt: bool = False, extra=()
    ):
        """One ``apply_chat_template`` call of the trainer (with NeMoAutoTokenizer's system-role fallback)."""
        return trainer.with_system_fallback(
            lambda ms: self._render(ms, tools, add_generation_prompt, extra), messages
        )

    def _plan_exact(self, pos: int, messages: list[dict], tools: Any, rb: RenderedBatch) -> None:
        """Render every text the trainer renders for this row; ``count_batch`` encodes them and masks on ids."""
        tagged = self.mask_source == "generation_tags"
        probe: _Probe | None = None
        roles = [m.get("role") for m in messages]
        if tagged:
            text, spans = trainer.with_system_fallback(lambda ms: self._render_tracked(ms, tools), messages)
        elif self._incremental is not False and messages:
            text, probe = self._render_probed(messages, tools)
            spans = []
            if self._incremental is None and text != self._trainer_render(messages, tools):
                # the list the probe hands the template changed what it wrote: render as the trainer does
                self._incremental = False
                text, probe = self._trainer_render(messages, tools), None
            if probe is not None and not self._closes_as_learned(probe, text, roles):
                probe = None
        else:
            text, spans = self._trainer_render(messages, tools), []
        n = len(messages)
        assistants = [i for i, r in enumerate(roles) if r == "assistant"]
        needed: set[int] = set()
        if not tagged:
            needed.update(k for i in assistants for k in (i, i + 1) if k != n)
        if self.spec.mask_generation_prompt:
            needed.update(assistants)
        plan = _ExactPlan(pos, roles, rb.add_exact(text, spans), {}, {})
        for k in sorted(needed):
            guess = None if probe is None else self._predicted(probe, text, roles, k)
            if guess is not None and self._incremental:
                plan.prefixes[k] = rb.add_exact(guess)
                continue
            try:
                plan.prefixes[k] = rb.add_exact(self._trainer_render(messages[:k], tools))
            except Exception as err:  # noqa: BLE001 - raised again where the trainer would meet it
                plan.prefixes[k] = err
            if self._incremental is None and probe is not None:
                self._learn(probe, text, roles, k, plan.prefixes[k], rb.exact_texts)
        if self.spec.mask_generation_prompt:
            for i in assistants:
                try:
                    plan.prompts[i] = [
                        rb.add_exact(self._trainer_render(messages[:i], tools, True, mode))
                        for mode in self.spec.prompt_modes
                    ]
                except Exception as err:  # noqa: BLE001
                    plan.prompts[i] = err
        if not tagged and assistants:
            plan.aligned = self._align(plan, rb.exact_texts)
        rb.plans.append(plan)

    # -- incremental prefixes: render the whole once, read each prefix render off it ------------------------
    def _render_probed(self, messages: list[dict], tools: Any) -> tuple[str, _Probe | None]:
        """The trainer's render of the whole, noting how much text was out when each message was first read.

        A template that reads ``messages`` once, front to back (its only other reads: the first message, and
        a tail slice such as ``messages[1:]``), writes ``messages[:k]``'s render as the whole's first characters up
        to message ``k``'s mark, then its closing text (``tail``). Anything else it does with the list (a second
        pass, its length, a look back or ahead, a reversed copy) marks the row unsafe, and its prefixes are
        rendered.
        """
        if any(m.get("role") == "system" for m in messages):
            try:
                return self._render_probed_once(messages, tools)
            except Exception as err:
                if not trainer.is_system_unsupported(err):
                    raise
            # NeMoAutoTokenizer's system merge: the prefixes merge differently; render them
            return trainer.with_system_fallback(lambda ms: self._render(ms, tools), messages), None
        return self._render_probed_once(messages, tools)

    def _render_probed_once(self, messages: list[dict], tools: Any) -> tuple[str, _Probe | None]:
        trainer.with_system_fallback(lambda ms: None, messages)  # the trainer's checks before rendering
        compiled = self._compiled if tools is None else self._compiled_tools
        probe = _Probe((id(compiled), tools is not None))
        chunks: list[str] = []
        try:
            for chunk in self._generate(compiled, _ProbedMessages(messages, probe), tools, False):
                chunks.append(chunk)
                probe.length += len(chunk)
        except Exception:  # noqa: BLE001 - as Template.render
            compiled.environment.handle_exception()
        return "".join(chunks), (None if probe.unsafe or probe.passes != 1 else probe)

    def _predicted(self, probe: _Probe, text: str, roles: list[str], k: int) -> str | None:
        mark = probe.marks.get(k)
        tail = self._tails.get((*probe.key, roles[k - 1])) if k >= 1 else None
        if mark is None or tail is None:
            return None
        return text[:mark] + tail

    def _learn(self, probe: _Probe, text: str, roles: list[str], k: int, got: Any, texts: list[str]) -> None:
        """On the first rows: each prefix the template rendered, compared with what the whole's marks give; one
        difference and prefixes are rendered for the rest of the run."""
        mark = probe.marks.get(k)
        if k < 1 or mark is None:
            return
        if isinstance(got, BaseException):  # the whole renders, this prefix does not: the marks cannot say so
            self._incremental = False
            return
        real = texts[got]
        if not real.startswith(text[:mark]):
            self._incremental = False
            return
        tail = real[mark:]
        known = self._tails.setdefault((*probe.key, roles[k - 1]), tail)
        if known != tail:
            self._incremental = False
            return
        self._checked_prefixes += 1

    def _closes_as_learned(self, probe: _Probe, text: str, roles: list[str]) -> bool:
        """Every row, free: the whole's own closing text (after the pass over ``messages`` ended) must be the one
        learned for its last role; a row that closes otherwise (tools, a flag the template set on the way) has
        its prefixes rendered. While learning, the whole's closing text is one more example."""
        if probe.end is None:
            return False
        key, tail = (*probe.key, roles[-1]), text[probe.end :]
        if self._incremental is None:
            if self._tails.setdefault(key, tail) != tail:
                self._incremental = False
            return True
        return self._tails.get(key) == tail

    def _end_of_first_batch(self) -> None:
        if self._incremental is None and self._checked_prefixes >= self.INCREMENTAL_CHECKS:
            self._incremental = True

    def _matches(self, text: str) -> list[tuple[int, int]]:
        assert self._pieces is not None and self._pieces._split is not None
        return [m.span() for m in self._pieces._split.finditer(text)]

    def _cuts(self, text: str) -> _Cuts:
        matches = self._matches(text)
        starts = [a for a, _ in matches]
        return _Cuts(matches, starts, set(starts))

    def _align(self, plan: _ExactPlan, texts: list[str]) -> _Aligned | None:
        """Whether this row's renders provably tokenize as prefixes of one another, text (and one piece each)
        deciding, so piece-counter lengths give the trainer's mask without full token ids.

        The tokenizer encodes the text between added tokens piece by piece (``PieceCounter``). A render ``P``
        that equals the first characters of a longer one ``R`` and ends where an added token starts in ``R`` (or
        at its end) has ``ids(P) == ids(R)[:count(P)]``. When ``P`` ends inside a piece of ``R``, the same holds
        exactly when the ids of that piece's part in ``P`` are a prefix of the ids of the whole piece: one short
        encoding decides (``_count_aligned``). A render that is such a prefix plus the EOS token alone is the
        trainer's trailing-EOS exception. Anything else (text that differs, a cut inside an added token): None,
        and the row is masked on full token ids.
        """
        if self._pieces is None or self._pieces._split is None:
            return None
        if any(isinstance(v, BaseException) for v in (*plan.prefixes.values(), *plan.prompts.values())):
            return None
        full = texts[plan.full]
        full_cuts = self._cuts(full)
        eos = self._eos_text
        al = _Aligned([], [], full_cuts.matches)
        trailing: set[int] = set()
        for k, t in plan.prefixes.items():
            p = texts[t]
            if full.startswith(p):
                cut = _cut_at(full_cuts, len(full), len(p))
                if cut is False:
                    return None
                if cut is not None:
                    al.edges.append(("prefix", None, plan.full, cut))
                continue
            if eos and p.endswith(eos):
                b = len(p) - len(eos)
                # b < n: a prefix longer than the whole fails the trainer's check, EOS or not
                if 0 < b < len(full) and b in full_cuts.start_set and full.startswith(p[:b]):
                    # the matches of ``p`` from the last one the whole has before ``b`` on (they agree before)
                    i = bisect_left(full_cuts.starts, b) - 1
                    q = full_cuts.matches[i][1] if i >= 0 else 0
                    last = None
                    for last in self._pieces._split.finditer(p, q):  # noqa: B007
                        pass
                    if last is not None and last.span() == (b, len(p)):
                        trailing.add(k)
                        continue
            return None
        for i, prompt_texts in plan.prompts.items():
            if i in trailing:
                continue  # not an exact prefix of the whole: the trainer removes no prompt from this turn
            base = texts[plan.prefixes[i]]
            for j in prompt_texts:
                g = texts[j]
                if not g.startswith(base) or not full.startswith(g):
                    return None
                if len(g) == len(base):
                    continue  # an empty block removes nothing
                # the base is a prefix of the whole (checked above), so only the block's cut in the whole matters:
                # when the prompted render's ids are a prefix of the whole's, they extend the base's too
                block_cut = _cut_at(full_cuts, len(full), len(g))
                if block_cut is False:
                    return None
                al.prompts.append((i, j))
                if block_cut is not None:
                    al.edges.append(("block", len(al.prompts) - 1, plan.full, block_cut))
        return al

    def render_batch(self, convs: list[dict]) -> RenderedBatch:
        """Render one batch: the texts to encode and how to turn their tokens into per-row numbers."""
        rb = RenderedBatch(turns=np.zeros(len(convs), dtype=np.int32))
        fast = self.mask_source == "generation_tags" and not self.spec.mask_generation_prompt
        for i, conv in enumerate(convs):
            try:
                messages, tools = self._prepare(conv)
                rb.turns[i] = sum(1 for m in messages if m.get("role") == "assistant")
                if fast:
                    text, gen = trainer.with_system_fallback(
                        lambda ms, tools=tools: self._render_tracked(ms, tools), messages
                    )
                    rb.texts.append(text)
                    rb.spans.append(gen)
                    rb.tracked.append(i)
                else:
                    self._plan_exact(i, messages, tools, rb)
            except trainer.RowRejected as r:
                rb.errors.append((i, r.code, r.message))
            except Exception as err:  # noqa: BLE001 - a template may raise anything; the row is reported
                rb.errors.append((i, "template_render_error", _error_text(err)))
        self._end_of_first_batch()
        return rb

    # -- tokenizing ---------------------------------------------------------------------------------------
    def _count_aligned(self, rb: RenderedBatch, plans: list[_ExactPlan]) -> dict[int, tuple[int, list, int]]:
        """Rows whose renders line up (``_align``): lengths from the piece counter, no full token ids. A row
        whose prefix turns out not to be one on ids is left out (masked on full ids: the trainer raises).

        Every render of an aligned row is the whole text's first characters (or those plus the EOS token), so
        the whole text is laid out once (``PieceCounter.layout``: tokens up to each added-token boundary) and
        each render's length read off it: at a boundary, the tokens before it; inside a piece, the tokens before
        the piece plus the ids of the piece's cut part, which must be a prefix of the whole piece's ids. The
        pieces a cut falls in are encoded to ids once, and their length serves the whole text's count too. On
        the first batch every render is also encoded whole and the lengths compared: any difference switches
        the piece counter off for the run.
        """
        pieces = self._pieces
        if pieces is None:  # the piece counter disagreed with the tokenizer on its first batch: no proof
            return {}
        texts = rb.exact_texts
        # (plan, text index, character end in the whole, +1 for a trailing EOS) of every render to measure
        wants: list[list[tuple[int, int, int]]] = []
        cut_starts: list[set[int]] = []
        for p in plans:
            full = texts[p.full]
            ends = []
            for t in (*p.prefixes.values(), *(j for _, j in p.aligned.prompts)):  # type: ignore[union-attr]
                x = texts[t]
                if full.startswith(x):
                    ends.append((t, len(x), 0))
                else:  # a prefix plus the EOS token (``_align`` checked the shape)
                    ends.append((t, len(x) - len(self._eos_text or ""), 1))
            wants.append(ends)
            cut_starts.append({e[3][0] for e in p.aligned.edges})  # type: ignore[union-attr]
        layouts = pieces.layout(
            [texts[p.full] for p in plans],
            cut_starts,
            [p.aligned.matches for p in plans],  # type: ignore[union-attr]
        )
        parts_first: list[str] = []
        parts_rest: list[str] = []
        where: list[
            list[tuple[int, Any]]
        ] = []  # per plan: (text index, (cum before, first?, part index) | n)
        for p, ends, lay in zip(plans, wants, layouts, strict=True):
            got: list[tuple[int, Any]] = []
            for t, end, extra in ends:
                at = lay.bounds.get(end)
                if at is not None:
                    got.append((t, at + extra))
                    continue
                a = lay.piece_start(end)
                part = texts[p.full][a:end]
                if a == 0:
                    got.append((t, (lay.bounds[a], True, len(parts_first), a, extra)))
                    parts_first.append(part)
                else:
                    got.append((t, (lay.bounds[a], False, len(parts_rest), a, extra)))
                    parts_rest.append(part)
            where.append(got)
        enc_first = pieces.ids_of(parts_first, first=True)
        enc_rest = pieces.ids_of(parts_rest, first=False)
        out: dict[int, tuple[int, list, int]] = {}
        check: list[tuple[int, int]] = []  # (text index, length) to compare on the first batch
        for p, got, lay in zip(plans, where, layouts, strict=True):
            n = lay.total
            lens = {p.full: n}
            proven = {p.full: True}
            for t, v in got:
                if isinstance(v, int):
                    lens[t], proven[t] = v, True
                    continue
                before, first, k, a, extra = v
                part = (enc_first if first else enc_rest)[k]
                whole = lay.cut_ids.get(a)
                lens[t] = before + len(part) + extra
                proven[t] = whole is not None and whole[: len(part)] == part
            check += lens.items()
            length = {k: lens[t] for k, t in p.prefixes.items()}
            if not all(proven[t] for t in p.prefixes.values()):
                continue
            length[len(p.roles)] = n
            mask = bytearray(n)
            for i, role in enumerate(p.roles):
                if role == "assistant":
                    lo, hi = min(length[i], n), min(length[i + 1], n)
                    if hi > lo:
                        mask[lo:hi] = b"\x01" * (hi - lo)
            matched: dict[int, int] = {}
            for i, j in p.aligned.prompts:  # type: ignore[union-attr]
                # the base's ids are a prefix of the whole's (every prefix is proven here), so the trainer
                # removes the block exactly when the prompted render's ids are a prefix of the whole's too
                if proven[j]:
                    matched[i] = max(matched.get(i, 0), lens[j] - length[i])
            for i, m in matched.items():
                lo, hi = length[i], min(length[i] + m, n)
                if hi > lo:
                    mask[lo:hi] = bytes(hi - lo)
            out[p.pos] = (n, _byte_runs(mask), NO_LIMIT)
        if not self._pieces_verified:
            # the first rows' renders, encoded whole: enough to catch a tokenizer the pieces do not reproduce
            idx = [t for t, _ in check[: self.VERIFY_TEXTS]]
            check = check[: self.VERIFY_TEXTS]
            encs = self._backend.encode_batch_fast([texts[t] for t in idx], add_special_tokens=False)
            direct = [len(e) for e in encs]
            if direct == [n for _, n in check]:
                self._pieces_verified = True
            else:
                self._pieces = None
                return {}
        return out

    def _count_exact(self, rb: RenderedBatch) -> dict[int, tuple[int, list[tuple[int, int]], int]]:
        """Per exact-plan row: (total, label runs, unmaskable_from), or the row goes to ``rb.errors``."""
        if not rb.plans:
            return {}
        out: dict[int, tuple[int, list[tuple[int, int]], int]] = {}
        aligned = [p for p in rb.plans if p.aligned is not None]
        if aligned and self._pieces is not None:
            got = self._count_aligned(rb, aligned)
            if self._pieces is not None:  # the piece counter agreed with whole-text encoding: the proof holds
                out.update(got)
        plans = [p for p in rb.plans if p.pos not in out]
        if not plans:
            return out
        used = sorted(
            {
                t
                for p in plans
                for t in (
                    p.full,
                    *(v for v in p.prefixes.values() if isinstance(v, int)),
                    *(j for v in p.prompts.values() if isinstance(v, list) for j in v),
                )
            }
        )
        enc = self._backend.encode_batch_fast([rb.exact_texts[t] for t in used], add_special_tokens=False)
        ids = dict(zip(used, (e.ids for e in enc), strict=True))
        tagged = self.mask_source == "generation_tags"
        eos = self.spec.eos_id

        for plan in plans:

            def prefix(k: int, plan: _ExactPlan = plan) -> list[int]:
                got = plan.prefixes[k]
                if isinstance(got, BaseException):
                    raise got
                return ids[got]

            def prompts(i: int, plan: _ExactPlan = plan) -> list[list[int]]:
                got = plan.prompts[i]
                if isinstance(got, BaseException):
                    raise got
                return [ids[j] for j in got]

            try:
                full = ids[plan.full]
                um = NO_LIMIT
                if tagged:
                    enc = self._backend.encode(rb.exact_texts[plan.full], add_special_tokens=False)
                    mask = trainer.hf_assistant_mask(len(full), rb.exact_spans[plan.full], enc.char_to_token)
                else:
                    pm = trainer.prefix_mask(plan.roles, full, prefix, eos)
                    mask = pm.mask
                    if pm.unmaskable_from is not None:
                        um = pm.unmaskable_from
                if self.spec.mask_generation_prompt:
                    gm = trainer.generation_prompt_mask(plan.roles, full, prefix, prompts)
                    mask = [m if not g else 0 for m, g in zip(mask, gm, strict=True)]
            except trainer.RowRejected as r:
                rb.errors.append((plan.pos, r.code, r.message))
                continue
            except Exception as err:  # noqa: BLE001 - a prefix the template could not render
                rb.errors.append((plan.pos, "template_render_error", _error_text(err)))
                continue
            out[plan.pos] = (len(full), trainer.mask_runs(mask), um)
        return out

    def count_batch(self, rb: RenderedBatch) -> BatchCounts:
        """Token counts (and supervised label runs) for the rows of a rendered batch that the trainer reads."""
        per_row: dict[int, tuple[int, list[tuple[int, int]], int]] = {}
        if rb.tracked:
            for pos, (n, runs) in zip(rb.tracked, self._tracked_counts(rb.texts, rb.spans), strict=True):
                per_row[pos] = (n, runs, NO_LIMIT)
        per_row.update(self._count_exact(rb))
        ok = sorted(per_row)
        total = np.zeros(len(ok), dtype=np.int32)
        sup = np.zeros(len(ok), dtype=np.int32)
        um = np.full(len(ok), NO_LIMIT, dtype=np.int32)
        run_row: list[int] = []
        run_start: list[int] = []
        run_end: list[int] = []
        for k, pos in enumerate(ok):
            n, runs, limit = per_row[pos]
            total[k] = n
            um[k] = limit
            s = 0
            for lo, hi in runs:
                lo = max(lo, 1)  # the shift: the first token is never a label
                if hi > lo:
                    run_row.append(k)
                    run_start.append(lo)
                    run_end.append(hi)
                    s += hi - lo
            sup[k] = s
        oka = np.asarray(ok, dtype=np.int64)
        return BatchCounts(
            ok=oka,
            total=total,
            supervised=sup,
            turns=rb.turns[oka] if len(ok) else np.zeros(0, dtype=np.int32),
            run_row=np.asarray(run_row, dtype=np.int32),
            run_start=np.asarray(run_start, dtype=np.int32),
            run_end=np.asarray(run_end, dtype=np.int32),
            errors=sorted(rb.errors),
            unmaskable_from=um,
        )


@dataclass
class BatchCounts:
    ok: np.ndarray  # positions (in the batch) of the rows measured
    total: np.ndarray
    supervised: np.ndarray
    turns: np.ndarray
    run_row: np.ndarray  # index into ok
    run_start: np.ndarray
    run_end: np.ndarray
    errors: list[tuple[int, str, str]]  # (position, finding code, message)
    unmaskable_from: np.ndarray = field(default_factory=lambda: _EMPTY_I32)


@dataclass
class _ExactPlan:
    pos: int
    roles: list[str]
    full: int  # index into RenderedBatch.exact_texts
    prefixes: dict[int, Any]  # k -> text index of messages[:k] (or the error rendering it raised)
    prompts: dict[int, Any]  # assistant index -> text indices of its generation prompts (or the error)
    # Set when every render lines up with the whole at added-token boundaries (``Measurer._align``): the token
    # ids are then provably prefixes of one another, and lengths from the piece counter give the trainer's mask.
    aligned: _Aligned | None = None


@dataclass
class _Aligned:
    # cuts that fall inside a piece of the whole: (kind: prefix | block, prompt number, text index of the longer
    # render, (piece start, cut, piece end))
    edges: list[tuple[str, int | None, int, tuple[int, int, int]]]
    prompts: list[tuple[int, int]]  # (assistant index, text index of one of its generation prompts)
    matches: list[tuple[int, int]]  # the whole text's added-token matches


class _Probe:
    """What a probed render saw: text out so far, and the length out when each message was first read."""

    __slots__ = ("end", "key", "length", "marks", "passes", "unsafe")

    def __init__(self, key: tuple[int, bool] = (0, False)) -> None:
        self.key = key  # (template, tools or not): what the closing text may depend on besides the last role
        self.end: int | None = None  # text out when the pass over the messages ended
        self.length = 0
        self.marks: dict[int, int] = {}
        self.passes = 0
        self.unsafe = False


class _ProbedMessages(list):
    """The messages list a probed render reads: notes each first read of a message during the one pass."""

    def __init__(self, items: Iterable[dict], probe: _Probe, offset: int = 0):
        super().__init__(items)
        self._probe = probe
        self._offset = offset

    def __iter__(self):
        probe, off = self._probe, self._offset
        probe.passes += 1
        marks = probe.marks
        for i, m in enumerate(list.__iter__(self)):
            marks.setdefault(off + i, probe.length)
            yield m
        if probe.end is None:
            probe.end = probe.length

    def __getitem__(self, key):
        if isinstance(key, slice):
            start = key.start or 0
            if key.stop is None and key.step in (None, 1) and start >= 0:
                return _ProbedMessages(list.__getitem__(self, key), self._probe, self._offset + start)
        elif isinstance(key, int) and self._offset == 0 and key == 0:
            return list.__getitem__(self, key)
        self._probe.unsafe = True
        return list.__getitem__(self, key)

    def _unsafe(name: str):  # noqa: N805 - builds methods
        def method(self, *args):
            self._probe.unsafe = True
            return getattr(list, name)(self, *args)

        return method

    __len__ = _unsafe("__len__")
    __reversed__ = _unsafe("__reversed__")
    __contains__ = _unsafe("__contains__")
    index = _unsafe("index")
    count = _unsafe("count")
    copy = _unsafe("copy")
    del _unsafe

    def __bool__(self) -> bool:  # ``{% if messages %}``: true for every prefix rendered this way (k >= 1)
        return list.__len__(self) > 0


_PEEKS = {"last", "length", "revindex", "revindex0", "nextitem"}


def _reads_messages_in_order(spec: MeasureSpec) -> bool:
    """False when a template asks a loop for what comes next (``loop.last`` and kin read ahead), which would
    move the marks ``_render_probed`` takes; everything else it does with ``messages`` is checked per row."""
    import jinja2
    from jinja2 import nodes

    env = jinja2.Environment(extensions=["jinja2.ext.loopcontrols", "jinja2.ext.do"])
    for source in {spec.template, spec.tools_template}:
        try:
            tree = env.parse(source)
        except Exception:  # noqa: BLE001 - a template jinja cannot parse here: render everything
            return False
        for node in tree.find_all(nodes.Getattr):
            if isinstance(node.node, nodes.Name) and node.node.name == "loop" and node.attr in _PEEKS:
                return False
        for node in tree.find_all(nodes.Getitem):
            if isinstance(node.node, nodes.Name) and node.node.name == "loop":
                return False
    return True


@dataclass
class _Layout:
    """A text's tokens up to each added-token boundary (``PieceCounter.layout``)."""

    total: int
    bounds: dict[int, int]  # character position of a boundary -> tokens before it
    starts: list[int]  # start of every piece, ascending
    cut_ids: dict[int, list[int]]  # piece start -> ids, for the pieces a shorter render ends inside

    def piece_start(self, end: int) -> int:
        return self.starts[bisect_right(self.starts, end) - 1]


def _byte_runs(mask: bytearray) -> list[tuple[int, int]]:
    """``trainer.mask_runs`` for a 0/1 bytearray, at C speed: runs of 1 from position 1 on."""
    runs: list[tuple[int, int]] = []
    n = len(mask)
    i = mask.find(1, 1)
    while i != -1:
        j = mask.find(0, i)
        if j == -1:
            j = n
        runs.append((i, j))
        i = mask.find(1, j)
    return runs


@dataclass
class _Cuts:
    """A text's added-token matches, for ``_cut_at``."""

    matches: list[tuple[int, int]]
    starts: list[int]
    start_set: set[int]


def _cut_at(cuts: _Cuts, n: int, end: int) -> tuple[int, int, int] | bool | None:
    """Where a shorter render ending at ``end`` cuts a longer one: None at an added-token boundary (or the end),
    False inside an added token, else the piece ``(start, end, piece end)`` it cuts."""
    if end == n or end in cuts.start_set:
        return None
    i = bisect_left(cuts.starts, end) - 1  # the last match starting before the cut (matches do not overlap)
    if i >= 0 and cuts.matches[i][1] > end:
        return False
    nxt = cuts.starts[i + 1] if i + 1 < len(cuts.starts) else n
    return (cuts.matches[i][1] if i >= 0 else 0, end, nxt)


@dataclass
class RenderedBatch:
    turns: np.ndarray
    texts: list[str] = field(default_factory=list)  # generation-tag rows (fast path)
    spans: list[list[tuple[int, int]]] = field(default_factory=list)
    tracked: list[int] = field(default_factory=list)  # their positions in the batch
    exact_texts: list[str] = field(default_factory=list)  # rows masked on token ids (prefix masking)
    exact_spans: list[list[tuple[int, int]]] = field(default_factory=list)
    plans: list[_ExactPlan] = field(default_factory=list)
    errors: list[tuple[int, str, str]] = field(default_factory=list)

    def add_exact(self, text: str, spans: list[tuple[int, int]] | None = None) -> int:
        self.exact_texts.append(text)
        self.exact_spans.append(spans or [])
        return len(self.exact_texts) - 1


def _hf_runs(enc: Any, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """transformers 5.18's ``assistant_masks`` as token runs: for each span, the tokens from the one holding
    its first character to the one holding its last (to the end when that maps to no token, or to token 0:
    transformers tests ``if end_token``); a span whose first character maps to no token ends the loop."""
    n = len(enc)
    runs: list[tuple[int, int]] = []
    for a, b in spans:
        lo = enc.char_to_token(a)
        if lo is None:
            break
        end = enc.char_to_token(b - 1) if b > 0 else None
        hi = end + 1 if end else n
        if hi > lo:
            _add_run(runs, lo, hi)
    return runs


def _error_text(err: BaseException) -> str:
    msg = str(err).strip() or type(err).__name__
    return msg.splitlines()[0][:300]


def _overlapping_runs(offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Token index runs [lo, hi) overlapping the character spans: transformers' assistant-mask rule.

    A token is masked when ``token_end > span_start and token_start < span_end``. Token offsets are ordered
    (starts and ends never decrease), so each span's tokens form one contiguous run found by two binary searches;
    runs are clipped so a token touching two spans counts once.
    """
    runs: list[tuple[int, int]] = []
    last = 0  # tokens before this index are already counted
    for a, b in spans:
        lo = max(bisect_right(offsets, a, key=_END), last)
        hi = bisect_left(offsets, b, key=_START)
        if hi > lo:
            runs.append((lo, hi))
            last = hi
    return runs


def _add_run(runs: list[tuple[int, int]], lo: int, hi: int) -> None:
    if runs and runs[-1][1] >= lo:
        runs[-1] = (runs[-1][0], max(runs[-1][1], hi))
    else:
        runs.append((lo, hi))


def _merge_runs(runs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Ordered, non-overlapping runs with touching ones joined: the same tokens, one canonical form."""
    out: list[tuple[int, int]] = []
    for lo, hi in runs:
        if out and out[-1][1] == lo:
            out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return out


# Rust's char::is_whitespace (Unicode White_Space), what the tokenizers library strips around added tokens.
_WS = "[\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*"


class PieceCounter:
    """Counts tokens of texts piece by piece: the text between added tokens is tokenized independently.

    The tokenizers library first splits the input on its added tokens (leftmost-longest, each token taking the
    whitespace its ``lstrip``/``rstrip`` allow), then normalizes, pre-tokenizes and encodes every piece in
    between on its own. So ``len(encode(text))`` equals the number of added tokens matched plus the sum of
    the pieces' token counts, and a piece seen before (template scaffolding, a shared system prompt, a tool
    schema repeated on every row, the prompt that prefix-diff renders twice) is counted once.

    The one piece-dependent step is Metaspace's ``prepend_scheme: first`` (only a piece at offset 0 gets the
    prefix): pieces not at the start are encoded by a copy with ``never``. ``build`` declines tokenizers it
    cannot reproduce (``single_word`` or normalized added tokens); the caller also checks a first batch.
    """

    MAX_PIECE_CHARS = 256  # longer pieces (mostly one row's own text) are deduplicated within a call only
    MAX_CACHED_CHARS = 4_000_000
    MAX_CACHED_IDS = 4096

    def __init__(self, split_re: re.Pattern | None, first: Any, rest: Any):
        self._split = split_re
        self._first = first
        self._rest = rest
        self._cache_first: dict[str, int] = {}
        self._cache_rest: dict[str, int] = {}
        self._cached_chars = 0
        self._ids_first: dict[str, list[int]] = {}  # short cut parts ("assistant\n") -> ids
        self._ids_rest: dict[str, list[int]] = {}
        self.last_encoded_chars = 0  # characters ``count_tracked`` sent to the tokenizer on its last call

    @classmethod
    def build(cls, backend: Any) -> PieceCounter | None:
        from tokenizers import Tokenizer

        if backend.encode_special_tokens:
            return None
        added = list(backend.get_added_tokens_decoder().values())
        for tok in added:
            if tok.single_word or (tok.normalized and backend.normalizer is not None):
                return None
        alts = []
        for tok in sorted(added, key=lambda t: -len(t.content)):
            if tok.content:
                alts.append(
                    (_WS if tok.lstrip else "") + re.escape(tok.content) + (_WS if tok.rstrip else "")
                )
        split_re = re.compile("|".join(alts)) if alts else None
        rest = backend
        pre = backend.pre_tokenizer
        state = json.loads(pre.__getstate__()) if pre is not None else None
        if state is not None and _set_metaspace_never(state):
            # Pieces never contain added tokens, so a tokenizer sharing the model (no copy) with the changed
            # pre-tokenizer and the same normalizer encodes them as the original does at offsets > 0.
            holder = Tokenizer.from_str(
                json.dumps(
                    {
                        "version": "1.0",
                        "model": {"type": "WordLevel", "vocab": {"<unk>": 0}, "unk_token": "<unk>"},
                        "pre_tokenizer": state,
                    }
                )
            )
            rest = Tokenizer(backend.model)
            rest.normalizer = backend.normalizer
            rest.pre_tokenizer = holder.pre_tokenizer
        return cls(split_re, backend, rest)

    def layout(
        self, texts: list[str], cut_starts: list[set[int]], matches: list[list[tuple[int, int]]] | None = None
    ) -> list[_Layout]:
        """Per text: the tokens before each added-token boundary, and the ids of the pieces starting at
        ``cut_starts`` (pieces a shorter render ends inside). Those are encoded to ids once, and their lengths
        count towards the total; every other piece is counted through the cache as ``count`` does."""
        self._trim()
        assert self._split is not None
        finditer = self._split.finditer
        cf, cr = self._cache_first, self._cache_rest
        todo_first: dict[str, None] = {}
        todo_rest: dict[str, None] = {}
        cut_first: list[str] = []
        cut_rest: list[str] = []
        plans = []
        if matches is None:
            matches = [[m.span() for m in finditer(t)] for t in texts]
        for text, cuts, spans in zip(texts, cut_starts, matches, strict=True):
            segs: list[tuple[int, int, Any]] = []  # (start, end, None: added token | piece | index in cut_*)
            pos = 0
            for m in (*spans, None):
                e = m[0] if m is not None else len(text)
                if e > pos:
                    piece = text[pos:e]
                    if pos in cuts:
                        lst = cut_first if pos == 0 else cut_rest
                        segs.append((pos, e, len(lst)))
                        lst.append(piece)
                    else:
                        segs.append((pos, e, piece))
                        if pos == 0:
                            if piece not in cf:
                                todo_first[piece] = None
                        elif piece not in cr:
                            todo_rest[piece] = None
                if m is None:
                    break
                segs.append((e, m[1], None))
                pos = m[1]
            plans.append(segs)
        tmp_first: dict[str, int] = {}
        tmp_rest: dict[str, int] = {}
        if todo_first:
            self._fill(list(todo_first), self._first, cf, tmp_first)
        if todo_rest:
            self._fill(list(todo_rest), self._rest, cr, tmp_rest)
        ids_first = self.ids_of(cut_first, first=True)
        ids_rest = self.ids_of(cut_rest, first=False)
        out = []
        for segs in plans:
            bounds = {0: 0}
            cut_ids: dict[int, list[int]] = {}
            starts = []
            n = 0
            for a, b, v in segs:
                bounds[a] = n
                if v is None:
                    n += 1
                    continue
                starts.append(a)
                if isinstance(v, int):
                    ids = (ids_first if a == 0 else ids_rest)[v]
                    cut_ids[a] = ids
                    n += len(ids)
                elif a == 0:
                    n += cf[v] if v in cf else tmp_first[v]
                else:
                    n += cr[v] if v in cr else tmp_rest[v]
                bounds[b] = n
            out.append(_Layout(n, bounds, starts, cut_ids))
        return out

    def ids_of(self, texts: list[str], *, first: bool) -> list[list[int]]:
        """Token ids of pieces (no added tokens inside), at the start of a text (``first``) or after one."""
        if not texts:
            return []
        cache = self._ids_first if first else self._ids_rest
        todo = list({t: None for t in texts if t not in cache})
        if todo:
            tok = self._first if first else self._rest
            encs = tok.encode_batch_fast(todo, add_special_tokens=False)
            fresh = dict(zip(todo, (e.ids for e in encs), strict=True))
            for t, ids in fresh.items():
                if len(t) <= self.MAX_PIECE_CHARS and len(cache) < self.MAX_CACHED_IDS:
                    cache[t] = ids
        else:
            fresh = {}
        return [cache[t] if t in cache else fresh[t] for t in texts]

    def _trim(self) -> None:
        if self._cached_chars > self.MAX_CACHED_CHARS:
            self._cache_first.clear()
            self._cache_rest.clear()
            self._cached_chars = 0

    def count(self, texts: list[str]) -> list[int]:
        self._trim()
        split = self._split.split if self._split is not None else (lambda t: [t])
        cf, cr = self._cache_first, self._cache_rest
        tmp_first: dict[str, int] = {}
        tmp_rest: dict[str, int] = {}
        todo_first: dict[str, None] = {}
        todo_rest: dict[str, None] = {}
        parts = []
        for text in texts:
            gaps = split(text)
            parts.append(gaps)
            g0 = gaps[0]
            if g0 and g0 not in cf:
                todo_first[g0] = None
            for g in gaps[1:]:
                if g and g not in cr:
                    todo_rest[g] = None
        if todo_first:
            self._fill(list(todo_first), self._first, cf, tmp_first)
        if todo_rest:
            self._fill(list(todo_rest), self._rest, cr, tmp_rest)
        out = []
        for gaps in parts:
            g0 = gaps[0]
            n = len(gaps) - 1
            if g0:
                n += cf[g0] if g0 in cf else tmp_first[g0]
            for g in gaps[1:]:
                if g:
                    n += cr[g] if g in cr else tmp_rest[g]
            out.append(n)
        return out

    def count_tracked(
        self, texts: list[str], spans_list: list[list[tuple[int, int]]]
    ) -> list[tuple[int, list[tuple[int, int]]] | None]:
        """Per text, (token count, merged runs of the tokens overlapping the character spans); None for a text
        it cannot do exactly (the caller encodes that one whole).

        A piece with no span edge inside or at its ends lies wholly inside a span or wholly outside all of them,
        so its tokens are all masked or none is, and only its count matters: it is counted like ``count`` does
        (cached, no offsets). A piece a span starts or ends in is encoded with offsets and the mask rule
        (token end > span start and token start < span end) applied to its tokens. An added token is masked by
        the same rule on its matched characters; when the match took surrounding whitespace (lstrip/rstrip)
        and a span edge falls on it, the text is left to the caller.
        """
        self._trim()
        cf, cr = self._cache_first, self._cache_rest
        todo_first: dict[str, None] = {}
        todo_rest: dict[str, None] = {}
        edge_first: list[str] = []
        edge_rest: list[str] = []
        # per text: segments (kind, value, masked-or-local-spans); kind 0 added token, 1 clean piece at offset 0,
        # 2 clean piece elsewhere, 3 edge piece at offset 0, 4 edge piece elsewhere (value: index in its list)
        plans: list[list[tuple[int, Any, Any]] | None] = []
        finditer = self._split.finditer if self._split is not None else None
        for text, spans in zip(texts, spans_list, strict=True):
            edges = [x for ab in spans for x in ab]
            plan: list[tuple[int, Any, Any]] | None = []
            pos = 0
            matches = finditer(text) if finditer is not None else ()
            for m in (*matches, None):
                s, e = pos, (m.start() if m is not None else len(text))
                if e > s:
                    piece = text[s:e]
                    if any(s <= x <= e for x in edges):
                        local = [(a - s, b - s) for a, b in spans]
                        if s == 0:
                            plan.append((3, len(edge_first), local))
                            edge_first.append(piece)
                        else:
                            plan.append((4, len(edge_rest), local))
                            edge_rest.append(piece)
                    else:
                        inside = any(a < s and e < b for a, b in spans)
                        if s == 0:
                            plan.append((1, piece, inside))
                            if piece not in cf:
                                todo_first[piece] = None
                        else:
                            plan.append((2, piece, inside))
                            if piece not in cr:
                                todo_rest[piece] = None
                if m is None:
                    break
                ms, me = m.span()
                tok = m.group()
                if tok != tok.strip() and any(ms <= x <= me for x in edges):
                    plan = None
                    break
                plan.append((0, None, any(me > a and ms < b for a, b in spans)))
                pos = me
            plans.append(plan)
        tmp_first: dict[str, int] = {}
        tmp_rest: dict[str, int] = {}
        self.last_encoded_chars = sum(map(len, (*todo_first, *todo_rest, *edge_first, *edge_rest)))
        if todo_first:
            self._fill(list(todo_first), self._first, cf, tmp_first)
        if todo_rest:
            self._fill(list(todo_rest), self._rest, cr, tmp_rest)
        enc_first = self._first.encode_batch(edge_first, add_special_tokens=False) if edge_first else []
        enc_rest = self._rest.encode_batch(edge_rest, add_special_tokens=False) if edge_rest else []
        out: list[tuple[int, list[tuple[int, int]]] | None] = []
        for plan in plans:
            if plan is None:
                out.append(None)
                continue
            n = 0
            runs: list[tuple[int, int]] = []
            for kind, value, info in plan:
                if kind == 0:
                    k = 1
                elif kind <= 2:
                    cache, tmp = (cf, tmp_first) if kind == 1 else (cr, tmp_rest)
                    k = cache[value] if value in cache else tmp[value]
                else:
                    enc = (enc_first if kind == 3 else enc_rest)[value]
                    k = len(enc)
                    for lo, hi in _overlapping_runs(enc.offsets, info):
                        _add_run(runs, n + lo, n + hi)
                    n += k
                    continue
                if info and k:
                    _add_run(runs, n, n + k)
                n += k
            out.append((n, runs))
        return out

    def _fill(self, pieces: list[str], tokenizer: Any, cache: dict[str, int], tmp: dict[str, int]) -> None:
        lens = [len(e) for e in tokenizer.encode_batch_fast(pieces, add_special_tokens=False)]
        limit = self.MAX_PIECE_CHARS
        for piece, n in zip(pieces, lens, strict=True):
            if len(piece) <= limit:
                cache[piece] = n
                self._cached_chars += len(piece)
            else:
                tmp[piece] = n


def _set_metaspace_never(node: Any) -> bool:
    """Switch Metaspace ``prepend_scheme: first`` to ``never`` in a pre-tokenizer config; True if any was."""
    if isinstance(node, dict):
        found = False
        if node.get("type") == "Metaspace" and node.get("prepend_scheme") == "first":
            node["prepend_scheme"] = "never"
            found = True
        for v in node.values():
            found = _set_metaspace_never(v) or found
        return found
    if isinstance(node, list):
        return any([_set_metaspace_never(v) for v in node])
    return False


# -- the reference: what the trainer's calls give, one conversation at a time (tests and benchmarks) -----------
def count_naive(tokenizer: Any, conv: dict, mask_generation_prompt: bool = False) -> tuple[int, int]:
    """(total, supervised labels) through transformers' own ``apply_chat_template`` rendering and the tokenizer
    call, masked by ``dataprep.trainer``; slow, exact by construction. Raises what the trainer raises."""
    from transformers.utils.chat_template_utils import render_jinja_template

    messages, tools = trainer.row_inputs(conv)

    def render(ms: list[dict], *, tools: Any, add_generation_prompt: bool, **kw: Any):
        template = tokenizer.get_chat_template(None, tools)
        texts, spans = render_jinja_template(
            conversations=[ms],
            tools=tools,
            documents=None,
            chat_template=template,
            return_assistant_tokens_mask=True,
            add_generation_prompt=add_generation_prompt,
            **{**tokenizer.special_tokens_map, **kw},
        )
        return texts[0], spans[0]

    sample = trainer.tokenizer_sample(
        tokenizer, messages, tools, render, mask_generation_prompt=mask_generation_prompt
    )
    return sample.total, sample.supervised()


# -- driving: batches, a tokenizing thread, optional worker processes ------------------------------------------
_WORKER: Measurer | None = None


def _worker_init(spec: MeasureSpec) -> None:
    global _WORKER
    import signal

    # Ctrl-C goes to the whole process group: the parent answers it (exit 130) and stops the pool; a worker
    # printing its own KeyboardInterrupt traceback would only bury that message.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # One encoding thread per worker, so processes x threads does not oversubscribe the cores (the rayon pool
    # starts on first use, after this).
    os.environ["RAYON_NUM_THREADS"] = "1"
    _WORKER = Measurer(spec)


def _worker_ready() -> bool:
    return _WORKER is not None


def _worker_measure(convs: list[dict]) -> BatchCounts:
    assert _WORKER is not None
    return _WORKER.count_batch(_WORKER.render_batch(convs))


def batched(items: Iterable[tuple[int, dict]], size: int) -> Iterator[tuple[list[int], list[dict]]]:
    """(row numbers, conversations) in batches of ``size``: the unit a Measurer renders and counts."""
    rows: list[int] = []
    convs: list[dict] = []
    for row, conv in items:
        rows.append(row)
        convs.append(conv)
        if len(convs) >= size:
            yield rows, convs
            rows, convs = [], []
    if convs:
        yield rows, convs


class Collector:
    """Gathers measured batches (in input order) into one TokenCounts, so every engine reduces the same way."""

    def __init__(self) -> None:
        self.parts: dict[str, list[np.ndarray]] = {
            k: []
            for k in ("rows", "total", "supervised", "turns", "run_row", "run_start", "run_end", "unmaskable")
        }
        self.errors: list[tuple[int, str, str]] = []
        self.measured = 0

    def add(self, rows: list[int], bc: BatchCounts) -> int:
        p = self.parts
        p["rows"].append(np.asarray(rows, dtype=np.int64)[bc.ok])
        p["total"].append(bc.total)
        p["supervised"].append(bc.supervised)
        p["turns"].append(bc.turns)
        p["run_row"].append(bc.run_row + self.measured)
        p["run_start"].append(bc.run_start)
        p["run_end"].append(bc.run_end)
        p["unmaskable"].append(bc.unmaskable_from)
        self.measured += len(bc.ok)
        self.errors.extend((rows[i], code, msg) for i, code, msg in bc.errors)
        return len(rows)

    def result(self, mask_source: str) -> TokenCounts:
        def cat(name: str, dtype) -> np.ndarray:
            parts = self.parts[name]
            return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(0, dtype=dtype)

        return TokenCounts(
            rows=cat("rows", np.int64),
            total=cat("total", np.int32),
            supervised=cat("supervised", np.int32),
            turns=cat("turns", np.int32),
            mask_source=mask_source,
            rejected=tuple(self.errors),
            run_row=cat("run_row", np.int32),
            run_start=cat("run_start", np.int32),
            run_end=cat("run_end", np.int32),
            unmaskable_from=cat("unmaskable", np.int32),
        )


AUTO_POOL_ROWS = 20_000  # --workers auto: one process up to here (a pool does not pay off below it)
WORKER_BATCH_ROWS = 1024  # rows handed to a worker at a time: fewer, larger messages


def available_cores() -> int:
    """The cores this process may run on (CPU affinity, cgroup-pinned containers), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def resolve_workers(workers: int | str) -> int:
    """``auto`` (or 0) -> 0, the auto mode of ``measure_conversations``; a number -> itself (at least 1)."""
    if workers in ("auto", 0, "0"):
        return 0 if available_cores() > 1 else 1
    n = int(workers)
    if n < 1:
        raise ValueError(f"workers must be at least 1 or 'auto', not {workers!r}")
    return n


def measure_conversations(
    conversations: Iterable[tuple[int, dict]],
    tokenizer_or_loaded: Any,
    *,
    mask_generation_prompt: bool = False,
    workers: int | str = 1,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    progress: Callable[[int], None] | None = None,
    piece_cache: bool = True,
) -> TokenCounts:
    """Measure every (row number, conversation); ``progress(n)`` is called with the rows done per batch.

    ``mask_generation_prompt``: ChatDataset's option of that name (the recipe's ``dataset`` section).
    ``workers``: 1 measures in this process (rendering here while a thread encodes); N > 1 hands batches to a
    pool of N processes, measuring here until the pool is up so its start costs nothing; ``"auto"`` measures
    here and brings in a pool of one process per core once the input passes ``AUTO_POOL_ROWS`` rows.
    """
    with Measuring(
        tokenizer_or_loaded,
        mask_generation_prompt=mask_generation_prompt,
        workers=workers,
        batch_rows=batch_rows,
        progress=progress,
        piece_cache=piece_cache,
    ) as m:
        for row, conv in conversations:
            m.add(row, conv)
        return m.result()


class Measuring:
    """``measure_conversations`` fed one row at a time, so a pass that does other work with each row (preflight
    writing its split) measures in the same pass: ``add(row, conv)`` as rows come, ``result()`` at the end.

    Batches in input order are rendered here (a thread encodes, releasing the GIL, while the next renders) or,
    once the pool has a worker ready, handed to the pool in chunks; results are taken in order.
    """

    def __init__(
        self,
        tokenizer_or_loaded: Any,
        *,
        mask_generation_prompt: bool = False,
        workers: int | str = 1,
        batch_rows: int = DEFAULT_BATCH_ROWS,
        progress: Callable[[int], None] | None = None,
        piece_cache: bool = True,
    ):
        n = resolve_workers(workers)
        self.spec = make_spec(
            tokenizer_or_loaded,
            mask_generation_prompt=mask_generation_prompt,
            piece_cache=piece_cache,
            portable=n != 1,  # worker processes rebuild the tokenizer from the spec
        )
        self._here = Measurer(self.spec, backend_of(tokenizer_or_loaded))
        self._pool = (
            None
            if n == 1
            else _Pool(self.spec, n or available_cores(), start_after=AUTO_POOL_ROWS // 2 if n == 0 else 0)
        )
        self._col = Collector()
        self._progress = progress
        self._batch_rows = max(1, batch_rows)
        self._rows: list[int] = []
        self._convs: list[dict] = []
        self._chunk_rows: list[int] = []
        self._chunk: list[dict] = []
        # (rows, their counts to come, the conversations when a worker measures them: redone here if it dies)
        self._pending: deque[tuple[list[int], Future, list[dict] | None]] = deque()
        self._limit = 2 if self._pool is None else 2 * self._pool.workers + 2
        self._thread = ThreadPoolExecutor(max_workers=1)

    def __enter__(self) -> Measuring:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._thread.shutdown(wait=True, cancel_futures=True)

    def add(self, row: int, conv: dict) -> None:
        self._rows.append(row)
        self._convs.append(conv)
        if len(self._convs) >= self._batch_rows:
            self._dispatch()

    def result(self) -> TokenCounts:
        """Every row added, measured, in the order added."""
        if self._convs:
            self._dispatch()
        if self._chunk:
            self._submit_chunk()
        while self._pending:
            self._finish()
        return self._col.result(self.spec.mask_source)

    def _dispatch(self) -> None:
        rows, convs = self._rows, self._convs
        self._rows, self._convs = [], []
        pool = self._pool
        if pool is not None and pool.serving(len(rows)):
            self._chunk_rows += rows
            self._chunk += convs
            if len(self._chunk) < WORKER_BATCH_ROWS:
                return
            self._submit_chunk()
        else:
            here = self._here
            self._pending.append(
                (rows, self._thread.submit(here.count_batch, here.render_batch(convs)), None)
            )
        while len(self._pending) > self._limit or (self._pending and self._pending[0][1].done()):
            self._finish()

    def _submit_chunk(self) -> None:
        from concurrent.futures.process import BrokenProcessPool

        assert self._pool is not None
        rows, chunk = self._chunk_rows, self._chunk
        self._chunk_rows, self._chunk = [], []
        try:
            self._pending.append((rows, self._pool.submit(chunk), chunk))
        except BrokenProcessPool:  # a worker died (or could not start) since the last chunk: measure here
            self._pool = None
            here = self._here
            self._pending.append(
                (rows, self._thread.submit(here.count_batch, here.render_batch(chunk)), None)
            )

    def _finish(self) -> None:
        from concurrent.futures.process import BrokenProcessPool

        rows, fut, convs = self._pending.popleft()
        try:
            got = fut.result()
        except BrokenProcessPool:
            # A worker died (the OOM killer, a signal): its chunks are measured here instead, and so is the rest.
            assert convs is not None
            self._pool = None
            got = self._here.count_batch(self._here.render_batch(convs))
        n = self._col.add(rows, got)
        if self._progress is not None:
            self._progress(n)


class _Pool:
    """Worker processes for one spec, kept for the life of this process (a second measure with the same
    tokenizer reuses them). forkserver where the platform has it: the server imports dataprep, jinja2 and
    tokenizers once and each worker is a fork of it, so a worker is up in well under a second (spawn re-imports
    everything per worker: about 2 s each). Never plain fork: the parent may already run threads (the
    tokenizers pool, a reader), which a fork does not carry over safely."""

    _current: tuple[bytes, int, Any] | None = None  # (spec digest, workers, executor)

    def __init__(self, spec: MeasureSpec, workers: int, start_after: int = 0):
        self.spec = spec
        self.workers = workers
        self._start_after = start_after
        self._seen = 0
        self._executor: Any = None
        self._ready: list[Future] = []

    def serving(self, rows: int) -> bool:
        """Whether to hand the next rows to the pool (it starts once ``start_after`` rows went by here)."""
        if self._executor is None:
            if self._seen < self._start_after:
                self._seen += rows
                return False
            self._start()
        return any(f.done() and f.exception() is None for f in self._ready)

    def submit(self, convs: list[dict]) -> Future:
        return self._executor.submit(_worker_measure, convs)

    def _start(self) -> None:
        import hashlib
        import pickle

        key = hashlib.sha1(pickle.dumps(self.spec)).digest()
        cur = _Pool._current
        if cur is not None and cur[:2] == (key, self.workers) and not getattr(cur[2], "_broken", False):
            self._executor = cur[2]
        else:
            if cur is not None:
                cur[2].shutdown(wait=False, cancel_futures=True)
            self._executor = _new_executor(self.spec, self.workers)
            _Pool._current = (key, self.workers, self._executor)
        self._ready = [self._executor.submit(_worker_ready) for _ in range(self.workers)]


def _new_executor(spec: MeasureSpec, workers: int) -> Any:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(
            ["dataprep.measure", "dataprep.trainer", "transformers.utils.chat_template_utils"]
        )
    else:
        ctx = mp.get_context("spawn")
    return ProcessPoolExecutor(
        max_workers=workers, mp_context=ctx, initializer=_worker_init, initargs=(spec,)
    )
