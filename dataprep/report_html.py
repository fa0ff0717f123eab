"""report.html: one self-contained page for a preflight report (jinja2, inline CSS and SVG, no scripts).

The page is built from the report.json document alone, so it can be re-rendered later. Geometry for the
charts is computed here in Python; the template only places numbers, and autoescaping stays on for every
string that came from the data (messages, hints, paths, the YAML).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .atomic import atomic_write

TEMPLATE = "report.html.jinja"

# Chart geometry (px, in SVG user units).
HIST_W, HIST_H = 760, 260
HIST_PAD_L, HIST_PAD_R, HIST_PAD_T, HIST_PAD_B = 56, 16, 16, 40
MEM_W, MEM_BAR_H = 760, 34

PALETTE = (
    "#3b6fd8",
    "#17a398",
    "#f2a541",
    "#c8553d",
    "#8e6fd8",
    "#5c946e",
    "#d8648f",
    "#6c7a89",
    "#b6a33a",
    "#2f9bd6",
)

VERDICT_TEXT = {
    "pass": "Ready to train",
    "pass_with_warnings": "Ready to train, with warnings",
    "fail": "Not ready: fix the errors below",
}


@dataclass(frozen=True)
class Bin:
    lo: float
    hi: float
    count: int


def histogram_bins(hist: Any) -> list[Bin]:
    """Read the stats histogram in the shapes it may take into one list of bins.

    Accepted: ``{"edges": [...], "counts": [...]}`` (numpy style); a list of ``{lo|start|min, hi|end|max,
    count}`` dicts; ``{"bins": <either>}``; and any of those under ``"total"`` (the total-token one is drawn).
    """
    if hist is None:
        return []
    if isinstance(hist, Mapping):
        for key in ("total", "tokens", "total_tokens"):
            if key in hist and not {"edges", "counts"} <= set(hist):
                return histogram_bins(hist[key])
        if "bins" in hist and "counts" not in hist:
            return histogram_bins(hist["bins"])
        edges = hist.get("edges") or hist.get("bin_edges")
        counts = hist.get("counts")
        if isinstance(edges, Sequence) and isinstance(counts, Sequence) and len(edges) == len(counts) + 1:
            return [Bin(float(edges[i]), float(edges[i + 1]), int(c)) for i, c in enumerate(counts)]
        if isinstance(counts, Sequence) and isinstance(hist.get("bins"), Sequence):
            b = hist["bins"]
            if len(b) == len(counts) + 1:
                return [Bin(float(b[i]), float(b[i + 1]), int(c)) for i, c in enumerate(counts)]
        return []
    if isinstance(hist, Sequence) and not isinstance(hist, (str, bytes)):
        out = []
        for item in hist:
            if not isinstance(item, Mapping):
                return []
            lo = _first(item, ("lo", "start", "min", "low", "left"))
            hi = _first(item, ("hi", "end", "max", "high", "right"))
            count = _first(item, ("count", "rows", "n"))
            if lo is None or hi is None or count is None:
                return []
            out.append(Bin(float(lo), float(hi), int(count)))
        return out
    return []


def _first(d: Mapping[str, Any], keys: Sequence[str]) -> Any:
    for k in keys:
        if k in d and d[k] is not None:
            return d[k]
    return None


def _nice_step(span: float, target: int) -> float:
    """A 1/2/5 x 10^k step giving about ``target`` ticks over ``span``."""
    if span <= 0:
        return 1.0
    raw = span / max(target, 1)
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def _fmt_num(v: float) -> str:
    if abs(v) >= 1_000_000:
        return f"{v / 1_000_000:.1f}M".replace(".0M", "M")
    if abs(v) >= 10_000:
        return f"{v / 1000:.0f}k"
    if abs(v) >= 1000:
        return f"{v / 1000:.1f}k".replace(".0k", "k")
    return f"{v:g}"


def histogram_view(hist: Any, markers: Mapping[str, int | None] | None = None) -> dict[str, Any] | None:
    """Bars, axes and markers for the token-length histogram, in SVG coordinates."""
    bins = histogram_bins(hist)
    if not bins:
        return None
    x0, x1 = bins[0].lo, bins[-1].hi
    marks = {k: v for k, v in (markers or {}).items() if isinstance(v, (int, float))}
    # Widen the axis to a marker just past the data, so "seq_length" is seen against the distribution.
    for v in marks.values():
        if x1 < v <= x1 * 1.5:
            x1 = float(v)
    span = (x1 - x0) or 1.0
    ymax = max(b.count for b in bins) or 1
    pw = HIST_W - HIST_PAD_L - HIST_PAD_R
    ph = HIST_H - HIST_PAD_T - HIST_PAD_B

    def sx(v: float) -> float:
        return HIST_PAD_L + (v - x0) / span * pw

    def sy(c: float) -> float:
        return HIST_PAD_T + ph - c / ymax * ph

    bars = []
    for b in bins:
        x, w = sx(b.lo), max(sx(b.hi) - sx(b.lo) - 1.0, 1.0)
        y = sy(b.count)
        bars.append(
            {
                "x": round(x, 2),
                "y": round(y, 2),
                "w": round(w, 2),
                "h": round(HIST_PAD_T + ph - y, 2),
                "title": f"{_fmt_num(b.lo)}-{_fmt_num(b.hi)} tokens: {b.count} rows",
                "count": b.count,
            }
        )
    ystep = _nice_step(ymax, 4)
    yticks = [
        {"y": round(sy(v), 2), "label": _fmt_num(v)} for v in _frange(0, ymax, ystep) if v <= ymax * 1.0001
    ]
    xstep = _nice_step(span, 6)
    start = math.ceil(x0 / xstep) * xstep
    xticks = [{"x": round(sx(v), 2), "label": _fmt_num(v)} for v in _frange(start, x1, xstep)]
    mlines = []
    for name, v in marks.items():
        if x0 <= v <= x1:
            mlines.append({"x": round(sx(v), 2), "label": f"{name} {int(v)}"})
    return {
        "width": HIST_W,
        "height": HIST_H,
        "bars": bars,
        "yticks": yticks,
        "xticks": xticks,
        "markers": mlines,
        "plot": {"x0": HIST_PAD_L, "x1": HIST_W - HIST_PAD_R, "y0": HIST_PAD_T, "y1": HIST_PAD_T + ph},
        "rows": sum(b.count for b in bins),
    }


def _frange(start: float, stop: float, step: float) -> list[float]:
    out, v, i = [], start, 0
    while v <= stop + step * 1e-9 and i < 1000:
        out.append(round(v, 10))
        i += 1
        v = start + i * step
    return out


def memory_view(plan: Mapping[str, Any] | None, gpu_memory_gib: float | None = None) -> dict[str, Any] | None:
    """A stacked bar of the per-GPU memory breakdown (GiB), against the GPU's capacity when known."""
    if not plan:
        return None
    mem = plan.get("memory") or {}
    breakdown = mem.get("breakdown") if isinstance(mem, Mapping) else None
    if not isinstance(breakdown, Mapping) or not breakdown:
        return None
    parts = [
        (str(k), float(v))
        for k, v in breakdown.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("total", "per_gpu_gib")
    ]
    parts = [(k, v) for k, v in parts if v > 0]
    if not parts:
        return None
    total = mem.get("per_gpu_gib")
    total = float(total) if isinstance(total, (int, float)) else sum(v for _, v in parts)
    cap = gpu_memory_gib or _first(mem, ("gpu_memory_gib", "budget_gib", "capacity_gib", "usable_gib"))
    cap = float(cap) if isinstance(cap, (int, float)) else None
    scale_max = max(total, sum(v for _, v in parts), cap or 0.0) or 1.0
    x, segs = 0.0, []
    for i, (name, v) in enumerate(parts):
        w = v / scale_max * MEM_W
        segs.append(
            {
                "name": name.replace("_", " "),
                "gib": v,
                "x": round(x, 2),
                "w": round(max(w, 0.5), 2),
                "color": PALETTE[i % len(PALETTE)],
                "share": v / total * 100 if total else 0.0,
            }
        )
        x += w
    return {
        "width": MEM_W,
        "bar_h": MEM_BAR_H,
        "segments": segs,
        "total_gib": total,
        "capacity_gib": cap,
        "capacity_x": round(cap / scale_max * MEM_W, 2) if cap else None,
        "fits": plan.get("fits"),
    }


