"""``dataprep stats``: JSON document, human report, per-row file, findings and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "fixtures" / "models"
DATA = ROOT / "fixtures" / "data"
GEN = str(MODELS / "chatml-gen")


def write_jsonl(path: Path, convs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(c) + "\n" for c in convs), encoding="utf-8")
    return path


def chat(user: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


@pytest.fixture
def chat_file(tmp_path) -> Path:
    return write_jsonl(
        tmp_path / "chat.jsonl", [chat(f"question {i}", "the answer is " + "yes " * i) for i in range(20)]
    )


def test_json_document(cli, chat_file):
    r = cli("stats", chat_file, "--model", GEN, "--json", "--seq-lengths", "16,32,64", "--batch-sizes", "1,4")
    assert r.exit_code == 0, r
    d = r.json()
    assert d["rows"] == 20 and d["mask_source"] == "generation_tags"
    assert d["template_source"] == "chat_template.jinja"
    assert [t["seq_length"] for t in d["truncation"]] == [16, 32, 64]
    assert [p["batch_size"] for p in d["padding"]] == [1, 4]
    assert [p["seq_length"] for p in d["packing"]] == [16, 32, 64]
    assert d["recommended_seq_length"] % 256 == 0
    assert d["findings"] == []
    assert d["tokens"]["total"]["count"] == 20 and d["tokens"]["total"]["max"] >= d["tokens"]["total"]["p99"]


def test_human_report(cli, chat_file):
    r = cli("stats", chat_file, "--model", GEN)
    assert r.exit_code == 0, r
    assert r.stdout == ""
    for text in (
        "20 rows measured",
        "generation_tags",
        "total tokens per row",
        "right truncation",
        "padding",
        "first-fit decreasing",
        "recommended seq_length: 256",
    ):
        assert text in r.stderr, text


def test_quiet_prints_nothing(cli, chat_file):
    r = cli("stats", chat_file, "--model", GEN, "--quiet")
    assert r.exit_code == 0 and r.stdout == "" and r.stderr == ""


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_per_row_file(cli, chat_file, tmp_path, suffix):
    out = tmp_path / f"rows{suffix}"
    r = cli("stats", chat_file, "--model", GEN, "--per-row", out, "--json")
    assert r.exit_code == 0, r
    if suffix == ".jsonl":
        rows = [json.loads(line) for line in out.read_text().splitlines()]
    else:
        import pyarrow.parquet as pq

        rows = pq.read_table(out).to_pylist()
    assert [x["row"] for x in rows] == list(range(1, 21))
    assert set(rows[0]) == {"row", "total", "supervised", "turns"}
    assert sum(x["total"] for x in rows) == r.json()["tokens"]["total"]["sum"]
    assert sum(x["supervised"] for x in rows) == r.json()["tokens"]["supervised"]["sum"]
    again = cli("stats", chat_file, "--model", GEN, "--per-row", out)
    assert again.exit_code == 2 and "output_exists" in again.stderr
    assert cli("stats", chat_file, "--model", GEN, "--per-row", out, "--force", "-q").exit_code == 0


def test_per_row_never_overwrites_the_input_and_needs_a_known_extension(cli, chat_file, tmp_path):
    r = cli("stats", chat_file, "--model", GEN, "--per-row", chat_file)
    assert r.exit_code == 2 and "output_would_overwrite_input" in r.stderr
    r = cli("stats", chat_file, "--model", GEN, "--per-row", tmp_path / "rows.csv")
    assert r.exit_code == 2 and "usage_error" in r.stderr


def test_other_inputs_are_converted_on_the_fly(cli):
    r = cli("stats", DATA / "alpaca.csv", "--model", str(MODELS / "chatml"), "--json")
    assert r.exit_code == 0, r
    d = r.json()
    assert d["rows"] >= 1 and d["mask_source"] == "prefix_with_header"
    assert d["rows_read"] == d["rows"] + sum(d["rows_skipped"].values())


def test_rows_with_nothing_supervised_are_an_error(cli, chat_file):
    # a template that renders the user turns only: nothing is ever trained
    template = (
        "{% for m in messages %}{% if m.role == 'user' %}<|im_start|>user\n{{ m.content }}<|im_end|>\n"
        "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    r = cli("stats", chat_file, "--model", str(MODELS / "chatml"), "--chat-template", template, "--json")
    assert r.exit_code == 1, r
    (f,) = [f for f in r.json()["findings"] if f["code"] == "no_supervised_tokens"]
    assert f["severity"] == "error" and f["rows"] == list(range(1, 21))


def test_long_rows_warn_and_strict_fails(cli, tmp_path):
    path = write_jsonl(tmp_path / "long.jsonl", [chat("hi", "word " * 6000), chat("hi", "short")])
    r = cli("stats", path, "--model", GEN, "--json")
    assert r.exit_code == 0, r
    codes = {f["code"]: f for f in r.json()["findings"]}
    assert codes["exceeds_model_max_length"]["rows"] == [1]
    assert codes["exceeds_model_max_length"]["severity"] == "warning"
    assert r.json()["recommended_seq_length"] == r.json()["model_max_length"]
    assert cli("stats", path, "--model", GEN, "--strict", "-q").exit_code == 1


def test_render_errors_are_reported_with_rows(cli, tmp_path):
    convs = [
        chat("a", "b"),
        {
            "messages": [
                {"role": "system", "content": "s"},
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": "b"},
            ]
        },
    ]
    path = write_jsonl(tmp_path / "sys.jsonl", convs)
    r = cli("stats", path, "--model", str(MODELS / "no-system"), "--json")
    assert r.exit_code == 1
    (f,) = [f for f in r.json()["findings"] if f["code"] == "template_render_error"]
    assert f["rows"] == [2]
    assert r.json()["rows"] == 1


def test_no_template_and_missing_model(cli, chat_file, tmp_path):
    r = cli("stats", chat_file, "--model", str(MODELS / "no-template"))
    assert r.exit_code == 1 and "error[chat_template_missing]" in r.stderr
    r = cli("stats", chat_file, "--model", str(tmp_path / "nowhere"))
    assert r.exit_code == 2 and "model_not_found" in r.stderr


@pytest.mark.parametrize(
    "args", [["--seq-lengths", "512,abc"], ["--batch-sizes", "0"], ["--sample", "0"], ["--workers", "0"]]
)
def test_bad_flags_exit_2(cli, chat_file, args):
    assert cli("stats", chat_file, "--model", GEN, *args).exit_code == 2


def test_sample(cli, chat_file):
    r = cli("stats", chat_file, "--model", GEN, "--sample", "5", "--json")
    assert r.exit_code == 0
    d = r.json()
    assert d["rows"] == 5 and d["rows_read"] == 20 and d["sampled"] is True


def test_help_states_the_rule_and_an_example(cli):
    r = cli("stats", "--help")
    assert r.exit_code == 0
    assert "multiple of 256" in r.stdout and "p99" in r.stdout and "Example" in r.stdout


@pytest.mark.real
def test_real_tokenizers_equal_apply_chat_template(real_dir):
    from test_measure import make_conversations, naive_prefix_diff, naive_total

    from dataprep.measure import measure_conversations
    from dataprep.tokenizer import load_tokenizer

    convs = make_conversations(40, seed=2, rich=False)
    for name in ("Phi-3-mini-4k-instruct", "Qwen2-Boundless"):
        loaded = load_tokenizer(str(real_dir / "tokenizers" / name))
        counts = measure_conversations(enumerate(convs, 1), loaded)
        assert counts.total.tolist() == [naive_total(loaded.tokenizer, c) for c in convs], name
        assert counts.supervised.tolist() == [naive_prefix_diff(loaded.tokenizer, c) for c in convs], name


EDGE = DATA / "trainer_edge.jsonl"


def test_nothing_is_silent_every_row_read_is_measured_or_under_a_finding(cli):
    r = cli("stats", EDGE, "--format", "openai_messages", "--model", MODELS / "think-strip", "--json")
    d = r.json()
    assert d["rows_read"] == 17 == d["rows"] + sum(d["rows_skipped"].values())
    listed = set()
    for f in d["findings"]:
        if f["code"] in d["rows_skipped"] or f["code"] == "mask_unbuildable":
            listed.update(f["rows"])
    assert len(listed) == sum(d["rows_skipped"].values()) + d["rows_mask_unbuildable"]
    codes = {f["code"]: f["severity"] for f in d["findings"]}
    # the trainer raises on these: errors; rows the converter rejects: warnings (normalize keeps them out)
    assert codes["mask_unbuildable"] == "error" and codes["role_order"] in ("error", "warning")
    assert codes["unknown_role"] == "warning"
    assert r.exit_code == 1


def test_mask_generation_prompt_drops_the_header_from_the_supervised_tokens(cli, chat_file):
    base = cli("stats", chat_file, "--model", MODELS / "chatml", "--json").json()
    mgp = cli("stats", chat_file, "--model", MODELS / "chatml", "--mask-generation-prompt", "--json").json()
    assert (base["mask_source"], mgp["mask_source"]) == ("prefix_with_header", "prefix_without_header")
    assert (
        mgp["mask_generation_prompt"]
        and mgp["tokens"]["supervised"]["sum"] < base["tokens"]["supervised"]["sum"]
    )
    assert mgp["tokens"]["total"] == base["tokens"]["total"]


def test_trainer_check_needs_nemo_automodel(cli, chat_file, monkeypatch):
    from dataprep import trainer_check

    monkeypatch.setattr(trainer_check, "installed_automodel", lambda: None)
    r = cli("stats", chat_file, "--model", MODELS / "chatml", "--trainer-check", "5")
    assert r.exit_code == 2 and "missing_dependency" in r.stderr and "nemo-automodel" in r.stderr
