"""Any records in, OpenAI messages JSONL out, nothing lost.

    the row pipeline (``dataprep.pipeline``: open, refuse packed, rename, detect, convert, validate)
      -> drop exact duplicates (optional)
      -> set near duplicates aside (optional, ``dedup="near"``: rejects with code ``near_duplicate``)
      -> set rows over a token limit aside (optional, ``max_tokens``: rejects with code ``too_long``)
      -> OUT JSONL + rejects JSONL, both written atomically

Every input row ends in the output, the rejects file (row number, code, message, original record) or the
duplicate count: ``read == written + rejected + duplicates``. For OASST trees the unit is the
conversation (a root-to-leaf path), not the row; ``records_read`` still counts input rows.

``write_converted`` (a pipeline's lines -> output + rejects -> ``Written``) is the one write loop, which the Ray
engine's workers run on their blocks too.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .atomic import atomic_write, check_output_path
from .converters._common import Notes, Reject, prune_nulls
from .converters.registry import Detection
from .errors import DataprepError, UsageError
from .findings import Finding, finding
from .pipeline import ConvertSpec, LineBlock, RowPipeline, note_findings, open_input
from .sources.base import Batch

FIRST_ROWS = 20


def line_digest(line: bytes) -> bytes:
    """What exact dedup compares: an output line's UTF-8 bytes (no newline), hashed; the local and Ray engines
    both keep the first line of each digest."""
    return hashlib.blake2b(line, digest_size=16).digest()


# A reject code whose catalogue hint is about the whole input (refused preference data) says what the rows
# mean instead: with --take chosen, KTO rows labelled undesirable go to the rejects.
REJECT_HINTS: Mapping[str, str] = {
    "preference_data": "rows labelled undesirable (KTO) are not SFT examples: they stay in the rejects file",
}


def default_rejects_path(out: str | Path) -> Path:
    """``data/out.jsonl`` -> ``data/out.rejects.jsonl``."""
    p = Path(out)
    return p.with_name(p.stem + ".rejects.jsonl")


@dataclass(frozen=True)
class NormalizeResult:
    """What a normalize run did: the shape it read, where it wrote, and counts that reconcile."""

    input: str
    output: str | None
    rejects_path: str | None
    detection: Detection
    read: int
    written: int
    rejected: int
    duplicates: int
    records_read: int
    unit: str  # "row", or "conversation" for tree shapes
    rejected_by_code: Mapping[str, int] = field(default_factory=dict)
    first_rows: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    first_message: Mapping[str, str] = field(default_factory=dict)
    notes: Notes = field(default_factory=Notes)  # what the converter noted on rows it converted

    @property
    def reconciled(self) -> bool:
        return self.read == self.written + self.rejected + self.duplicates

    def findings(self) -> list[Finding]:
        """A warning per reject code (an error when no row survived), one finding per converter note (Python
        literals read, loss weights ignored), and info on dropped duplicates."""
        out: list[Finding] = []
        severity = "error" if self.read and not self.written else "warning"
        for code, n in sorted(self.rejected_by_code.items(), key=lambda kv: (-kv[1], kv[0])):
            rows = self.first_rows.get(code, ())
            out.append(
                finding(
                    code,
                    f"{n} {self.unit}{'s' if n != 1 else ''} rejected (first: row {rows[0] if rows else '?'}: "
                    f"{self.first_message.get(code, '')})",
                    hint=REJECT_HINTS.get(code),
                    severity=severity,
                    rows=rows,
                    count=n,
                )
            )
        out.extend(note_findings(self.notes, self.unit))
        if self.duplicates:
            out.append(
                finding(
                    "duplicate_row",
                    f"{self.duplicates} exact duplicate {self.unit}{'s' if self.duplicates != 1 else ''} "
                    "dropped ($[dedup])",
                    severity="info",
                    hint="the first copy of each is kept; the summary counts the dropped ones",
                    count=self.duplicates,
                )
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "input": self.input,
            "output": self.output,
            "rejects": self.rejects_path,
            "detection": self.detection.to_dict(),
            "unit": self.unit,
            "counts": {
                "read": self.read,
                "written": self.written,
                "rejected": self.rejected,
                "duplicates": self.duplicates,
                "records_read": self.records_read,
                "rejected_by_code": dict(sorted(self.rejected_by_code.items())),
            },
            "reconciled": self.reconciled,
        }


def _reject_line(r: Reject) -> str:
    """One rejects line. The record's null fields are left out and its keys sorted: a JSONL batch read
    through Arrow gives every record the union of the keys around it (absent -> null, in the batch's key
    order), so only this form is the same however the input was batched."""
    record = prune_nulls(r.record)
    for ascii_only in (False, True):  # lone surrogates in the record: keep them escaped
        try:
            head = json.dumps(
                {"row": r.row, "code": r.code, "message": r.message},
                ensure_ascii=ascii_only,
                separators=(",", ":"),
            )
            rec = json.dumps(
                record, ensure_ascii=ascii_only, separators=(",", ":"), sort_keys=True, default=str
            )
            line = head[:-1] + ',"record":' + rec + "}"
            line.encode("utf-8")
            return line
        except UnicodeEncodeError:
            continue
    raise AssertionError("unreachable: ASCII output always encodes")


class TokenLimit:
    """``--max-tokens``: rows whose rendering through the model's chat template (counted as the trainer
    tokenizes it) is longer go to rejects as ``too_long``; rows are measured in batches as they stream."""

    BATCH = 512

    def __init__(self, loaded: Any, max_tokens: int):
        from .hf_internals import backend_of
        from .measure import Measurer, make_spec

        if max_tokens <= 0:
            raise UsageError(f"$[max_tokens] {max_tokens}: must be positive", hint="e.g. $[max_tokens] 8192")
        self.max_tokens = int(max_tokens)
        self.measurer = Measurer(make_spec(loaded), backend_of(loaded))

    def split(self, items: list[tuple[int, str]]) -> tuple[list[tuple[int, str]], list[Reject]]:
        """The (row, line) pairs within the limit, in order, and the others as rejects. A row the template
        cannot render is kept: that is for validate/stats to report, not a length."""
        convs = [json.loads(line) for _, line in items]
        m = self.measurer
        bc = m.count_batch(m.render_batch(convs))
        total = dict(zip(bc.ok.tolist(), bc.total.tolist(), strict=True))
        keep: list[tuple[int, str]] = []
        rejects: list[Reject] = []
        for i, (row, line) in enumerate(items):
            t = total.get(i)
            if t is not None and t > self.max_tokens:
                msg = f"{t} tokens through the chat template, over the token limit of {self.max_tokens}"
                rejects.append(Reject(row, "too_long", msg, convs[i]))
            else:
                keep.append((row, line))
        return keep, rejects


class _Writer:
    """Writes output and rejects lines, deduplicates, and keeps the counts."""

    def __init__(
        self,
        out: IO[str],
        rejects: IO[str],
        dedup: bool | str,
        *,
        background: bool = False,
        limit: TokenLimit | None = None,
    ):
        """``background``: a block's bytes are written by a thread while the next batch is read and converted
        (the write copies into the page cache with the GIL released); the caller must call ``finish()`` before
        ``out`` is closed."""
        self.out, self.rejects, self.dedup = out, rejects, bool(dedup)
        self.near: Any = None
        if dedup == "near":
            from .neardup import NearDup

            self.near = NearDup()
        self.written = self.rejected = self.duplicates = 0
        self.by_code: dict[str, int] = {}
        self.first_rows: dict[str, list[int]] = {}
        self.first_message: dict[str, str] = {}
        self.seen: set[bytes] = set()
        self.limit = limit
        self._held: list[tuple[int, str]] = []  # lines waiting for the token limit's next batch
        self._pool: Any = None
        self._pending: Any = None  # the Future of the block being written
        if background:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dataprep-write")

    def _wait(self) -> None:
        """Let the block being written in the background finish (output order; its error surfaces here)."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def finish(self) -> None:
        """Wait for the last background write and stop the thread (call it before ``out`` is closed)."""
        try:
            self._drain()
            self._wait()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None

    def block(self, block: LineBlock) -> None:
        if self.dedup or self.limit is not None:
            for row, line in zip(block.rows, block.strings(), strict=True):
                self.line(row, line)
            return
        if not len(block.lines):
            return
        data = block.utf8()  # a view that keeps its Arrow buffer alive until written
        self._wait()
        # polars output is valid UTF-8: write the bytes straight under the text layer, one write per batch
        self.out.flush()
        if self._pool is None:
            self.out.buffer.write(data)
        else:
            self._pending = self._pool.submit(self.out.buffer.write, data)
        self.written += len(block.lines)

    def line(self, row: int, line: str) -> None:
        if self.limit is None:
            self._emit(row, line)
            return
        self._held.append((row, line))
        if len(self._held) >= TokenLimit.BATCH:
            self._drain()

    def _drain(self) -> None:
        if not self._held:
            return
        held, self._held = self._held, []
        keep, rejects = self.limit.split(held)
        for r in rejects:
            self.reject(r)
        for row, line in keep:
            self._emit(row, line)

    def _emit(self, row: int, line: str) -> None:
        try:
            data = line.encode("utf-8")
        except UnicodeEncodeError:
            self.reject(Reject(row, "invalid_json", "the text holds a lone surrogate (not UTF-8)", None))
            return
        if self.dedup:
            h = line_digest(data)
            if h in self.seen:
                self.duplicates += 1
                return
            self.seen.add(h)
            if self.near is not None and self._near_duplicate(row, line):
                return
        self._wait()
        self.out.write(line + "\n")
        self.written += 1

    def _near_duplicate(self, row: int, line: str) -> bool:
        """``--dedup near``: a near duplicate of an earlier kept row goes to rejects as ``near_duplicate``
        (after the exact check: exact copies stay in the duplicate count, as with ``--dedup``)."""
        conv = json.loads(line)
        of = self.near.check(row, conv)
        if of is None:
            return False
        msg = f"a near duplicate of row {of} (estimated Jaccard {self.near.last.jaccard:.2f} of word 3-grams)"
        self.reject(Reject(row, "near_duplicate", msg, conv))
        return True

    def reject(self, r: Reject) -> None:
        self.rejected += 1
        self.by_code[r.code] = self.by_code.get(r.code, 0) + 1
        rows = self.first_rows.setdefault(r.code, [])
        if len(rows) < FIRST_ROWS:
            rows.append(r.row)
        self.first_message.setdefault(r.code, r.message)
        self.rejects.write(_reject_line(r) + "\n")