def _table(rows: Any) -> dict[str, Any] | None:
    """A list of flat dicts as columns + rows (nested values shown as text)."""
    if not isinstance(rows, Sequence) or isinstance(rows, (str, bytes)) or not rows:
        return None
    if not all(isinstance(r, Mapping) for r in rows):
        return None
    cols: list[str] = []
    for r in rows:
        for k in r:
            if k not in cols and not isinstance(r[k], (Mapping, list)):
                cols.append(k)
    body = [[_cell(r.get(c)) for c in cols] for r in rows]
    return {"columns": [c.replace("_", " ") for c in cols], "rows": body}


def _cell(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:,.2f}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _pct(v: Any) -> str:
    """A 0..1 efficiency as a percentage."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return f"{v * 100:.1f}%"
    return _cell(v)


def _tokens(v: Any) -> str:
    """An expected token count, to the whole token."""
    if isinstance(v, float):
        return f"{round(v):,}"
    return _cell(v)


def padding_view(rows: Any, chosen: Any = None) -> list[dict[str, Any]]:
    """Per micro-batch size: padding efficiency of random and length-grouped batches, and the expected
    longest row of a random batch (what every row in it is padded to); ``chosen`` marks the plan's size."""
    if not isinstance(rows, Sequence) or isinstance(rows, (str, bytes)):
        return []
    return [
        {
            "batch_size": _cell(r.get("batch_size")),
            "random": _pct(r.get("random_efficiency")),
            "grouped": _pct(r.get("grouped_efficiency")),
            "expected_max": _tokens(r.get("expected_max_len_random")),
            "chosen": chosen is not None and r.get("batch_size") == chosen,
        }
        for r in rows
        if isinstance(r, Mapping)
    ]


