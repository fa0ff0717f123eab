"""report.html: self-contained, escaped, and showing the verdict, findings, histogram, tables and memory."""

from __future__ import annotations

import re

import pytest

from dataprep.report_html import (
    histogram_bins,
    histogram_view,
    memory_view,
    render_report_html,
    write_report_html,
)


def report(**over) -> dict:
    """A hand-built report.json document with every section filled."""
    edges = list(range(0, 2100, 100))
    counts = [0, 3, 9, 20, 35, 50, 42, 30, 18, 10, 6, 4, 2, 1, 1, 0, 0, 1, 0, 1]
    doc = {
        "verdict": "pass_with_warnings",
        "stopped_at": None,
        "exit_code": 0,
        "created": "2026-11-28T18:00:00Z",
        "inputs": {
            "model": "models/tiny",
            "dataset": "data.csv",
            "method": "lora",
            "gpus": 8,
            "gpu_memory_gib": 80.0,
        },
        "seq_length": 2048,
        "steps": [
            {"name": "inspect", "status": "ok", "findings": [], "figures": {}},
            {"name": "normalize", "status": "warning", "findings": [{}], "figures": {}},
            {"name": "validate", "status": "ok", "findings": [], "figures": {}},
            {"name": "check-template", "status": "ok", "findings": [], "figures": {}},
            {
                "name": "stats",
                "status": "ok",
                "findings": [],
                "figures": {
                    "rows": sum(counts),
                    "mask_source": "generation_tags",
                    "histogram": {"edges": edges, "counts": counts},
                    "recommended_seq_length": 1792,
                    "tokens": {
                        "total": {"mean": 512.5, "min": 20, "p50": 480, "p90": 900, "p99": 1500, "max": 1990},
                        "supervised": {
                            "mean": 200.0,
                            "min": 3,
                            "p50": 180,
                            "p90": 400,
                            "p99": 800,
                            "max": 1200,
                        },
                    },
                    "truncation": [
                        {
                            "seq_length": s,
                            "rows_truncated": r,
                            "rows_losing_all_supervision": 0,
                            "tokens_lost_pct": p,
                        }
                        for s, r, p in ((512, 120, 20.5), (1024, 30, 4.25), (2048, 0, 0.0))
                    ],
                },
            },
            {
                "name": "plan",
                "status": "ok",
                "findings": [],
                "figures": {
                    "fits": True,
                    "memory": {
                        "per_gpu_gib": 41.5,
                        "breakdown": {
                            "weights": 15.0,
                            "optimizer": 2.5,
                            "activations": 18.0,
                            "logits": 3.0,
                            "cuda_context": 3.0,
                        },
                    },
                    "recommendation": {"seq_length": 2048, "local_batch_size": 4, "global_batch_size": 32},
                },
            },
        ],
        "findings": [
            {
                "code": "duplicate_row",
                "severity": "warning",
                "message": "3 rows <script>alert(1)</script>",
                "hint": "drop with --dedup",
                "rows": list(range(1, 40)),
                "step": "normalize",
            },
            {
                "code": "generation_tags_missing",
                "severity": "info",
                "message": "no tags",
                "hint": "add tags",
                "step": "check-template",
            },
        ],
        "outputs": {"train": "/out/train.jsonl"},
        "split": {"train": {"rows": 220}, "validation": {"rows": 5}},
        "overrides_yaml": "dataset:\n  path_or_dataset_id: /out/train.jsonl\n",
        "command_line": "automodel RECIPE.yaml --dataset.seq_length 2048",
        "versions": {"dataprep": "0.1.0", "transformers": "5.0.0", "tokenizers": None},
    }
    doc.update(over)
    return doc


def test_page_is_self_contained_and_escaped():
    html = render_report_html(report())
    assert "<script" not in html.lower()  # the injected message is escaped, and the page has no scripts
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)  # nothing fetched from elsewhere
    assert "@import" not in html and "url(" not in html


def test_sections_are_present():
    html = render_report_html(report())
    for ident in (
        "verdict",
        "findings",
        "histogram",
        "truncation",
        "memory",
        "memory-bars",
        "overrides",
        "command-line",
    ):
        assert f'id="{ident}"' in html, ident
    assert "Ready to train, with warnings" in html
    assert html.count('class="bar"') == 20  # one rect per histogram bin
    assert html.count('class="finding ') == 2
    assert "drop with --dedup" in html  # the hint is shown
    assert "(+19 more)" in html  # long row lists are cut
    assert html.count('class="seg"') == 5
    assert "tokenizers not installed" in html


def test_template_sample_marks_the_trained_text():
    doc = report()
    doc["steps"][3]["figures"] = {
        "template_source": "chat_template.jinja",
        "has_generation_tags": True,
        "sample": {
            "text": "<|user|>hi<|end|><|assistant|>hello<|end|>",
            "spans": [{"start": 30, "end": 42}],
            "mask_source": "generation_tags",
            "total_tokens": 9,
            "supervised_tokens": 2,
        },
    }
    html = render_report_html(doc)
    sample = re.search(r'<pre class="sample" id="template-sample">(.*?)</pre>', html, re.S).group(1)
    assert sample == "&lt;|user|&gt;hi&lt;|end|&gt;&lt;|assistant|&gt;<mark>hello&lt;|end|&gt;</mark>"
    assert "2 of 9 tokens" in html