@dataclass(frozen=True)
class Written:
    """What one ``write_converted`` call wrote: counts that reconcile, and the first rows rejected per code."""

    read: int  # input records read
    written: int
    rejected: int
    duplicates: int
    by_code: Mapping[str, int]
    first_rows: Mapping[str, list[int]]
    first_message: Mapping[str, str]
    notes: Notes = field(default_factory=Notes)  # the converter's notes on the rows of this call


def write_converted(
    pipeline: RowPipeline,
    batches: Iterable[Batch],
    out: IO[str],
    rejects: IO[str],
    *,
    dedup: bool | str = False,
    background: bool = False,
    progress: Callable[[int], None] | None = None,
    limit: TokenLimit | None = None,
) -> Written:
    """Run ``batches`` through ``pipeline`` and write output and rejects lines: the one write loop of normalize
    and engine_ray.

    ``dedup``: False, True or ``"exact"`` (drop exact duplicate lines, counted as duplicates), or ``"near"``
    (exact as well, then near duplicates go to rejects as ``near_duplicate``, see ``dataprep.neardup``).
    ``background``: block bytes are written by a thread (see ``_Writer``); ``progress(records_read)`` is called
    as batches are read. The converter's notes start afresh, so they are this call's (a Ray worker converts
    several blocks with one pipeline).
    """
    pipeline.notes = Notes()
    counter = [0]
    shown = 0
    w = _Writer(out, rejects, dedup, background=background, limit=limit)
    try:
        for item in pipeline.lines(batches, counter):
            if progress is not None and counter[0] != shown:
                shown = counter[0]
                progress(shown)
            if isinstance(item, LineBlock):
                w.block(item)
            elif isinstance(item, Reject):
                w.reject(item)
            else:
                w.line(*item)
    finally:
        w.finish()
    return Written(
        read=counter[0],
        written=w.written,
        rejected=w.rejected,
        duplicates=w.duplicates,
        by_code=w.by_code,
        first_rows=w.first_rows,
        first_message=w.first_message,
        notes=pipeline.notes,
    )