def packing_view(rows: Any, chosen: Any = None) -> list[dict[str, Any]]:
    """Per sequence length: first-fit-decreasing packing efficiency, packs, and rows cut to fit; ``chosen``
    marks the run's sequence length."""
    if not isinstance(rows, Sequence) or isinstance(rows, (str, bytes)):
        return []
    return [
        {
            "seq_length": _cell(r.get("seq_length")),
            "efficiency": _pct(r.get("efficiency")),
            "packs": _cell(r.get("packs")),
            "rows_truncated": _cell(r.get("rows_truncated")),
            "chosen": chosen is not None and r.get("seq_length") == chosen,
        }
        for r in rows
        if isinstance(r, Mapping)
    ]


def _token_summary(stats: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    if not stats:
        return []
    tokens = stats.get("tokens") or {}
    out = []
    for kind in ("total", "supervised"):
        d = tokens.get(kind)
        if isinstance(d, Mapping):
            out.append(
                {"kind": kind, **{k: _cell(d.get(k)) for k in ("mean", "min", "p50", "p90", "p99", "max")}}
            )
    return out


def _rec_list(rec: Any) -> list[tuple[str, str]]:
    if not isinstance(rec, Mapping):
        return []
    return [
        (str(k).replace("_", " "), _cell(v)) for k, v in rec.items() if not isinstance(v, (Mapping, list))
    ]


def template_view(figures: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The check-template sample: its rendering cut into pieces, the supervised (trained) ones marked."""
    if not figures:
        return None
    sample = figures.get("sample")
    info = {
        "source": figures.get("template_source"),
        "generation_tags": figures.get("has_generation_tags"),
        "mask_source": None,
        "pieces": [],
        "total_tokens": None,
        "supervised_tokens": None,
    }
    if isinstance(sample, Mapping) and isinstance(sample.get("text"), str):
        text = sample["text"]
        spans = sorted(
            (int(sp["start"]), int(sp["end"]))
            for sp in sample.get("spans") or []
            if isinstance(sp, Mapping) and "start" in sp and "end" in sp
        )
        pieces, pos = [], 0
        for start, end in spans:
            start, end = max(start, pos), min(end, len(text))
            if start >= end:
                continue
            if start > pos:
                pieces.append({"text": text[pos:start], "trained": False})
            pieces.append({"text": text[start:end], "trained": True})
            pos = end
        if pos < len(text):
            pieces.append({"text": text[pos:], "trained": False})
        info.update(
            pieces=pieces,
            mask_source=sample.get("mask_source"),
            total_tokens=sample.get("total_tokens"),
            supervised_tokens=sample.get("supervised_tokens"),
        )
    return info


def build_view(report: Mapping[str, Any]) -> dict[str, Any]:
    """Everything the template shows, derived from a report.json document."""
    steps = report.get("steps") or []
    by_name = {s.get("name"): s for s in steps if isinstance(s, Mapping)}
    stats = (by_name.get("stats") or {}).get("figures") or None
    plan = (by_name.get("plan") or {}).get("figures") or None
    template = (by_name.get("check-template") or {}).get("figures") or None
    verdict = report.get("verdict", "fail")
    findings = list(report.get("findings") or [])
    order = {"error": 0, "warning": 1, "info": 2}
    findings.sort(key=lambda f: order.get(f.get("severity"), 3))
    counts = {
        sev: sum(1 for f in findings if f.get("severity") == sev) for sev in ("error", "warning", "info")
    }
    seq = report.get("seq_length")
    markers = {"seq_length": seq}
    if stats and stats.get("recommended_seq_length") and stats.get("recommended_seq_length") != seq:
        markers["recommended"] = stats.get("recommended_seq_length")
    inputs = report.get("inputs") or {}
    gpu_gib = inputs.get("gpu_memory_gib")
    local_batch = ((plan or {}).get("recommendation") or {}).get("local_batch_size")
    return {
        "title": f"dataprep preflight: {inputs.get('dataset', '')}",
        "verdict": verdict,
        "verdict_text": VERDICT_TEXT.get(verdict, verdict),
        "stopped_at": report.get("stopped_at"),
        "exit_code": report.get("exit_code"),
        "created": report.get("created"),
        "inputs": [(k.replace("_", " "), _cell(v)) for k, v in inputs.items() if v is not None],
        "steps": [
            {"name": s.get("name"), "status": s.get("status", "not_run"), "n": len(s.get("findings") or [])}
            for s in steps
            if isinstance(s, Mapping)
        ],
        "findings": findings,
        "counts": counts,
        "template": template_view(template),
        "histogram": histogram_view(stats.get("histogram"), markers) if stats else None,
        "token_summary": _token_summary(stats),
        "mask_source": stats.get("mask_source") if stats else None,
        "mask_source_meaning": stats.get("mask_source_meaning") if stats else None,
        "mask_generation_prompt": bool(stats.get("mask_generation_prompt")) if stats else False,
        "rows": stats.get("rows") if stats else None,
        "truncation": _table(stats.get("truncation")) if stats else None,
        "padding": padding_view(stats.get("padding"), local_batch) if stats else [],
        "packing": packing_view(stats.get("packing"), seq) if stats else [],
        "memory": memory_view(plan, gpu_gib if isinstance(gpu_gib, (int, float)) else None),
        "recommendation": _rec_list((plan or {}).get("recommendation")),
        "tradeoff": (plan or {}).get("tradeoff") or [],
        "time": (plan or {}).get("time"),
        "quality": _quality_rows(stats),
        "duplicates": _duplicates_view((by_name.get("validate") or {}).get("figures") or {}),
        "overrides_yaml": report.get("overrides_yaml"),
        "command_line": report.get("command_line"),
        "recipe": report.get("recipe"),
        "outputs": [(k.replace("_", " "), v) for k, v in (report.get("outputs") or {}).items()],
        "split": report.get("split"),
        "versions": [(k, v or "not installed") for k, v in (report.get("versions") or {}).items()],
    }


def _duplicates_view(validate: Mapping[str, Any]) -> dict[str, Any] | None:
    """Near-duplicate clusters, leakage of a given validation set, and eval contamination, when checked."""
    view = {k: validate.get(k) for k in ("near_duplicates", "leakage", "contamination") if validate.get(k)}
    return view or None


def _quality_rows(stats: dict | None) -> list[dict[str, Any]]:
    """The data-quality lint's checks that found something: code, rows, first rows, an example."""
    checks = ((stats or {}).get("quality") or {}).get("checks") or {}
    return [
        {
            "code": code,
            "count": c.get("count", 0),
            "rows": (c.get("rows") or [])[:10],
            "example": c.get("example"),
        }
        for code, c in checks.items()
        if c.get("count")
    ]


def _environment():
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("dataprep", "templates"),
        autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_report_html(report: Mapping[str, Any]) -> str:
    """The HTML page for a report.json document."""
    env = _environment()
    env.filters["num"] = _cell
    env.filters["gib"] = lambda v: f"{v:,.2f} GiB"
    return env.get_template(TEMPLATE).render(v=build_view(report))


def write_report_html(report: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Render and write the page atomically; returns the path."""
    html = render_report_html(report)
    with atomic_write(path) as fh:
        fh.write(html)
    return Path(path)
