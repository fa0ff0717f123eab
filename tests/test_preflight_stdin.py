"""preflight --dataset -: messages and report.json say <stdin>, never the reader's temporary spool file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "fixtures" / "models" / "chatml-gen"


@pytest.fixture
def model() -> Path:
    if not (MODEL / "tokenizer.json").is_file():
        pytest.fail(f"{MODEL} is missing: run `make fixtures`")
    return MODEL


def preflight_stdin(cli, model, out, data: str):
    return cli(
        "preflight", "--model", model, "--dataset", "-", "--out", out,
        "--gpus", "1", "--gpu-memory", "24GiB", input=data,
    )  # fmt: skip


def no_spool(*texts: str) -> None:
    for text in texts:
        assert "dataprep-stdin-" not in text


def test_csv_on_stdin_is_named_stdin(cli, tmp_path, model):
    out = tmp_path / "out"
    data = "instruction,input,output\n" + "".join(f"Q {i},,A {i}\n" for i in range(10))
    r = preflight_stdin(cli, model, out, data)
    assert r.exit_code == 2, r
    assert "error[unreadable_input]: <stdin>:1: " in r.stderr
    raw = (out / "report.json").read_text(encoding="utf-8")
    no_spool(r.stdout, r.stderr, raw, (out / "report.html").read_text(encoding="utf-8"))
    report = json.loads(raw)
    assert report["inputs"]["dataset"] == "<stdin>"
    assert report["steps"][1]["figures"]["path"] == "<stdin>"  # inspect (after the skipped recipe step)
    assert report["findings"][0]["message"].startswith("<stdin>:1: ")


def test_jsonl_on_stdin_keeps_row_numbers(cli, tmp_path, model):
    out = tmp_path / "out"
    lines = [
        json.dumps({"instruction": f"What is {i} plus {i}?", "input": "", "output": f"{2 * i}"})
        for i in range(12)
    ]
    lines.insert(4, "{not json")  # input row 5
    r = preflight_stdin(cli, model, out, "\n".join(lines) + "\n")
    assert r.exit_code == 0, r
    raw = (out / "report.json").read_text(encoding="utf-8")
    no_spool(r.stdout, r.stderr, raw, (out / "rejects.jsonl").read_text(encoding="utf-8"))
    report = json.loads(raw)
    assert report["inputs"]["dataset"] == "<stdin>"
    bad = next(f for f in report["findings"] if f["code"] == "invalid_json")
    assert bad["rows"] == [5]
    assert report["split"]["train"]["rows"] + report["split"]["validation"]["rows"] == 12


def test_empty_stdin_is_named_stdin(cli, tmp_path, model):
    r = preflight_stdin(cli, model, tmp_path / "out", "")
    assert r.exit_code == 2, r
    assert "error[unreadable_input]: <stdin>: empty input on stdin" in r.stderr
    no_spool(r.stderr)
