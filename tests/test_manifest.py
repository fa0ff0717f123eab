"""manifest.json and verify-manifest: a changed base model or tokenizer is caught, file by file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from dataprep.findings import Severity
from dataprep.manifest import (
    DataFile,
    build_manifest,
    check_manifest,
    resolve_model,
    resolved_from_dir,
    verify_manifest,
)
from dataprep.split import file_sha256

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
SRC_MODEL = FIXTURES / "models" / "chatml-gen"
MODELS = FIXTURES / "models"
RECORDS = FIXTURES / "records"
MODEL = MODELS / "chatml"


@pytest.fixture
def model_dir(tmp_path):
    if not SRC_MODEL.is_dir():
        pytest.fail("fixtures/models/chatml-gen is missing: run `make fixtures`")
    dst = tmp_path / "model"
    shutil.copytree(SRC_MODEL, dst)
    return dst


def write_manifest(model: str, tmp_path, **kw) -> tuple:
    data = tmp_path / "train.jsonl"
    data.write_text('{"messages": []}\n')
    m = build_manifest(model, data={"train": DataFile(str(data), file_sha256(data), 1)}, **kw)
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(m.to_dict()))
    return path, m.to_dict()


def test_manifest_pins_every_tokenizer_file(model_dir, tmp_path):
    path, doc = write_manifest(
        str(model_dir), tmp_path, chat_template="{{ x }}", template_source="chat_template.jinja"
    )
    present = {p.name for p in model_dir.iterdir() if p.is_file()}
    assert set(doc["tokenizer_files"]) == present & set(doc["tokenizer_files"])
    for name in ("tokenizer.json", "tokenizer_config.json", "config.json"):
        if name in present:
            assert doc["tokenizer_files"][name] == file_sha256(model_dir / name)
    assert doc["chat_template"]["sha256"] == __import__("hashlib").sha256(b"{{ x }}").hexdigest()
    assert doc["data"]["train"]["rows"] == 1
    assert doc["base_model"]["path"] == str(model_dir.resolve())
    assert doc["base_model"]["revision"] is None
    assert {"dataprep", "transformers", "tokenizers"} <= set(doc["versions"])
    assert verify_manifest(path, str(model_dir)) == []


def test_changed_tokenizer_file_is_a_mismatch(model_dir, tmp_path):
    path, _ = write_manifest(str(model_dir), tmp_path)
    cfg = model_dir / "tokenizer_config.json"
    cfg.write_text(cfg.read_text() + "\n")
    findings = verify_manifest(path, str(model_dir))
    assert [f.code for f in findings] == ["manifest_mismatch"]
    assert findings[0].severity is Severity.ERROR
    assert "tokenizer_config.json" in findings[0].message
    assert findings[0].to_dict()["files"] == ["tokenizer_config.json"]


def test_missing_and_new_files_are_named(model_dir, tmp_path):
    path, doc = write_manifest(str(model_dir), tmp_path)
    victim = next(
        n for n in ("special_tokens_map.json", "chat_template.jinja") if n in doc["tokenizer_files"]
    )
    (model_dir / victim).unlink()
    (model_dir / "added_tokens.json").write_text("{}")
    check = check_manifest(path, str(model_dir))
    assert victim in check.missing and "added_tokens.json" in check.added
    assert not check.ok
    assert {victim, "added_tokens.json"} <= set(check.differing)


def test_small_weights_are_hashed_and_compared(model_dir, tmp_path):
    (model_dir / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    path, doc = write_manifest(str(model_dir), tmp_path)
    assert doc["weights"]["model.safetensors"]["sha256"]
    (model_dir / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}     !")
    check = check_manifest(path, str(model_dir))
    assert check.changed == ("model.safetensors",)


def _fake_cache(hf_home, files: dict[str, str], rev: str):
    repo = hf_home / "hub" / "models--acme--tiny"
    snap = repo / "snapshots" / rev
    snap.mkdir(parents=True)
    for name, text in files.items():
        (snap / name).write_text(text)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(rev)
    return snap


def test_hf_cache_revision_is_recorded_and_checked(tmp_path, monkeypatch):
    hf_home = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(hf_home))
    files = {"tokenizer.json": "{}", "tokenizer_config.json": "{}", "config.json": "{}"}
    snap = _fake_cache(hf_home, files, "a" * 40)
    resolved = resolve_model("acme/tiny")
    assert resolved.revision == "a" * 40 and resolved.repo_id == "acme/tiny" and resolved.path == snap
    assert resolved_from_dir("acme/tiny", snap).revision == "a" * 40
    path, doc = write_manifest("acme/tiny", tmp_path)
    assert doc["base_model"]["revision"] == "a" * 40
    assert verify_manifest(path, "acme/tiny") == []
    # A new snapshot with identical files: the revision still differs, and is reported.
    _fake_cache(hf_home, files, "b" * 40)
    findings = verify_manifest(path, "acme/tiny")
    assert findings and "revision" in findings[0].message


def test_cli_verify_manifest(model_dir, tmp_path, cli):
    path, _ = write_manifest(str(model_dir), tmp_path)
    ok = cli("verify-manifest", path, "--model", model_dir)
    assert ok.exit_code == 0, ok
    assert "matches" in ok.stderr
    (model_dir / "tokenizer.json").write_text((model_dir / "tokenizer.json").read_text() + " ")
    bad = cli("verify-manifest", path, "--model", model_dir)
    assert bad.exit_code == 1, bad
    assert "error[manifest_mismatch]" in bad.stderr and "tokenizer.json" in bad.stderr
    js = cli("verify-manifest", path, "--model", model_dir, "--json")
    assert js.exit_code == 1
    doc = js.json()
    assert doc["differing_files"] == ["tokenizer.json"]
    assert doc["findings"][0]["code"] == "manifest_mismatch"


def test_cli_verify_manifest_unreadable(tmp_path, cli, model_dir):
    (tmp_path / "m.json").write_text("not json")
    r = cli("verify-manifest", tmp_path / "m.json", "--model", model_dir)
    assert r.exit_code == 2 and "unreadable_input" in r.stderr
    r = cli("verify-manifest", tmp_path / "absent.json", "--model", model_dir)
    assert r.exit_code == 2


def test_cli_verify_manifest_model_not_found(tmp_path, cli, model_dir):
    path, _ = write_manifest(str(model_dir), tmp_path)
    r = cli("verify-manifest", path, "--model", "acme/not-there")
    assert r.exit_code == 2 and "model_not_found" in r.stderr


def test_verify_manifest_of_a_wrong_file_hints_at_the_manifest(cli, tmp_path):
    other = tmp_path / "report.json"
    other.write_text("{}", encoding="utf-8")
    for path in (other, RECORDS / "alpaca.csv"):
        r = cli("verify-manifest", path, "--model", MODELS / "chatml")
        assert r.exit_code == 2 and "hint: pass the manifest.json preflight wrote" in r.stderr, r


@pytest.mark.parametrize(
    "doc",
    [
        {"base_model": 5, "tokenizer_files": 5},
        {"base_model": {}, "tokenizer_files": [1]},
        {"base_model": {}, "tokenizer_files": {"a": 5}},
        {"base_model": {}, "tokenizer_files": {}, "weights": 5},
        {"base_model": {}, "tokenizer_files": {}, "weights": {"model.safetensors": 3}},
        {"base_model": {}, "tokenizer_files": {}, "chat_template": 5},
    ],
)
def test_verify_manifest_malformed_manifest_is_unreadable_input(cli, tmp_path, doc):
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    res = cli("verify-manifest", path, "--model", MODEL, "--json")
    assert res.exit_code == 2, res
    assert res.json()["findings"][0]["code"] == "unreadable_input"
