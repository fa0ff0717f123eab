"""Token-length statistics through the chat template: distribution, truncation, padding, packing, a seq length.

``compute_stats`` measures every conversation (``dataprep.measure``) and derives from the per-row counts:

- the distribution of total and supervised tokens (percentiles are observed values: the smallest count that at
  least q% of rows do not exceed, numpy's ``inverted_cdf``);
- for each candidate sequence length, what right truncation costs (rows cut, tokens and supervised tokens
  lost, rows left with no supervised token);
- for each micro-batch size, padding efficiency (real tokens / padded tokens) of random batches and of
  length-grouped batches, and the expected padded length of a random batch;
- for each sequence length, packing efficiency with first-fit decreasing;
- a recommended sequence length (``RECOMMENDATION_RULE``): from the distribution, so one outlier row does not
  set it; the rows it leaves without a supervised token are named (``truncation_drops_answers``; preflight moves
  them to rejects as ``too_long``), and ``max_tokens`` sets rows longer than that aside as ``too_long``.

Nothing is silent: every row read is measured or counted under a finding with its rows
(``rows_read = rows + sum(rows_skipped.values())``): rows the converter rejects (``Skipped``), rows the trainer
would raise on while reading them, rows the template cannot render, and rows whose loss mask AutoModel cannot
build (``mask_unbuildable``; measured, but training stops on them).

The distribution functions take plain numpy arrays, so plan and tests can use them without a tokenizer.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .defaults import DEFAULT_BATCH_SIZES, DEFAULT_SEQ_LENGTHS
from .findings import CATALOGUE, Finding, finding
from .measure import TokenCounts, measure_conversations
from .trainer import AUTOMODEL_VERSION, MASK_SOURCE_MEANING

PERCENTILES: tuple[int, ...] = (50, 90, 95, 99)
SEQ_MULTIPLE = 256
COVERAGE_PERCENTILE = 99
RECOMMENDATION_RULE = (
    f"the smallest multiple of {SEQ_MULTIPLE} that covers p{COVERAGE_PERCENTILE} of total tokens and reaches the "
    f"first supervised token of p{COVERAGE_PERCENTILE} of rows, capped at the tokenizer's model_max_length; "
    "rows past it that would lose every supervised token are named, not silently trained on nothing"
)
# transformers sets model_max_length to a huge sentinel when the tokenizer does not say.
_NO_MAX_LENGTH = 10**9
FIRST_ROWS = 100  # rows listed in a finding (the count is always the whole)


class Skipped:
    """Rows read but not measured because the converter rejected them: count, first rows, first message."""

    def __init__(self) -> None:
        self.by_code: dict[str, list[Any]] = {}

    def add(self, row: int, code: str, message: str) -> None:
        entry = self.by_code.setdefault(code, [0, [], message])
        entry[0] += 1
        if len(entry[1]) < FIRST_ROWS:
            entry[1].append(int(row))

    def add_reject(self, reject: Any) -> None:
        self.add(reject.row, reject.code, reject.message)

    @property
    def total(self) -> int:
        return sum(e[0] for e in self.by_code.values())

    def counts(self) -> dict[str, int]:
        return {code: e[0] for code, e in sorted(self.by_code.items())}

    def findings(self) -> list[Finding]:
        out = []
        for code, (n, rows, message) in sorted(self.by_code.items()):
            sev = "warning" if CATALOGUE[code].severity.value == "error" else None
            out.append(
                finding(
                    code,
                    f"{n} row(s) not measured: the converter rejects them (row {rows[0]}: {message})",
                    rows=rows,
                    severity=sev,
                    count=n,
                    hint="dataprep normalize writes them to the rejects file with the reason; "
                    "train on its output, not on this file",
                )
            )
        return out


# -- distribution ---------------------------------------------------------------------------------------------
def percentile(values: np.ndarray, q: float) -> int:
    """The smallest observed value that at least ``q`` percent of values do not exceed."""
    return int(np.percentile(values, q, method="inverted_cdf"))


def summarize(values: np.ndarray) -> dict[str, Any]:
    """count, mean, min, p50, p90, p95, p99, max (zeros for no values, mean None)."""
    v = np.asarray(values)
    if v.size == 0:
        return {"count": 0, "mean": None, "min": 0, **{f"p{q}": 0 for q in PERCENTILES}, "max": 0, "sum": 0}
    return {
        "count": int(v.size),
        "mean": round(float(v.mean(dtype=np.float64)), 2),
        "min": int(v.min()),
        **{f"p{q}": percentile(v, q) for q in PERCENTILES},
        "max": int(v.max()),
        "sum": int(v.sum(dtype=np.int64)),
    }


def histogram(total: np.ndarray, supervised: np.ndarray | None = None, max_bins: int = 30) -> dict[str, Any]:
    """Bins of a round width (1, 2 or 5 x 10^k) over [0, max]; counts of total (and supervised) tokens."""
    t = np.asarray(total, dtype=np.int64)
    top = int(t.max()) if t.size else 0
    if supervised is not None and np.asarray(supervised).size:
        top = max(top, int(np.asarray(supervised).max()))
    width = _nice_width(max(top, 1) / max_bins)
    nbins = max(1, top // width + 1)
    edges = np.arange(nbins + 1, dtype=np.int64) * width
    out: dict[str, Any] = {
        "edges": edges.tolist(),
        "counts": np.bincount(t // width, minlength=nbins)[:nbins].astype(int).tolist(),
    }
    if supervised is not None:
        s = np.asarray(supervised, dtype=np.int64)
        out["supervised_counts"] = np.bincount(s // width, minlength=nbins)[:nbins].astype(int).tolist()
    return out


def _nice_width(raw: float) -> int:
    if raw <= 1:
        return 1
    exp = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if m * exp >= raw:
            return int(m * exp)
    return int(10 * exp)


# -- truncation ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TruncationRow:
    seq_length: int
    rows_truncated: int
    rows_losing_all_supervision: int
    tokens_lost: int
    tokens_lost_pct: float
    supervised_tokens_lost: int
    supervised_tokens_lost_pct: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def truncation_table(counts: TokenCounts, seq_lengths: Sequence[int]) -> list[TruncationRow]:
    """What right truncation to each length costs; supervised loss uses each row's supervised token runs."""
    total = counts.total.astype(np.int64)
    sup = counts.supervised.astype(np.int64)
    all_tokens = int(total.sum())
    all_sup = int(sup.sum())
    out = []
    for L in seq_lengths:
        lost = int(np.clip(total - L, 0, None).sum())
        kept = counts.supervised_kept(L)
        sup_lost = int((sup - kept).sum())
        out.append(
            TruncationRow(
                seq_length=int(L),
                rows_truncated=int((total > L).sum()),
                rows_losing_all_supervision=int(((sup > 0) & (kept == 0)).sum()),
                tokens_lost=lost,
                tokens_lost_pct=_pct(lost, all_tokens),
                supervised_tokens_lost=sup_lost,
                supervised_tokens_lost_pct=_pct(sup_lost, all_sup),
            )
        )
    return out


