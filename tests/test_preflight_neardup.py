"""preflight's duplicate pass: near-duplicate clusters on one side of the split, --dedup exact|near to rejects,
--validation checked for leakage, --eval contamination (fixtures/make_neardup.py: truth.json says which rows are
near or exact copies and which is contaminated)."""

from __future__ import annotations

import json
from pathlib import Path

from dataprep.pipeline import conversations

ROOT = Path(__file__).resolve().parent.parent
ND = ROOT / "fixtures" / "data" / "neardup"
MODEL = ROOT / "fixtures" / "models" / "chatml"
TRUTH = json.loads((ND / "truth.json").read_text())


def _run(cli, tmp_path, *extra):
    out = tmp_path / "prep"
    r = cli("preflight", "--model", MODEL, "--dataset", ND / "train.jsonl", "--out", out, "--json", *extra)
    assert r.exit_code == 0, r.stderr
    return r.json(), out


def _side_of_rows(out: Path) -> dict[str, str]:
    side = {}
    for name in ("train", "validation"):
        for line in (out / f"{name}.jsonl").read_text().splitlines():
            side[json.dumps(json.loads(line), sort_keys=True)] = name
    return side


def test_near_duplicate_clusters_stay_on_one_side(cli, tmp_path):
    d, out = _run(cli, tmp_path, "--val-fraction", "0.5")
    side = _side_of_rows(out)
    convs = {row: json.dumps(c, sort_keys=True) for row, c in conversations(ND / "train.jsonl")}
    pairs = [(int(m), f) for m, f in TRUTH["near"].items()]
    assert pairs
    for member, first in pairs:
        assert side[convs[member]] == side[convs[first]], (member, first)
    f = next(f for f in d["findings"] if f["code"] == "near_duplicate")
    assert f["severity"] == "info" and set(f["rows"]) >= {m for m, _ in pairs}
    v = next(s for s in d["steps"] if s["name"] == "validate")["figures"]["near_duplicates"]
    assert v["clusters"] >= 1 and v["largest"]["rows"] >= 2


def test_dedup_near_sends_copies_to_rejects_naming_the_row(cli, tmp_path):
    d, out = _run(cli, tmp_path, "--dedup", "near")
    rejects = {x["row"]: x for x in map(json.loads, (out / "rejects.jsonl").read_text().splitlines())}
    for member, first in TRUTH["near"].items():
        assert (
            rejects[int(member)]["code"] == "near_duplicate"
            and f"row {first}" in rejects[int(member)]["message"]
        )
    for member, first in TRUTH["exact"].items():
        assert (
            rejects[int(member)]["code"] == "duplicate_row"
            and f"row {first}" in rejects[int(member)]["message"]
        )
    kept = d["split"]["train"]["rows"] + d["split"]["validation"]["rows"]
    assert kept + len(rejects) == 40


def test_eval_contamination_fires_on_its_row_and_drops_it_when_asked(cli, tmp_path):
    d, _ = _run(cli, tmp_path, "--eval", ND / "evals")
    f = next(f for f in d["findings"] if f["code"] == "eval_contamination")
    (row, (name, _eval_row)) = next(iter(TRUTH["contaminated"].items()))
    assert f["rows"] == [int(row)] and f["eval_set"] == name
    d, out = _run(cli, tmp_path / "b", "--eval", ND / "evals", "--drop-contaminated")
    rejects = [json.loads(x) for x in (out / "rejects.jsonl").read_text().splitlines()]
    assert [(x["row"], x["code"]) for x in rejects] == [(int(row), "eval_contamination")]
    clean = [e for e in (ND / "evals").iterdir() if e.name != name]
    d, _ = _run(cli, tmp_path / "c", *[a for e in clean for a in ("--eval", e)])
    assert "eval_contamination" not in {f["code"] for f in d["findings"]}


def test_own_validation_set_is_checked_for_leakage(cli, tmp_path):
    rows = [json.loads(x) for x in (ND / "train.jsonl").read_text().splitlines()]
    leaky = [dict(rows[0], output=rows[0]["output"].replace("process", "procedure", 1)), rows[1]]
    clean = [{"instruction": "Name three primary colours.", "input": "", "output": "Red, yellow and blue."}]
    val = tmp_path / "val.jsonl"
    val.write_text("".join(json.dumps(x) + "\n" for x in leaky + clean))
    d, out = _run(cli, tmp_path, "--validation", val)
    f = next(f for f in d["findings"] if f["code"] == "near_duplicate_leakage")
    assert f["rows"] == [1, 2] and f["count"] == 2
    assert (
        d["split"]["validation"]["rows"] == 3
        and len((out / "validation.jsonl").read_text().splitlines()) == 3
    )
    assert d["split"]["train"]["rows"] + d["split"]["validation"]["rows"] == 43
    good = tmp_path / "good.jsonl"
    good.write_text("".join(json.dumps(x) + "\n" for x in clean))
    d, _ = _run(cli, tmp_path / "g", "--validation", good)
    assert "near_duplicate_leakage" not in {f["code"] for f in d["findings"]}


def test_stats_eval_reports_contamination(cli):
    d = cli("stats", ND / "train.jsonl", "--model", MODEL, "--eval", ND / "evals", "--json").json()
    f = next(f for f in d["findings"] if f["code"] == "eval_contamination")
    assert f["rows"] == [int(next(iter(TRUTH["contaminated"])))]


def test_report_shows_clusters_and_contamination(cli, tmp_path):
    _, out = _run(cli, tmp_path, "--eval", ND / "evals")
    html = (out / "report.html").read_text()
    assert 'id="duplicates"' in html and "largest cluster" in html and "contaminated by" in html
