"""The data-quality lint in stats and preflight: findings with rows, the figures in JSON and report.html."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "fixtures" / "models" / "chatml"
ROWS = [
    [{"role": "user", "content": "Who made you?"}, {"role": "assistant", "content": "I was created by {{author}}."}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "CafÃ© is open today, see you there."}],
    [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4 is the answer to that question."}],
    [{"role": "user", "content": "Thanks"}, {"role": "assistant", "content": "Welcome."}, {"role": "user", "content": "bye"}],
]  # fmt: skip


def _data(tmp_path: Path) -> Path:
    p = tmp_path / "q.jsonl"
    p.write_text("".join(json.dumps({"messages": m}) + "\n" for m in ROWS), encoding="utf-8")
    return p


def test_stats_reports_quality_with_rows(cli, tmp_path):
    d = cli("stats", _data(tmp_path), "--model", MODEL, "--json").json()
    got = {f["code"]: f["rows"] for f in d["findings"] if f["code"] in d["quality"]["counts"]}
    assert got == {"unfilled_placeholder": [1], "mojibake": [2], "ends_with_user_turn": [4]}
    assert d["quality"]["rows"] == 4


def test_preflight_shows_quality_in_the_report(cli, tmp_path):
    out = tmp_path / "prep"
    r = cli("preflight", "--model", MODEL, "--dataset", _data(tmp_path), "--out", out, "--val-fraction", "0.3",
            "--json")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    codes = {f["code"]: f for f in r.json()["findings"]}
    assert codes["unfilled_placeholder"]["rows"] == [1] and codes["unfilled_placeholder"]["step"] == "stats"
    html = (out / "report.html").read_text(encoding="utf-8")
    assert 'id="quality"' in html and "unfilled_placeholder" in html


def test_merged_block_lints_equal_one_lint():
    """The Ray engine lints blocks apart and merges them in order: the result is the lint of the whole."""
    from dataprep.quality import QualityLint

    canned = "Thank you for your question, I will get back to you soon."
    convs = []
    for i in range(200):
        answer = (
            canned
            if i % 9 == 0
            else f"Reply {i} " + ("â€™ " if i % 13 == 0 else "") + ("[Your Name]" if i % 31 == 0 else "")
        )
        msgs = [{"role": "user", "content": f"prompt {i % 50}"}, {"role": "assistant", "content": answer}]
        if i % 17 == 0:
            msgs.append({"role": "user", "content": "more?"})
        convs.append({"messages": msgs})
    whole = QualityLint(repeated_min=5)
    for i, c in enumerate(convs, start=1):
        whole.add(i, c)
    merged = QualityLint(repeated_min=5)
    for start in range(0, 200, 7):
        part = QualityLint(repeated_min=5, mergeable=True)
        for i, c in enumerate(convs[start : start + 7], start=start + 1):
            part.add(i, c)
        merged.merge(part)
    assert merged.to_dict() == whole.to_dict()
    assert [f.to_dict() for f in merged.findings()] == [f.to_dict() for f in whole.findings()]
    assert whole.to_dict()["counts"]["repeated_answer"] > 0