def _pct(part: int, whole: int) -> float:
    return round(100.0 * part / whole, 3) if whole else 0.0


# -- padding ---------------------------------------------------------------------------------------------------
def expected_max_of_sample(lengths: np.ndarray, batch_size: int) -> float:
    """E[max] of ``batch_size`` rows drawn at random without replacement (the padded length of a random batch).

    With the lengths sorted, the k-th smallest (1-based) is the batch maximum with probability
    C(k-1, b-1) / C(n, b); the weights are built from the ratio between neighbours, in logs.
    """
    x = np.sort(np.asarray(lengths, dtype=np.float64))
    n, b = x.size, int(batch_size)
    if n == 0:
        return 0.0
    if b >= n:
        return float(x[-1])
    if b == 1:
        return float(x.mean())
    # log w_k = log(b/n) + sum_{j=k+1..n} log((j-b)/(j-1)), zero weight for k < b.
    j = np.arange(b + 1, n + 1, dtype=np.float64)
    steps = np.log((j - b) / (j - 1))  # for j = b+1..n
    suffix = np.concatenate([np.cumsum(steps[::-1])[::-1], [0.0]])  # suffix[i] = sum of steps for j > b+i
    logw = math.log(b / n) + suffix  # k = b..n
    w = np.exp(logw)
    return float(np.dot(w, x[b - 1 :]) / w.sum())