DEDUP_MODES = ("exact", "near")


def check_dedup(dedup: bool | str | None) -> bool | str:
    """``dedup`` as False, ``"exact"`` or ``"near"`` (True is ``"exact"``, the meaning of a bare ``--dedup``)."""
    if dedup is None or dedup is False:
        return False
    if dedup is True:
        return "exact"
    if dedup not in DEDUP_MODES:
        raise UsageError(f"$[dedup] {dedup!r}", hint="$[dedup] exact (the default) or $[dedup] near")
    return dedup


def check_outputs(inp: str | Path, out: str | Path, rejects_path: Path, *, force: bool, hint: str) -> None:
    """Refuse an output or rejects path that would overwrite the input, exists (without force), or is the same
    path twice: the checks the local and Ray engines share."""
    check_output_path(out, [inp], force=force)
    check_output_path(rejects_path, [inp], force=force)
    if Path(out).resolve() == rejects_path.resolve():
        raise UsageError("$[rejects] is the output path", hint=hint)


# -- public API -----------------------------------------------------------------------------------------


def normalize(
    inp: str | Path,
    out: str | Path,
    spec: ConvertSpec | None = None,
    *,
    dedup: bool | str = False,
    rejects: str | Path | None = None,
    force: bool = False,
    batch_rows: int = 8192,
    progress: Callable[[int, int | None], None] | None = None,
    max_tokens: int | None = None,
    model: str | None = None,
    chat_template: str | None = None,
    allow_download: bool = False,
) -> NormalizeResult:
    """Convert ``inp`` to messages JSONL at ``out`` (atomically), rejects to ``rejects``; return the counts.

    ``spec``: how records become conversations (the shape, renamed columns, the converters' options).

    ``progress(records_read, total_or_None)`` is called as batches are read (the CLI's progress bar).
    ``max_tokens`` (with ``model``, whose chat template and tokenizer count): longer rows go to rejects as
    ``too_long``. ``dedup``: False, True/``"exact"`` or ``"near"`` (see ``write_converted``).
    """
    dedup = check_dedup(dedup)
    limit = None
    if max_tokens is not None:
        if not model:
            raise UsageError(
                "$[max_tokens] counts tokens: it needs $[model]", hint="e.g. $[model] ./Llama-3.2-1B"
            )
        from .tokenizer import load_tokenizer

        loaded = load_tokenizer(model, chat_template=chat_template, allow_download=allow_download)
        if loaded.template is None:
            raise UsageError(
                f"$[max_tokens]: {model} has no chat template to count through",
                hint="pass $[chat_template]",
            )
        limit = TokenLimit(loaded, max_tokens)
    if "-" in (str(out), str(rejects)):  # not stdout: a file literally named "-" would be written
        raise UsageError(
            "$[out] and $[rejects] are files, not '-' (stdout): the output is written atomically",
            hint="give a path, e.g. dataprep normalize in.csv train.jsonl",
        )
    rejects_path = Path(rejects) if rejects is not None else default_rejects_path(out)
    check_outputs(inp, out, rejects_path, force=force, hint="write rejects to another file")
    opened = open_input(inp, spec, batch_rows=batch_rows)
    total = getattr(opened.source, "num_rows", None) if progress is not None else None  # may count rows
    on_read = None if progress is None else (lambda n: progress(n, total))
    with atomic_write(out) as fo, atomic_write(rejects_path) as fr:
        w = write_converted(
            opened.pipeline,
            opened.batches,
            fo,
            fr,
            dedup=dedup,
            background=True,
            progress=on_read,
            limit=limit,
        )
    whole = opened.pipeline.whole_input
    return NormalizeResult(
        input=str(inp),
        output=str(out),
        rejects_path=str(rejects_path),
        detection=opened.detection,
        read=w.written + w.rejected + w.duplicates if whole else w.read,
        written=w.written,
        rejected=w.rejected,
        duplicates=w.duplicates,
        records_read=w.read,
        unit="conversation" if whole else "row",
        rejected_by_code=w.by_code,
        first_rows={k: tuple(v) for k, v in w.first_rows.items()},
        first_message=w.first_message,
        notes=w.notes,
    )


__all__ = [
    "DataprepError",
    "NormalizeResult",
    "Notes",
    "Reject",
    "Written",
    "check_dedup",
    "check_outputs",
    "default_rejects_path",
    "normalize",
    "note_findings",
    "write_converted",
]