def test_failed_run_without_stats_or_plan_renders():
    steps = [{"name": "inspect", "status": "error", "findings": [{}], "figures": {}}] + [
        {"name": n, "status": "not_run", "findings": [], "figures": {}}
        for n in ("normalize", "stats", "plan")
    ]
    doc = report(
        verdict="fail",
        stopped_at="inspect",
        exit_code=1,
        steps=steps,
        overrides_yaml=None,
        command_line=None,
        findings=[
            {
                "code": "packed_parquet_used_with_automodel",
                "severity": "error",
                "message": "packed",
                "hint": "h",
            }
        ],
    )
    html = render_report_html(doc)
    assert "Stopped at step <b>inspect</b>" in html
    assert "Not ready" in html
    assert 'id="histogram"' not in html and "the stats step did not run" in html
    assert "the plan step did not run" in html


def test_write_is_atomic_and_complete(tmp_path):
    path = write_report_html(report(), tmp_path / "report.html")
    assert path.read_text().rstrip().endswith("</html>")
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


@pytest.mark.parametrize(
    "hist",
    [
        {"edges": [0, 10, 20], "counts": [3, 4]},
        [{"lo": 0, "hi": 10, "count": 3}, {"lo": 10, "hi": 20, "count": 4}],
        {"total": {"edges": [0, 10, 20], "counts": [3, 4]}},
        {"bins": [{"start": 0, "end": 10, "count": 3}, {"start": 10, "end": 20, "count": 4}]},
    ],
)
def test_histogram_shapes(hist):
    assert [(b.lo, b.hi, b.count) for b in histogram_bins(hist)] == [(0, 10, 3), (10, 20, 4)]


def test_histogram_geometry():
    view = histogram_view({"edges": [0, 10, 20, 30], "counts": [1, 4, 2]}, {"seq_length": 40, "far": 1000})
    heights = [b["h"] for b in view["bars"]]
    assert heights[1] == max(heights) and heights[0] == pytest.approx(heights[1] / 4)
    xs = [b["x"] for b in view["bars"]]
    assert xs == sorted(xs)
    # a marker just past the data widens the axis; one far away is left out
    assert [m["label"] for m in view["markers"]] == ["seq_length 40"]
    assert histogram_view(None) is None and histogram_view({"edges": [], "counts": []}) is None


def test_memory_view_scales_to_capacity():
    plan = {
        "fits": False,
        "memory": {"per_gpu_gib": 100.0, "breakdown": {"weights": 60.0, "activations": 40.0}},
    }
    view = memory_view(plan, 80.0)
    assert view["capacity_x"] == pytest.approx(0.8 * view["width"])
    assert sum(s["w"] for s in view["segments"]) == pytest.approx(view["width"])
    assert memory_view({"memory": {}}) is None


def with_padding_and_packing(**stats_over) -> dict:
    doc = report()
    stats = doc["steps"][4]["figures"]
    stats["padding"] = [
        {"batch_size": b, "random_efficiency": r, "grouped_efficiency": g, "expected_max_len_random": m}
        for b, r, g, m in ((1, 1.0, 1.0, 512.5), (4, 0.6049, 0.9858, 1393.46), (16, 0.4124, 0.9154, 1877.15))
    ]
    stats["packing"] = [
        {"seq_length": s, "packs": p, "efficiency": e, "rows_truncated": t}
        for s, p, e, t in ((512, 181, 0.9885, 22), (2048, 47, 0.9841, 0))
    ]
    stats.update(stats_over)
    return doc


def table_rows(html: str, ident: str) -> list[list[str]]:
    table = re.search(rf'<table id="{ident}">(.*?)</table>', html, re.S).group(1)
    body = re.search(r"<tbody>(.*?)</tbody>", table, re.S).group(1)
    return [re.findall(r"<td>(.*?)</td>", tr) for tr in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)]


def test_padding_and_packing_tables_show_the_stats():
    html = render_report_html(with_padding_and_packing())
    assert 'id="padding"' in html and 'id="packing"' in html
    # batch size, random and length-grouped efficiency, expected longest row of a random batch (whole tokens)
    assert table_rows(html, "padding-table") == [
        ["1", "100.0%", "100.0%", "512"],
        ["4", "60.5%", "98.6%", "1,393"],
        ["16", "41.2%", "91.5%", "1,877"],
    ]
    # seq length, first-fit-decreasing efficiency, packs, rows truncated
    assert table_rows(html, "packing-table") == [["512", "98.9%", "181", "22"], ["2,048", "98.4%", "47", "0"]]
    # the plan's local batch size (4) and the run's seq_length (2048) are the highlighted rows
    assert re.findall(r'<tr class="chosen"[^>]*><td>([^<]*)</td>', html) == ["4", "2,048"]
    assert "group by length or pack" in html and "pack when it beats the padding" in html


def test_padding_and_packing_values_are_escaped():
    doc = with_padding_and_packing(
        packing=[{"seq_length": "<i>x</i>", "packs": 3, "efficiency": "<b>y</b>", "rows_truncated": 0}]
    )
    html = render_report_html(doc)
    assert "&lt;i&gt;x&lt;/i&gt;" in html and "&lt;b&gt;y&lt;/b&gt;" in html
    assert "<i>x</i>" not in html and "<b>y</b>" not in html


def test_padding_and_packing_absent_without_stats():
    doc = report()
    doc["steps"] = doc["steps"][:4]
    html = render_report_html(doc)
    assert 'id="padding-table"' not in html and 'id="packing-table"' not in html
    assert "No padding table" in html and "No packing table" in html
