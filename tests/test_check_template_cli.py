"""dataprep check-template: exit codes, JSON shape, human output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

MODELS = Path(__file__).resolve().parent.parent / "fixtures" / "models"
MODEL = MODELS / "chatml"


def test_clean_template_exits_0_with_json(cli):
    r = cli("check-template", MODELS / "chatml-gen", "--json")
    assert r.exit_code == 0, r
    doc = r.json()
    assert {"model", "template_source", "template_sha256", "special_tokens", "findings", "sample"} <= set(doc)
    assert doc["findings"] == []
    assert doc["template_source"] == "chat_template.jinja"
    assert doc["special_tokens"]["eos"]["token"] == "<|im_end|>"
    assert doc["sample"]["mask_source"] == "generation_tags"
    assert doc["sample"]["supervised_tokens"] > 0
    assert r.stderr == ""


def test_no_template_is_error_with_hint_exit_1(cli):
    r = cli("check-template", MODELS / "no-template")
    assert r.exit_code == 1
    assert "error[chat_template_missing]" in r.stderr
    assert "hint: use a tokenizer with chat-template support or pass --chat-template" in r.stderr


def test_no_template_json(cli):
    r = cli("check-template", MODELS / "no-template", "--json")
    assert r.exit_code == 1
    doc = r.json()
    assert [f["code"] for f in doc["findings"]] == ["chat_template_missing"]
    assert doc["sample"] is None and doc["template_source"] is None


def test_missing_model_exits_2(cli, tmp_path):
    r = cli("check-template", tmp_path / "absent", "--json")
    assert r.exit_code == 2
    (f,) = r.json()["findings"]
    assert f["code"] == "model_not_found" and str(tmp_path / "absent") in f["message"]


def test_warnings_exit_0_and_strict_exits_1(cli):
    assert cli("check-template", MODELS / "default-system", "--quiet").exit_code == 0
    r = cli("check-template", MODELS / "default-system", "--strict", "--json")
    assert r.exit_code == 1
    assert r.json()["findings"][0]["severity"] == "error"


def test_human_output_shows_sample_and_findings(cli):
    r = cli("check-template", MODELS / "mistral-like")
    assert r.exit_code == 1  # AutoModel cannot mask its multi-turn rows (the system text moves)
    assert "error[mask_unbuildable]" in r.stderr
    assert "warning[strict_alternation]" in r.stderr
    assert "sample (" in r.stderr and "[INST]" in r.stderr
    assert r.stdout == ""


def test_tokens_flag(cli):
    r = cli("check-template", MODELS / "chatml-gen", "--tokens")
    assert "tokens (id:piece" in r.stderr
    doc = cli("check-template", MODELS / "chatml-gen", "--tokens", "--json").json()
    assert len(doc["sample"]["token_ids"]) == doc["sample"]["total_tokens"] == len(doc["sample"]["mask"])


def test_quiet_prints_nothing(cli):
    r = cli("check-template", MODELS / "no-template", "--quiet")
    assert r.exit_code == 1 and r.stderr == "" and r.stdout == ""


def test_chat_template_option_inline(cli):
    template = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    r = cli("check-template", MODELS / "no-template", "--chat-template", template, "--json")
    doc = r.json()
    assert doc["template_source"] == "--chat-template (string)"
    assert "chat_template_missing" not in {f["code"] for f in doc["findings"]}


def test_dataset_option_reports_failing_rows(cli, tmp_path):
    good = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
    bad = {"messages": [{"role": "system", "content": "S"}, *good["messages"]]}
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(x) + "\n" for x in (good, bad, good)), encoding="utf-8")
    r = cli("check-template", MODELS / "no-system", "--dataset", data, "--samples", "5", "--json")
    assert r.exit_code == 1
    doc = r.json()
    rows = [f for f in doc["findings"] if f.get("rows")]
    assert rows[0]["code"] == "template_render_error" and rows[0]["rows"] == [2]
    assert doc["dataset"]["rows_rendered"] == 2


def test_hostile_template_file(cli, tmp_path):
    t = tmp_path / "loop.jinja"
    t.write_text("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}")
    r = cli("check-template", MODELS / "chatml", "--chat-template", t, "--json")
    assert r.exit_code == 1
    assert [f["code"] for f in r.json()["findings"]] == ["template_render_error"]


def test_command_module_does_not_import_transformers():
    code = "import sys, dataprep.cli.template_cmd; print('transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


_LLAMA31_LIKE = (
    "{% if date_string is not defined %}{% set date_string = '26 Jul 2024' %}{% endif %}"
    "<|im_start|>system\nToday Date: {{ date_string }}<|im_end|>\n"
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_date_variable_with_a_fixed_fallback_is_not_called_daily(cli):
    # Llama 3.1 writes a fixed "26 Jul 2024" unless the caller passes date_string: "renderings change by
    # day" was wrong for it (that is strftime_now's case).
    doc = cli("check-template", MODELS / "chatml", "--chat-template", _LLAMA31_LIKE, "--json").json()
    date = next(f for f in doc["findings"] if f["code"] == "date_injected")
    assert "'date_string'" in date["message"] and "change by day" not in date["message"]
    assert "change by day" not in date["hint"]
    doc = cli("check-template", MODELS / "date", "--json").json()
    date = next(f for f in doc["findings"] if f["code"] == "date_injected")
    assert "strftime_now()" in date["message"] and "change by day" in date["message"]


def test_unreadable_template_file_hint_names_no_missing_flag(cli, tmp_path):
    # The catalogue's default hint said "... and --encoding", which check-template has not.
    bad = tmp_path / "t.jinja"
    bad.write_bytes(b"\xfe\xff\x00garbage\xff")
    r = cli("check-template", MODELS / "chatml", "--chat-template", bad)
    assert r.exit_code == 2 and "error[unreadable_input]" in r.stderr and "--encoding" not in r.stderr


def test_check_template_non_utf8_chat_template_jinja_in_model_folder_is_unreadable_input(cli, tmp_path):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(MODEL, model)
    (model / "chat_template.jinja").write_bytes(b"\xff\xfe{{ messages }}")
    res = cli("check-template", model, "--json")
    assert res.exit_code == 2, res
    assert res.json()["findings"][0]["code"] == "unreadable_input"
