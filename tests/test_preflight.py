"""preflight end to end on fixtures: CSV to overrides, and each way a run must stop."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import yaml

from dataprep.overrides import CHAT_DATASET_KEYS, CHAT_DATASET_TARGET
from dataprep.split import conversation_hash

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "fixtures" / "models"
CONFIGS = ROOT / "fixtures" / "configs"


def need_model(name: str) -> Path:
    path = MODELS / name
    if not (path / "tokenizer.json").is_file():
        pytest.fail(f"{path} is missing: run `make fixtures`")
    return path


def write_csv(path: Path, n: int = 24, bad: int = 1) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["instruction", "input", "output"])
        for i in range(n):
            w.writerow([f"Question number {i}: what is {i} plus {i}?", "", f"The answer is {2 * i}."])
        w.writerow(
            ["Question number 0: what is 0 plus 0?", "", "The answer is 0."]
        )  # exact duplicate of row 1
        for _ in range(bad):
            w.writerow(["", "", ""])  # rejected: empty
    return path


def preflight(cli, model, dataset, out, *extra):
    return cli(
        "preflight", "--model", model, "--dataset", dataset, "--out", out,
        "--gpus", "1", "--gpu-memory", "24GiB", *extra,
    )  # fmt: skip


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def test_csv_to_overrides(cli, tmp_path):
    model = need_model("chatml-gen")
    data = write_csv(tmp_path / "records.csv")
    out = tmp_path / "out"
    r = preflight(cli, model, data, out, "--method", "lora", "--val-fraction", "0.2")
    assert r.exit_code == 0, r
    assert "preflight: PASS" in r.stderr
    for name in ("train.jsonl", "validation.jsonl", "rejects.jsonl", "report.json", "report.html",
                 "overrides.yaml", "manifest.json"):  # fmt: skip
        assert (out / name).is_file(), name
    over = yaml.safe_load((out / "overrides.yaml").read_text())
    assert over["model"]["pretrained_model_name_or_path"] == str(model.resolve())
    for section, fname in (("dataset", "train.jsonl"), ("validation_dataset", "validation.jsonl")):
        sec = over[section]
        assert sec["_target_"] == CHAT_DATASET_TARGET
        assert set(sec) <= CHAT_DATASET_KEYS
        assert Path(sec["path_or_dataset_id"]).is_absolute()
        assert Path(sec["path_or_dataset_id"]) == (out / fname).resolve()
        assert isinstance(sec["seq_length"], int) and sec["truncation"] is True
    assert over["peft"]["_target_"] == "nemo_automodel.components._peft.lora.PeftConfig"
    assert {"local_batch_size", "global_batch_size"} <= set(over["step_scheduler"])
    assert "activation_checkpointing" in over["distributed"]
    assert over["loss_fn"]["_target_"] == "nemo_automodel.components.loss.masked_ce.MaskedCrossEntropy"

    report = json.loads((out / "report.json").read_text())
    assert report["stopped_at"] is None and report["exit_code"] == 0
    assert [s["name"] for s in report["steps"]] == [
        "recipe", "inspect", "normalize", "validate", "check-template", "stats", "plan",
    ]  # fmt: skip
    assert report["steps"][0]["status"] == "skipped" and report["recipe"] is None
    assert all(s["status"] in ("ok", "warning") for s in report["steps"][1:])
    assert {"dataprep", "transformers", "tokenizers"} <= set(report["versions"])
    assert report["command_line"].startswith("automodel ")
    # Nothing lost: every input row is in train, validation or rejects.
    train, val, rejects = (read_jsonl(out / n) for n in ("train.jsonl", "validation.jsonl", "rejects.jsonl"))
    assert len(train) + len(val) + len(rejects) == 26
    assert [(x["row"], x["code"]) for x in rejects] == [(26, "empty_content")]
    assert val, "a validation row is always kept"
    assert not {conversation_hash(c) for c in train} & {conversation_hash(c) for c in val}
    # The manifest pins the data files and the tokenizer.
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["data"]["train"]["rows"] == len(train)
    assert manifest["data"]["validation"]["rows"] == len(val)
    assert "tokenizer.json" in manifest["tokenizer_files"]
    assert manifest["chat_template"]["sha256"]
    assert cli("verify-manifest", out / "manifest.json", "--model", model).exit_code == 0


def test_same_input_same_split(cli, tmp_path):
    model = need_model("chatml-gen")
    data = write_csv(tmp_path / "records.csv")
    for d in ("a", "b"):
        assert preflight(cli, model, data, tmp_path / d, "--val-fraction", "0.3").exit_code == 0
    for name in ("train.jsonl", "validation.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_json_prints_the_report_and_one_verdict_line(cli, tmp_path):
    model = need_model("chatml-gen")
    r = preflight(cli, model, write_csv(tmp_path / "r.csv"), tmp_path / "out", "--json")
    assert r.exit_code == 0, r
    doc = r.json()
    on_disk = json.loads((tmp_path / "out" / "report.json").read_text())
    assert doc["verdict"] == on_disk["verdict"] == "pass_with_warnings"
    assert doc["steps"] == on_disk["steps"]
    assert [f["code"] for f in doc["findings"]] == [f["code"] for f in on_disk["findings"]]
    verdict_lines = [ln for ln in r.stderr.splitlines() if ln.startswith("preflight:")]
    assert len(verdict_lines) == 1


def test_packed_input_stops_at_inspect(cli, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    packed = tmp_path / "training_4096.idx.parquet"
    pq.write_table(
        pa.table({
            "input_ids": [[1, 2, 3, 4], [5, 6, 7, 8]],
            "seq_start_id": [[0, 2], [0]],
            "loss_mask": [[0, 1, 0, 1], [0, 1, 1, 1]],
        }),
        packed,
    )  # fmt: skip
    out = tmp_path / "out"
    (out).mkdir()
    (out / "overrides.yaml").write_text("stale: true\n")  # from an earlier run
    r = preflight(cli, MODELS / "chatml-gen", packed, out, "--json")
    assert r.exit_code == 1, r
    doc = r.json()
    assert doc["stopped_at"] == "inspect"
    assert doc["verdict"] == "fail"
    codes = [f["code"] for f in doc["findings"]]
    assert "packed_parquet_used_with_automodel" in codes
    assert all(f["step"] == "inspect" for f in doc["findings"])
    assert [s["status"] for s in doc["steps"]] == ["skipped", "error"] + ["not_run"] * 5
    assert not (out / "overrides.yaml").exists(), "a stale overrides.yaml must not survive a failed run"
    assert not (out / "train.jsonl").exists()
    assert (out / "report.json").is_file() and (out / "report.html").is_file()


def test_model_without_template_stops_with_chat_template_missing(cli, tmp_path):
    model = need_model("no-template")
    r = preflight(cli, model, write_csv(tmp_path / "r.csv"), tmp_path / "out", "--json")
    assert r.exit_code == 1, r
    doc = r.json()
    assert doc["stopped_at"] == "check-template"
    assert "chat_template_missing" in [f["code"] for f in doc["findings"] if f["severity"] == "error"]
    assert "error[chat_template_missing]" in r.stderr
    assert not (tmp_path / "out" / "overrides.yaml").exists()


def test_impossible_budget_stops_with_oom(cli, tmp_path):
    tok = need_model("chatml-gen")
    big = CONFIGS / "llama-3.1-8b" / "config.json"
    if not big.is_file():
        pytest.fail(f"{big} is missing: run `make fixtures`")
    model = tmp_path / "llama-8b-like"
    shutil.copytree(tok, model)
    shutil.copy(big, model / "config.json")  # the tokenizer of one fixture, the size of Llama-3.1-8B
    r = cli("preflight", "--model", model, "--dataset", write_csv(tmp_path / "r.csv"), "--out", tmp_path / "out",
            "--method", "sft", "--gpus", "1", "--gpu-memory", "16GiB", "--json")  # fmt: skip
    assert r.exit_code == 1, r
    doc = r.json()
    assert doc["stopped_at"] == "plan"
    assert [f["code"] for f in doc["findings"] if f["severity"] == "error"] == ["oom"]
    plan = doc["steps"][-1]["figures"]
    assert plan["fits"] is False and plan["memory"]["per_gpu_gib"] > 16
    assert not (tmp_path / "out" / "overrides.yaml").exists()


def test_verify_manifest_catches_a_changed_tokenizer_file(cli, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(need_model("chatml-gen"), model)
    out = tmp_path / "out"
    assert preflight(cli, model, write_csv(tmp_path / "r.csv"), out, "--method", "lora").exit_code == 0
    assert cli("verify-manifest", out / "manifest.json", "--model", model).exit_code == 0
    cfg = json.loads((model / "tokenizer_config.json").read_text())
    cfg["model_max_length"] = 12345
    (model / "tokenizer_config.json").write_text(json.dumps(cfg))
    r = cli("verify-manifest", out / "manifest.json", "--model", model)
    assert r.exit_code == 1, r
    assert "error[manifest_mismatch]" in r.stderr and "tokenizer_config.json" in r.stderr


def test_messages_jsonl_skips_normalize_and_rejects_bad_lines(cli, tmp_path):
    model = need_model("chatml-gen")
    data = tmp_path / "chat.jsonl"
    good = [
        {"messages": [{"role": "user", "content": f"hi {i}"}, {"role": "assistant", "content": f"hello {i}"}]}
        for i in range(10)
    ]
    lines = [json.dumps(c) for c in good]
    lines.insert(3, "{not json")
    lines.append(json.dumps({"messages": [{"role": "user", "content": "no answer"}]}))
    data.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    r = preflight(cli, model, data, out, "--json")
    assert r.exit_code == 0, r
    doc = r.json()
    steps = {s["name"]: s for s in doc["steps"]}
    assert steps["normalize"]["status"] == "skipped"
    assert steps["validate"]["status"] == "warning"
    rejects = read_jsonl(out / "rejects.jsonl")
    assert sorted((x["row"], x["code"]) for x in rejects) == [(4, "invalid_json"), (12, "no_assistant_turn")]
    kept = read_jsonl(out / "train.jsonl") + read_jsonl(out / "validation.jsonl")
    assert sorted(map(json.dumps, kept)) == sorted(map(json.dumps, good))  # as written, nothing added


def test_strict_stops_at_the_first_warning(cli, tmp_path):
    r = preflight(
        cli, MODELS / "chatml-gen", write_csv(tmp_path / "r.csv"), tmp_path / "out", "--strict", "--json"
    )
    assert r.exit_code == 1, r
    doc = r.json()
    assert doc["stopped_at"] == "normalize"
    assert doc["findings"][0]["code"] == "empty_content" and doc["findings"][0]["severity"] == "error"


def test_unknown_schema_stops_at_normalize(cli, tmp_path):
    data = tmp_path / "odd.csv"
    data.write_text("alpha,beta\n1,2\n3,4\n")
    r = preflight(cli, MODELS / "chatml-gen", data, tmp_path / "out", "--json")
    assert r.exit_code == 1, r
    doc = r.json()
    assert doc["stopped_at"] == "normalize"
    assert doc["findings"][0]["code"] == "unknown_schema"


def test_missing_model_is_exit_2_with_a_report(cli, tmp_path):
    out = tmp_path / "out"
    r = preflight(cli, "acme/not-in-cache", write_csv(tmp_path / "r.csv"), out, "--json")
    assert r.exit_code == 2, r
    doc = r.json()
    assert doc["stopped_at"] == "check-template"
    assert doc["findings"][-1]["code"] == "model_not_found"
    assert (out / "report.html").is_file()


def test_bad_flags_are_usage_errors(cli, tmp_path):
    data = write_csv(tmp_path / "r.csv")
    r = preflight(cli, MODELS / "chatml-gen", data, tmp_path / "o1", "--val-fraction", "1.5")
    assert r.exit_code == 2 and "usage_error" in r.stderr
    r = cli("preflight", "--model", MODELS / "chatml-gen", "--dataset", data, "--out", tmp_path / "o2",
            "--gpu-memory", "lots")  # fmt: skip
    assert r.exit_code == 2
    r = preflight(cli, MODELS / "chatml-gen", data, tmp_path / "o3", "--map", "nonsense")
    assert r.exit_code == 2
    for flags in (("--sample", "0"), ("--workers", "0"), ("--seq-lengths", "512,x"), ("--gpus", "0")):
        r = preflight(cli, MODELS / "chatml-gen", data, tmp_path / "o4", *flags)
        assert r.exit_code == 2 and "usage_error" in r.stderr, (flags, r)
    assert not (tmp_path / "o4").exists()
    assert not (tmp_path / "o1").exists()


def test_output_folder_may_not_overwrite_the_input(cli, tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text(
        json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})
    )
    before = data.read_bytes()
    r = preflight(cli, MODELS / "chatml-gen", data, tmp_path)
    assert r.exit_code == 2 and "output_would_overwrite_input" in r.stderr
    assert data.read_bytes() == before


def test_chat_template_override_reaches_overrides_and_manifest(cli, tmp_path, monkeypatch):
    model = need_model("no-template")
    template = tmp_path / "chatml.jinja"
    shutil.copy(need_model("chatml-gen") / "chat_template.jinja", template)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    r = preflight(cli, model, write_csv(tmp_path / "r.csv"), out, "--chat-template", "chatml.jinja")
    assert r.exit_code == 0, r
    over = yaml.safe_load((out / "overrides.yaml").read_text())
    assert over["dataset"]["chat_template"] == str(template)  # absolute: AutoModel runs elsewhere
    assert over["validation_dataset"]["chat_template"] == str(template)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["chat_template"]["path"] == str(template)
    assert cli("verify-manifest", out / "manifest.json", "--model", model).exit_code == 0
    template.write_text(template.read_text() + "{# changed #}")
    r = cli("verify-manifest", out / "manifest.json", "--model", model)
    assert r.exit_code == 1 and "chat-template" in r.stderr


def test_every_row_rejected_stops_at_normalize(cli, tmp_path):
    data = tmp_path / "empty.csv"
    data.write_text("instruction,input,output\n,,\n,,\n")
    r = preflight(cli, MODELS / "chatml-gen", data, tmp_path / "out", "--json")
    assert r.exit_code == 1, r
    doc = r.json()
    assert doc["stopped_at"] == "normalize"
    assert doc["findings"][0]["severity"] == "error" and doc["findings"][0]["count"] == 2
    assert len(read_jsonl(tmp_path / "out" / "rejects.jsonl")) == 2


def test_template_automodel_cannot_mask_stops_preflight_without_overrides(cli, tmp_path):
    out = tmp_path / "prep"
    r = cli("preflight", "--model", MODELS / "think-strip", "--dataset", ROOT / "fixtures" / "data" / "trainer_edge.jsonl",
            "--format", "openai_messages", "--gpus", "1", "--gpu-memory", "80GiB", "--out", out, "--json")  # fmt: skip
    report = r.json()
    assert r.exit_code == 1
    assert "mask_unbuildable" in {f["code"] for f in report["findings"] if f["severity"] == "error"}
    assert not (out / "overrides.yaml").exists()
    assert (
        report["versions"]["trainer_model"] == "nemo-automodel 0.7.0"
        and "nemo-automodel" in report["versions"]
    )


def test_overrides_set_mask_generation_prompt_only_without_tags(cli, tmp_path):
    for model, expected in (("chatml", True), ("chatml-gen", None)):
        out = tmp_path / model
        r = cli("preflight", "--model", MODELS / model, "--dataset", ROOT / "fixtures" / "golden" / "alpaca.jsonl",
                "--gpus", "1", "--gpu-memory", "80GiB", "--out", out, "--quiet")  # fmt: skip
        assert r.exit_code == 0, r
        doc = yaml.safe_load((out / "overrides.yaml").read_text())
        assert doc["dataset"].get("mask_generation_prompt") is expected
        steps = json.loads((out / "report.json").read_text())["steps"]
        stats = next(st for st in steps if st["name"] == "stats")["figures"]
        assert stats["mask_generation_prompt"] is bool(expected)


@pytest.mark.parametrize("model_name", ["chatml-gen", "chatml"])
def test_preflight_measures_in_its_one_pass_what_stats_measures_on_the_files(
    cli, tmp_path, monkeypatch, model_name
):
    """The rows are measured as they stream into the split: train.jsonl and validation.jsonl are not read back
    (neither by stats nor by check-template), and the figures are those of stats over the written files."""
    from dataprep import pipeline
    from dataprep import preflight as P
    from dataprep.preflight.split_pass import SplitPass
    from dataprep.stats import compute_stats
    from dataprep.tokenizer import load_tokenizer

    model = need_model(model_name)
    data = write_csv(tmp_path / "records.csv", n=300)

    def no_second_read(*a, **k):
        raise AssertionError("a written file was read back")

    with monkeypatch.context() as m:
        m.setattr(SplitPass, "read_back", no_second_read)  # the written train/validation files
        m.setattr(pipeline, "conversations", no_second_read)  # check-template reads nothing itself
        r = preflight(cli, model, data, tmp_path / "out", "--val-fraction", "0.2", "--no-near-dup")
    assert r.exit_code in (0, 1), r
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    steps = {s["name"]: s for s in report["steps"]}
    assert steps["check-template"]["figures"]["dataset"]["reader"] == "preflight"
    loaded = load_tokenizer(str(model))

    def rows(name):
        return enumerate(read_jsonl(tmp_path / "out" / name), start=1)

    ref = compute_stats(
        [*rows("train.jsonl"), *rows("validation.jsonl")],
        loaded,
        mask_generation_prompt=not loaded.has_generation_tags,
        seq_lengths=P.DEFAULT_SEQ_LENGTHS,
    ).to_dict()
    got = steps["stats"]["figures"]
    for key in (
        "rows",
        "tokens",
        "turns",
        "truncation",
        "histogram",
        "recommended_seq_length",
        "mask_source",
        "quality",
    ):
        assert got.get(key) == ref.get(key), key