def grouped_padded_tokens(lengths: np.ndarray, batch_size: int) -> int:
    """Padded tokens when rows are sorted by length and cut into batches of ``batch_size`` (last one short)."""
    x = np.sort(np.asarray(lengths, dtype=np.int64))
    if x.size == 0:
        return 0
    b = int(batch_size)
    maxima = x[np.minimum(np.arange(b - 1, x.size + b - 1, b), x.size - 1)]
    sizes = np.full(maxima.size, b, dtype=np.int64)
    sizes[-1] = x.size - b * (maxima.size - 1)
    return int((maxima * sizes).sum())


@dataclass(frozen=True)
class PaddingRow:
    batch_size: int
    random_efficiency: float
    grouped_efficiency: float
    expected_max_len_random: float
    capped: tuple[dict[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["capped"] = [dict(c) for c in self.capped]
        return d


def padding_table(
    lengths: np.ndarray, batch_sizes: Sequence[int], seq_lengths: Sequence[int] = ()
) -> list[PaddingRow]:
    """Padding efficiency (real tokens / tokens after padding each batch to its longest row) per batch size.

    ``random``: a batch of b rows drawn at random (the expectation, exact for the empirical distribution).
    ``grouped``: rows sorted by length and batched in order, the ideal of a length-grouped sampler.
    ``capped``: the same for random batches after truncation to each sequence length.
    """
    x = np.asarray(lengths, dtype=np.int64)
    out = []
    mean = float(x.mean()) if x.size else 0.0
    for b in batch_sizes:
        emax = expected_max_of_sample(x, b)
        grouped = grouped_padded_tokens(x, b)
        capped = []
        for L in seq_lengths:
            xc = np.minimum(x, L)
            em = expected_max_of_sample(xc, b)
            capped.append(
                {
                    "seq_length": int(L),
                    "expected_max_len_random": round(em, 2),
                    "random_efficiency": round(float(xc.mean()) / em, 4) if em else 0.0,
                }
            )
        out.append(
            PaddingRow(
                batch_size=int(b),
                random_efficiency=round(mean / emax, 4) if emax else 0.0,
                grouped_efficiency=round(int(x.sum()) / grouped, 4) if grouped else 0.0,
                expected_max_len_random=round(emax, 2),
                capped=tuple(capped),
            )
        )
    return out


# -- packing ---------------------------------------------------------------------------------------------------
def ffd_pack_count(lengths: np.ndarray, capacity: int) -> int:
    """Packs first-fit decreasing needs; rows longer than ``capacity`` count as truncated to it.

    Exact FFD, vectorized by equal sizes: in decreasing order, the items of one size go first-fit into the
    existing packs in index order (each eligible pack takes as many as fit), then into new packs.
    """
    x = np.minimum(np.asarray(lengths, dtype=np.int64), capacity)
    x = x[x > 0]
    if x.size == 0:
        return 0
    sizes, counts = np.unique(x, return_counts=True)
    caps = np.empty(x.size, dtype=np.int64)  # remaining room per pack; never more packs than items
    nb = 0
    for s, k in zip(sizes[::-1].tolist(), counts[::-1].tolist(), strict=True):
        # Items above half the capacity never share: every open pack holds an item >= s, so has room < s.
        if nb and 2 * s <= capacity:
            open_caps = caps[:nb]
            elig = np.flatnonzero(open_caps >= s)
            if elig.size:
                fit = open_caps[elig] // s
                cum = np.cumsum(fit)
                if cum[-1] >= k:
                    j = int(np.searchsorted(cum, k))
                    take = fit[: j + 1].copy()
                    take[j] = k - (int(cum[j - 1]) if j else 0)
                    caps[elig[: j + 1]] -= take * s
                    k = 0
                else:
                    caps[elig] -= fit * s
                    k -= int(cum[-1])
        if k:
            per = capacity // s
            new = -(-k // per)
            caps[nb : nb + new] = capacity - per * s
            caps[nb + new - 1] = capacity - (k - per * (new - 1)) * s
            nb += new
    return nb


@dataclass(frozen=True)
class PackingRow:
    seq_length: int
    packs: int
    efficiency: float
    rows_truncated: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def packing_table(lengths: np.ndarray, seq_lengths: Sequence[int]) -> list[PackingRow]:
    """Packing efficiency (tokens / (packs x seq_length)) with first-fit decreasing, per sequence length."""
    x = np.asarray(lengths, dtype=np.int64)
    out = []
    for L in seq_lengths:
        packs = ffd_pack_count(x, L)
        used = int(np.minimum(x, L).sum())
        out.append(
            PackingRow(
                seq_length=int(L),
                packs=packs,
                efficiency=round(used / (packs * L), 4) if packs else 0.0,
                rows_truncated=int((x > L).sum()),
            )
        )
    return out


# -- recommendation --------------------------------------------------------------------------------------------
def recommend_seq_length(
    counts: TokenCounts, model_max_length: int | None = None, coverage: int = COVERAGE_PERCENTILE
) -> int | None:
    """``RECOMMENDATION_RULE``; None when there are no rows.

    Percentiles, not maxima: a single row of 11k tokens among 300 of ~1.5k must not ask for 11k (and an OOM);
    the rows a length leaves without supervision are reported by the caller.
    """
    if len(counts) == 0:
        return None
    need = percentile(counts.total, coverage)
    first = counts.first_supervised()
    has_sup = counts.supervised > 0
    if has_sup.any():
        need = max(need, percentile(first[has_sup] + 1, coverage))
    rec = max(SEQ_MULTIPLE, -(-need // SEQ_MULTIPLE) * SEQ_MULTIPLE)
    if model_max_length:
        rec = min(rec, int(model_max_length))
    return int(rec)


# -- the whole thing -------------------------------------------------------------------------------------------
def _positive(v: Any) -> float | None:
    """A finite positive number from a stats document (a hand-edited or foreign file may hold anything)."""
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
    return v if ok else None


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _mapping(v: Any) -> dict:
    return v if isinstance(v, dict) else {}


def _rows_of(v: Any) -> list[dict]:
    return [r for r in v if isinstance(r, dict)] if isinstance(v, list) else []


@dataclass(frozen=True)
class PaddingExpect:
    """A padding row as plan reads it: the expected longest row of a random micro-batch of ``batch_size``, and
    the same with rows capped at each sequence length."""

    batch_size: float
    expected_max_len_random: float | None
    capped: Mapping[float, float] = field(default_factory=dict)  # seq_length -> expected longest, capped


@dataclass(frozen=True)
class StatsSummary:
    """The figures of a stats run that ``plan`` and the time estimate read, typed once at the edge.

    ``from_json``: a stats document (``dataprep stats --json``), which may be hand-edited or come from another
    version: a value that is not a finite positive number where one belongs is left out, never trusted.
    ``StatsResult.summary()``: the same from a run in this process.
    """

    rows: float | None = None  # rows measured (``rows``, else ``tokens.total.count``)
    rows_read: float | None = None
    rows_skipped: float = 0.0
    sampled: bool = False
    recommended_seq_length: int | None = None
    total_count: float | None = None
    total_sum: float | None = None
    total_mean: float | None = None
    total_max: float | None = None
    histogram: tuple[tuple[float, float, float], ...] = ()  # (lo, hi, rows) of the bins that hold rows
    tokens_lost: Mapping[float, float] = field(default_factory=dict)  # seq_length -> tokens truncation cuts
    padding: tuple[PaddingExpect, ...] = ()  # by batch size
    packing_efficiency: Mapping[float, float | None] = field(default_factory=dict)  # seq_length -> fill

    @classmethod
    def from_json(cls, doc: Any) -> StatsSummary:
        doc = _mapping(doc)
        total = _mapping(_mapping(doc.get("tokens")).get("total"))
        rec = doc.get("recommended_seq_length")
        hist = _mapping(doc.get("histogram"))
        edges, counts = hist.get("edges"), hist.get("counts")
        bins: list[tuple[float, float, float]] = []
        if isinstance(edges, list) and isinstance(counts, list) and len(edges) == len(counts) + 1:
            for lo, hi, c in zip(edges, edges[1:], counts, strict=False):
                if _positive(c) and _number(lo) and _number(hi):
                    bins.append((lo, hi, c))
        lost: dict[float, float] = {}
        for t in _rows_of(doc.get("truncation")):
            if _number(t.get("seq_length")):
                v = t.get("tokens_lost")
                lost.setdefault(t["seq_length"], v if isinstance(v, (int, float)) else 0)
        padding = []
        for r in _rows_of(doc.get("padding")):
            if not _positive(r.get("batch_size")):
                continue
            capped: dict[float, float] = {}
            for cap in _rows_of(r.get("capped")):
                if _number(cap.get("seq_length")) and (v := _positive(cap.get("expected_max_len_random"))):
                    capped.setdefault(cap["seq_length"], v)
            padding.append(
                PaddingExpect(r["batch_size"], _positive(r.get("expected_max_len_random")), capped)
            )
        packing: dict[float, float | None] = {}
        for p in _rows_of(doc.get("packing")):
            if _number(p.get("seq_length")):
                packing.setdefault(p["seq_length"], _positive(p.get("efficiency")))
        return cls(
            rows=_positive(doc.get("rows")) or _positive(total.get("count")),
            rows_read=_positive(doc.get("rows_read")),
            rows_skipped=sum(v for v in _mapping(doc.get("rows_skipped")).values() if _positive(v)),
            sampled=doc.get("sampled") is True,
            recommended_seq_length=int(rec) if _number(rec) and rec > 0 else None,
            total_count=_positive(total.get("count")),
            total_sum=_positive(total.get("sum")),
            total_mean=_positive(total.get("mean")),
            total_max=_positive(total.get("max")),
            histogram=tuple(bins),
            tokens_lost=lost,
            padding=tuple(sorted(padding, key=lambda r: r.batch_size)),
            packing_efficiency=packing,
        )


@dataclass(frozen=True)
class StatsResult:
    counts: TokenCounts
    rows_read: int
    sampled: bool
    tokens_total: dict[str, Any]
    tokens_supervised: dict[str, Any]
    turns: dict[str, Any]
    truncation: tuple[TruncationRow, ...]
    padding: tuple[PaddingRow, ...]
    packing: tuple[PackingRow, ...]
    recommended_seq_length: int | None
    model_max_length: int | None
    histogram: dict[str, Any]
    findings: tuple[Finding, ...] = field(default=())
    rows_skipped: dict[str, int] = field(default_factory=dict)  # finding code -> rows read, not measured
    mask_generation_prompt: bool = False
    quality: dict[str, Any] | None = None  # the data-quality lint (dataprep.quality), when it ran

    @property
    def rows(self) -> int:
        return len(self.counts)

    @property
    def mask_source(self) -> str:
        return self.counts.mask_source

    def summary(self) -> StatsSummary:
        """What plan reads of this run."""
        return StatsSummary.from_json(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "rows_read": self.rows_read,
            "rows_skipped": dict(self.rows_skipped),
            "sampled": self.sampled,
            "rows_render_error": len(self.counts.render_errors),
            "rows_mask_unbuildable": int(self.counts.unmaskable().size),
            "mask_source": self.mask_source,
            "mask_source_meaning": MASK_SOURCE_MEANING.get(self.mask_source),
            "mask_generation_prompt": self.mask_generation_prompt,
            "trainer_model": f"nemo-automodel {AUTOMODEL_VERSION}",
            "model_max_length": self.model_max_length,
            "tokens": {"total": self.tokens_total, "supervised": self.tokens_supervised},
            "turns": self.turns,
            "truncation": [t.to_dict() for t in self.truncation],
            "padding": [p.to_dict() for p in self.padding],
            "packing": [p.to_dict() for p in self.packing],
            "recommended_seq_length": self.recommended_seq_length,
            "recommended_seq_length_rule": RECOMMENDATION_RULE,
            "histogram": self.histogram,
            "quality": self.quality,
            "findings": [f.to_dict() for f in self.findings],
        }


def too_long(counts: TokenCounts, seq_length: int | None, max_tokens: int | None = None) -> np.ndarray:
    """Positions of the rows that training at ``seq_length`` would keep no supervised token of (they had some),
    or longer than ``max_tokens``: the rows preflight sets aside as ``too_long``."""
    out = np.zeros(len(counts), dtype=bool)
    if seq_length is not None:
        out |= (counts.supervised > 0) & (counts.supervised_kept(int(seq_length)) == 0)
    if max_tokens is not None:
        out |= counts.total > int(max_tokens)
    return np.flatnonzero(out)


def stats_from_counts(
    counts: TokenCounts,
    *,
    seq_lengths: Sequence[int] = DEFAULT_SEQ_LENGTHS,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    model_max_length: int | None = None,
    rows_read: int | None = None,
    sampled: bool = False,
    skipped: Skipped | None = None,
    mask_generation_prompt: bool = False,
    max_tokens: int | None = None,
) -> StatsResult:
    """Everything ``compute_stats`` reports, from counts already measured.

    ``skipped``: the rows the converter rejected on the way (counted in ``rows_read`` and reported).
    ``max_tokens``: rows longer are set aside (``too_long``, counted in ``rows_skipped``) before anything is
    summarized, so the figures describe the rows that will be trained.
    """
    long_rows: np.ndarray | None = None
    if max_tokens is not None:
        if max_tokens <= 0:
            raise ValueError("max_tokens must be positive")
        over = counts.total > int(max_tokens)
        if over.any():
            long_rows = counts.rows[over]
            counts = counts.subset(~over)
    seq_lengths = sorted({int(s) for s in seq_lengths})
    batch_sizes = sorted({int(b) for b in batch_sizes})
    if any(s <= 0 for s in seq_lengths) or any(b <= 0 for b in batch_sizes):
        raise ValueError("sequence lengths and batch sizes must be positive")
    total = counts.total
    rec = recommend_seq_length(counts, model_max_length)
    findings = (skipped.findings() if skipped else []) + _findings(counts, rec, model_max_length, seq_lengths)
    rows_skipped = dict(skipped.counts()) if skipped else {}
    if long_rows is not None:
        rows_skipped["too_long"] = int(long_rows.size)
        findings.append(
            finding(
                "too_long",
                f"{long_rows.size} row(s) longer than $[max_tokens] {max_tokens} set aside (not in these figures)",
                rows=long_rows[:FIRST_ROWS].tolist(),
                count=int(long_rows.size),
                max_tokens=int(max_tokens),
            )
        )
    for _, code, _ in counts.rejected:
        rows_skipped[code] = rows_skipped.get(code, 0) + 1
    if rows_read is None:
        rows_read = len(counts) + sum(rows_skipped.values())
    return StatsResult(
        counts=counts,
        rows_read=rows_read,
        sampled=sampled,
        tokens_total=summarize(total),
        tokens_supervised=summarize(counts.supervised),
        turns=summarize(counts.turns),
        truncation=tuple(truncation_table(counts, seq_lengths)),
        padding=tuple(padding_table(total, batch_sizes, seq_lengths)),
        packing=tuple(packing_table(total, seq_lengths)),
        recommended_seq_length=rec,
        model_max_length=model_max_length,
        histogram=histogram(total, counts.supervised),
        findings=tuple(findings),
        rows_skipped=rows_skipped,
        mask_generation_prompt=mask_generation_prompt,
    )


def _findings(
    counts: TokenCounts, rec: int | None, model_max_length: int | None, seq_lengths: Sequence[int]
) -> list[Finding]:
    out: list[Finding] = []
    by_code: dict[str, list[tuple[int, str]]] = {}
    for row, code, msg in counts.rejected:
        by_code.setdefault(code, []).append((row, msg))
    for code, items in sorted(by_code.items()):
        first_row, first_msg = items[0]
        what = (
            "the chat template cannot render"
            if code == "template_render_error"
            else "AutoModel's ChatDataset raises on"
        )
        out.append(
            finding(
                code,
                f"{len(items)} row(s) {what} (not measured; training stops on them); row {first_row}: {first_msg}",
                rows=[r for r, _ in items[:FIRST_ROWS]],
                severity="error",
                count=len(items),
            )
        )
    bad = counts.unmaskable()
    if bad.size:
        at_rec = counts.unmaskable(rec).size if rec else bad.size
        out.append(
            finding(
                "mask_unbuildable",
                f"{bad.size} row(s) whose loss mask AutoModel cannot build from conversation prefixes: rendering a "
                f"conversation's start alone is not a prefix of rendering the whole (training raises "
                f"'Cannot build an answer-only loss mask'); {at_rec} still do when truncated to {rec}",
                rows=counts.rows[bad][:FIRST_ROWS].tolist(),
                count=int(bad.size),
            )
        )
    none = counts.rows[counts.supervised <= 0]
    if none.size:
        out.append(
            finding(
                "no_supervised_tokens",
                f"{none.size} row(s) have no supervised (assistant) tokens ({counts.mask_source})",
                rows=none.tolist(),
            )
        )
    if model_max_length:
        over = counts.rows[counts.total > model_max_length]
        if over.size:
            out.append(
                finding(
                    "exceeds_model_max_length",
                    f"{over.size} row(s) are longer than the tokenizer's model_max_length {model_max_length}"
                    f" (longest: {int(counts.total.max())} tokens)",
                    rows=over.tolist(),
                    model_max_length=int(model_max_length),
                )
            )
    if rec is not None:
        kept = counts.supervised_kept(rec)
        lose = counts.rows[(counts.supervised > 0) & (kept == 0)]
        if lose.size:
            out.append(
                finding(
                    "truncation_drops_answers",
                    f"at seq_length {rec} (recommended), {lose.size} row(s) lose every supervised token"
                    f" (longest: {int(counts.total[np.isin(counts.rows, lose)].max())} tokens); preflight sets"
                    " them aside as too_long",
                    rows=lose[:FIRST_ROWS].tolist(),
                    count=int(lose.size),
                    seq_length=int(rec),
                )
            )
    return out


def reservoir_sample(
    items: Iterable[tuple[int, dict]], k: int, seed: int = 0
) -> tuple[list[tuple[int, dict]], int]:
    """A uniform sample of ``k`` items (in input order) and how many items there were."""
    rng = np.random.default_rng(seed)
    sample: list[tuple[int, dict]] = []
    n = 0
    for n, item in enumerate(items, start=1):
        if len(sample) < k:
            sample.append(item)
        else:
            j = int(rng.integers(0, n))
            if j < k:
                sample[j] = item
    sample.sort(key=lambda it: it[0])
    return sample, n


def tokenizer_max_length(loaded: Any) -> int | None:
    tok = getattr(loaded, "tokenizer", loaded)
    m = getattr(tok, "model_max_length", None)
    return int(m) if isinstance(m, int) and 0 < m < _NO_MAX_LENGTH else None


def stats_of_input(path: str | Path, loaded: Any, spec: Any = None, **kwargs: Any) -> StatsResult:
    """``compute_stats`` over an input file as the row pipeline reads it (any record shape): the rows it rejects
    are counted as skipped, and what the converter noticed on the rows it kept is one finding per code.
    ``spec``: a ``pipeline.ConvertSpec``; ``kwargs``: ``compute_stats``'."""
    from .converters._common import Notes
    from .pipeline import conversations, note_findings

    skipped = Skipped()
    notes = Notes()
    rows = conversations(path, spec, on_reject=skipped.add_reject, notes=notes)
    result = compute_stats(rows, loaded, skipped=skipped, **kwargs)
    return dataclasses.replace(result, findings=(*result.findings, *note_findings(notes)))


def compute_stats(
    conversations: Iterable[tuple[int, dict]],
    loaded: Any,
    *,
    seq_lengths: Sequence[int] = DEFAULT_SEQ_LENGTHS,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    sample: int | None = None,
    workers: int | str = 1,
    model_max_length: int | None = None,
    mask_generation_prompt: bool = False,
    progress: Callable[[int], None] | None = None,
    skipped: Skipped | None = None,
    max_tokens: int | None = None,
    quality: bool = True,
    eval_paths: Sequence[str] = (),
) -> StatsResult:
    """Measure (row number, conversation) pairs through ``loaded``'s chat template and summarize.

    ``loaded`` is a ``LoadedTokenizer`` (or a transformers fast tokenizer with a chat template).
    ``sample``: measure a uniform random sample of that many rows (seeded) instead of every row.
    ``model_max_length``: defaults to the tokenizer's, when it states one.
    ``mask_generation_prompt``: the recipe's ``dataset.mask_generation_prompt`` (ChatDataset's option).
    ``skipped``: collects the rows the caller's converter rejected (``pipeline.conversations(on_reject=...)``).
    ``quality``: run the data-quality lint (``dataprep.quality``) over every row read, as it streams.
    ``eval_paths``: eval sets; rows sharing a normalised 13-gram with an eval item are ``eval_contamination``.
    """
    if sample is not None and sample <= 0:
        raise ValueError("sample must be positive")
    rows_read: int | None = None
    lint = None
    if quality:
        from .quality import QualityLint

        lint = QualityLint()
        conversations = _linted(conversations, lint)
    checks = None
    if eval_paths:
        from .dedup import RowChecks

        checks = RowChecks(near=False, eval_paths=eval_paths)
        conversations = _checked(conversations, checks)
    items: Iterable[tuple[int, dict]] = conversations
    if sample is not None:
        items, rows_read = reservoir_sample(conversations, sample)
    counts = measure_conversations(
        items, loaded, mask_generation_prompt=mask_generation_prompt, workers=workers, progress=progress
    )
    if rows_read is not None and skipped is not None:
        rows_read += skipped.total
    return stats_of_measured(
        counts,
        loaded,
        seq_lengths=seq_lengths,
        batch_sizes=batch_sizes,
        model_max_length=model_max_length,
        rows_read=rows_read,
        sampled=sample is not None and rows_read > len(counts) + len(counts.rejected),
        skipped=skipped,
        mask_generation_prompt=mask_generation_prompt,
        max_tokens=max_tokens,
        lint=lint,
        checks=checks,
    )


def stats_of_measured(
    counts: TokenCounts,
    loaded: Any,
    *,
    model_max_length: int | None = None,
    lint: Any = None,
    checks: Any = None,
    **options: Any,
) -> StatsResult:
    """The stats of rows measured elsewhere (``compute_stats``, or preflight measuring as it splits), with the
    findings of the quality lint and eval checks that saw the same rows. ``options``: ``stats_from_counts``'."""

    mml = model_max_length if model_max_length is not None else tokenizer_max_length(loaded)
    result = stats_from_counts(counts, model_max_length=mml, **options)
    if checks is not None:
        result = dataclasses.replace(result, findings=(*result.findings, *checks.findings()))
    if lint is None:
        return result
    return dataclasses.replace(result, findings=(*result.findings, *lint.findings()), quality=lint.to_dict())


def _checked(items: Iterable[tuple[int, dict]], checks: Any) -> Iterator[tuple[int, dict]]:
    for row, conv in items:
        checks.see(row, conv)  # contamination is counted, nothing dropped: stats describes the data
        yield row, conv


def _linted(items: Iterable[tuple[int, dict]], lint: Any) -> Iterator[tuple[int, dict]]:
    for row, conv in items:
        lint.add(row, conv)
        yield row, conv


PER_ROW_SUFFIXES = (".jsonl", ".parquet", ".pq")


def check_per_row(out: str, inputs: Sequence[str], *, force: bool = False) -> None:
    """Refuse a per-row file ``write_per_row`` cannot write (a suffix it does not know, an input, an existing file
    without ``force``) before anything is measured."""
    from .atomic import check_output_path
    from .errors import UsageError

    if Path(out).suffix.lower() not in PER_ROW_SUFFIXES:
        raise UsageError(f"$[per_row] {out}: the file name must end in .jsonl or .parquet")
    check_output_path(out, list(inputs), force=force)


def write_per_row(out: str, counts: Any) -> None:
    """row, total, supervised, turns per measured row; Parquet or JSONL by extension; atomic."""
    from .atomic import atomic_path, atomic_write

    if Path(out).suffix.lower() in PER_ROW_SUFFIXES[1:]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table(
            {
                "row": counts.rows,
                "total": counts.total,
                "supervised": counts.supervised,
                "turns": counts.turns,
            }
        )
        with atomic_path(out) as tmp:
            pq.write_table(table, tmp)
        return
    with atomic_write(out) as fh:
        for r, t, s, u in zip(
            counts.rows.tolist(),
            counts.total.tolist(),
            counts.supervised.tolist(),
            counts.turns.tolist(),
            strict=True,
        ):
            fh.write(f'{{"row":{r},"total":{t},"supervised":{s},"turns":{u}}}\n')
