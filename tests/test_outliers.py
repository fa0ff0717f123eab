"""A recommendation that survives outliers, rows set aside explicitly (too_long), and template findings weighed
by the data they are run with."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dataprep.findings import Severity, finding
from dataprep.measure import TokenCounts
from dataprep.stats import recommend_seq_length, stats_from_counts, too_long
from dataprep.template_lint import DataTraits, in_context

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
OUTLIER = FIXTURES / "data" / "toolcall_outlier.jsonl"
DEMO_MODEL = FIXTURES / "demo" / "llama-3.2-1b-chatml"


def _outlier_counts() -> TokenCounts:
    """300 rows of ~1.5k tokens answered at the end, one of 11.5k whose first answer starts past 4096."""
    rng = np.random.default_rng(0)
    total = rng.integers(600, 1577, size=300).tolist()
    runs = [(i, t - 100, t) for i, t in enumerate(total)]
    total[137] = 11561
    runs[137] = (137, 4200, 4300)
    runs.append((137, 11400, 11561))
    sup = [100] * 300
    sup[137] = 261
    return TokenCounts.from_lists(total, sup, runs=runs)


def test_one_outlier_does_not_set_the_recommendation():
    counts = _outlier_counts()
    rec = recommend_seq_length(counts)
    assert rec == 1792  # p99 of 1576 tokens rounded up to 256, not the outlier's first answer at 4200
    assert too_long(counts, rec).tolist() == [137]  # the one row it leaves with nothing to train on
    assert too_long(counts, 8192).size == 0 and too_long(counts, 8192, max_tokens=10000).tolist() == [137]


def test_recommendation_still_reaches_the_answers_of_most_rows():
    """When many rows answer late, the p99 of the first supervised token wins over the p99 of length."""
    total = [2000] * 100
    runs = [(i, 1900 if i < 90 else 300, 2000) for i in range(100)]
    counts = TokenCounts.from_lists(total, [100] * 100, runs=runs)
    assert recommend_seq_length(counts) == 2048


def test_stats_max_tokens_sets_rows_aside_and_reconciles():
    counts = _outlier_counts()
    st = stats_from_counts(counts, max_tokens=4096)
    assert st.rows == 299 and st.rows_skipped == {"too_long": 1}
    assert st.rows_read == 300 == st.rows + sum(st.rows_skipped.values())
    f = next(f for f in st.findings if f.code == "too_long")
    assert f.rows == (138,) and f.data["count"] == 1  # row numbers are 1-based input rows
    assert st.tokens_total["max"] < 4096


def test_subset_keeps_each_rows_runs():
    counts = _outlier_counts()
    keep = np.ones(len(counts), dtype=bool)
    keep[[0, 137]] = False
    sub = counts.subset(keep)
    assert len(sub) == 298
    assert sub.supervised_kept(100000).tolist() == counts.supervised_kept(100000)[keep].tolist()
    assert sub.first_supervised().tolist() == counts.first_supervised()[keep].tolist()


def test_preflight_sets_the_outlier_aside_and_passes(cli, tmp_path):
    out = tmp_path / "prep"
    r = cli(
        "preflight",
        "--model",
        DEMO_MODEL,
        "--dataset",
        OUTLIER,
        "--gpu-memory",
        "24GiB",
        "--out",
        out,
        "--json",
    )
    assert r.exit_code == 0, r.stderr
    d = r.json()
    assert d["verdict"] == "pass_with_warnings"
    f = next(f for f in d["findings"] if f["code"] == "too_long")
    assert f["rows"] == [137] and f["step"] == "stats"
    stats = next(s for s in d["steps"] if s["name"] == "stats")["figures"]
    assert stats["recommended_seq_length"] == d["seq_length"] <= 1024
    assert stats["rows"] == 299 and stats["rows_skipped"]["too_long"] == 1
    rejects = [json.loads(ln) for ln in (out / "rejects.jsonl").read_text().splitlines()]
    assert [(x["row"], x["code"]) for x in rejects] == [(137, "too_long")]
    assert rejects[0]["record"]["messages"][1]["role"] == "user"
    train = (out / "train.jsonl").read_text().splitlines()
    val = (out / "validation.jsonl").read_text().splitlines()
    assert len(train) + len(val) == 299 == d["split"]["train"]["rows"] + d["split"]["validation"]["rows"]
    assert not any(len(ln) > 20000 for ln in train + val)
    import hashlib

    assert hashlib.sha256((out / "train.jsonl").read_bytes()).hexdigest() == d["split"]["train"]["sha256"]
    assert json.loads((out / "manifest.json").read_text())["data"]["train"]["rows"] == len(train)
    plan = next(s for s in d["steps"] if s["name"] == "plan")["figures"]
    table = {row["seq_length"]: row for row in plan["tradeoff"]}
    chosen = table[d["seq_length"]]
    assert chosen["chosen"] and chosen["rows_set_aside"] == 1 and chosen["fits"]
    assert table[512]["supervised_tokens_lost_pct"] > chosen["supervised_tokens_lost_pct"]
    assert 'id="tradeoff"' in (out / "report.html").read_text()


def test_preflight_max_tokens(cli, tmp_path):
    out = tmp_path / "prep"
    r = cli("preflight", "--model", DEMO_MODEL, "--dataset", OUTLIER, "--gpu-memory", "80GiB", "--seq-length",
            "16384", "--max-tokens", "8192", "--out", out, "--json")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    f = next(f for f in r.json()["findings"] if f["code"] == "too_long")
    assert f["rows"] == [137] and "--max-tokens 8192" in f["message"]


def test_stats_cli_max_tokens(cli):
    r = cli("stats", OUTLIER, "--model", FIXTURES / "models" / "chatml", "--max-tokens", "2048", "--json")
    d = r.json()
    assert d["rows"] == 299 and d["rows_skipped"] == {"too_long": 1}
    assert next(f for f in d["findings"] if f["code"] == "too_long")["rows"] == [137]


# -- findings in context ------------------------------------------------------------------------------------------


def _traits(rows: list[dict]) -> DataTraits:
    t = DataTraits()
    for conv in rows:
        t.add(conv)
    return t


PLAIN = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
THINKING = {"messages": [{"role": "user", "content": "q"},
                         {"role": "assistant", "content": "a", "reasoning_content": "because"}]}  # fmt: skip


def test_reasoning_dropped_weighs_the_data():
    f = finding("reasoning_dropped", "assistant reasoning_content does not appear in the rendering")
    none = in_context([f], _traits([PLAIN] * 5))[0]
    some = in_context([f], _traits([PLAIN] * 4 + [THINKING]))[0]
    assert none.severity is Severity.INFO and "0 of the 5 rows" in none.message
    assert some.severity is Severity.ERROR and "1 of the 5 rows" in some.message
    assert in_context([f], DataTraits())[0] == f  # no data: the template's own severity


def test_system_findings_are_info_without_system_messages():
    f = finding("system_message_dropped", "the system prompt is missing from the rendering")
    assert in_context([f], _traits([PLAIN]))[0].severity is Severity.INFO
    with_system = {"messages": [{"role": "system", "content": "s"}, *PLAIN["messages"]]}
    assert in_context([f], _traits([with_system]))[0].severity is Severity.WARNING


def test_check_template_with_data_weighs_reasoning(cli, tmp_path):
    plain = tmp_path / "plain.jsonl"
    plain.write_text("\n".join(json.dumps(PLAIN) for _ in range(3)) + "\n")
    thinking = tmp_path / "thinking.jsonl"
    thinking.write_text("\n".join(json.dumps(c) for c in (PLAIN, THINKING)) + "\n")
    model = FIXTURES / "models" / "no-reasoning"
    a = cli("check-template", model, "--dataset", plain, "--json").json()
    b = cli("check-template", model, "--dataset", thinking, "--json").json()
    sev = {
        d: next(f["severity"] for f in x["findings"] if f["code"] == "reasoning_dropped")
        for d, x in (("a", a), ("b", b))
    }
    assert sev == {"a": "info", "b": "error"}


def test_normalize_max_tokens_moves_long_rows_to_rejects(cli, tmp_path):
    full, cut = tmp_path / "full.jsonl", tmp_path / "cut.jsonl"
    assert cli("normalize", OUTLIER, full).exit_code == 0
    r = cli(
        "normalize", OUTLIER, cut, "--max-tokens", "4096", "--model", FIXTURES / "models" / "chatml", "--json"
    )
    assert r.exit_code == 0, r.stderr
    lines = full.read_text().splitlines()
    assert cut.read_text().splitlines() == lines[:136] + lines[137:]  # the same bytes, row 137 gone
    rejects = [json.loads(ln) for ln in (tmp_path / "cut.rejects.jsonl").read_text().splitlines()]
    assert [(x["row"], x["code"]) for x in rejects] == [(137, "too_long")]
    d = r.json()
    assert d["counts"]["read"] == 300 and d["counts"]["written"] == 299 and d["counts"]["rejected"] == 1


def test_normalize_max_tokens_needs_a_model_and_the_local_engine(cli, tmp_path):
    r = cli("normalize", OUTLIER, tmp_path / "o.jsonl", "--max-tokens", "100")
    assert r.exit_code == 2 and "--model" in r.stderr
    r = cli("normalize", OUTLIER, tmp_path / "o2.jsonl", "--max-tokens", "100", "--model",
            FIXTURES / "models" / "chatml", "--engine", "ray")  # fmt: skip
    assert r.exit_code == 2 and "--engine ray" in r.stderr
