"""SentencePiece-only tokenizer folders (tokenizer.model, no tokenizer.json: Llama-2, Mistral v0.1, TinyLlama).

transformers converts such a folder to a fast tokenizer on load, with sentencepiece + protobuf. The fixture
``fixtures/models/sentencepiece-only`` must load through the CLI, count tokens as transformers does, and, when a
package is missing, stop with ``missing_dependency`` naming it (transformers' own error blames tiktoken).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

from dataprep.tokenizer import load_tokenizer

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
SPM = FIXTURES / "models" / "sentencepiece-only"
CHAT = FIXTURES / "data" / "chat.jsonl"

ROWS = [
    [
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris."},
    ],
    [
        {"role": "system", "content": "You are a helpful assistant. Answer in one sentence."},
        {"role": "user", "content": "How many legs does a spider have?"},
        {"role": "assistant", "content": "A spider has 8 legs."},
        {"role": "user", "content": "And   a dog?  "},
        {"role": "assistant", "content": "Four, 1234 more or less: ünïcödé € 🦊."},
    ],
    [
        {"role": "user", "content": "Translate: tea with milk"},
        {"role": "assistant", "content": "thé au lait"},
    ],
]


def _write_rows(path: Path) -> Path:
    path.write_text("".join(json.dumps({"messages": m}) + "\n" for m in ROWS), encoding="utf-8")
    return path


def _transformers_total(tok, messages) -> int:
    return len(tok.apply_chat_template(messages, tokenize=True)["input_ids"])


def test_fixture_is_sentencepiece_only_and_small():
    assert (SPM / "tokenizer.model").is_file() and not (SPM / "tokenizer.json").exists()
    assert (SPM / "tokenizer.model").stat().st_size < 16_000
    assert json.loads((SPM / "tokenizer_config.json").read_text())["tokenizer_class"] == "LlamaTokenizer"


def test_fixture_script_rebuilds_the_same_model_bytes(monkeypatch):
    spec = importlib.util.spec_from_file_location("make_tokenizers", FIXTURES / "make_tokenizers.py")
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "make_tokenizers", mod)  # its dataclasses look their module up there
    spec.loader.exec_module(mod)
    assert mod.train_sentencepiece() == (SPM / "tokenizer.model").read_bytes()


def test_loads_offline_as_a_fast_tokenizer_that_encodes_like_sentencepiece():
    import sentencepiece

    loaded = load_tokenizer(str(SPM))
    tok = loaded.tokenizer
    assert tok.is_fast and loaded.to_dict()["tokenizer_class"] == "LlamaTokenizer"
    assert "tokenizer.model" in loaded.files and "tokenizer.json" not in loaded.files
    sp = sentencepiece.SentencePieceProcessor(model_file=str(SPM / "tokenizer.model"))
    # (not text that starts with a space: transformers' Metaspace adds no "▁" before one, sentencepiece does; the
    # trainer uses transformers' conversion, so that is the reference)
    for text in (
        "Hello world",
        "The capital of France is Paris.",
        "two  spaces, 12345 ünï € 🦊 ",
        "tab\there",
    ):
        assert tok.encode(text, add_special_tokens=False) == sp.encode(text), text
    special = loaded.special_tokens()
    assert special["bos"] == {"token": "<s>", "id": 1} and special["eos"] == {"token": "</s>", "id": 2}
    assert special["adds_bos"] and not special["adds_eos"]


def test_check_template_cli(cli):
    r = cli("check-template", SPM, "--json")
    assert r.exit_code == 0, r
    doc = r.json()
    assert doc["template_source"] == "tokenizer_config.json"
    assert doc["special_tokens"]["bos"]["token"] == "<s>"
    assert doc["sample"]["text"].startswith("<s>[INST] <<SYS>>\n")
    assert doc["sample"]["supervised_tokens"] > 0
    assert "tiktoken" not in r.stdout + r.stderr


@pytest.mark.parametrize("legacy", [False, True], ids=["legacy_false", "legacy_true"])
def test_stats_counts_agree_with_transformers(cli, tmp_path, legacy):
    # legacy decides whether text after a special token gets the "▁" prefix (prepend_scheme first / always)
    model = SPM
    if legacy:
        model = tmp_path / "legacy"
        shutil.copytree(SPM, model)
        config = json.loads((model / "tokenizer_config.json").read_text())
        (model / "tokenizer_config.json").write_text(json.dumps({**config, "legacy": True}))
    tok = load_tokenizer(str(model)).tokenizer
    for data, messages in ((CHAT, None), (_write_rows(tmp_path / "rows.jsonl"), ROWS)):
        per_row = tmp_path / f"{data.stem}.per_row.jsonl"
        r = cli("stats", data, "--model", model, "--json", "--per-row", per_row)
        assert r.exit_code == 0, r
        doc = r.json()
        assert doc["mask_source"] == "prefix_with_header" and doc["findings"] == []
        rows = [json.loads(line) for line in per_row.read_text().splitlines()]
        if messages is None:
            messages = [
                json.loads(line)["messages"] for line in data.read_text().splitlines() if line.strip()
            ]
        assert [row["row"] for row in rows] == list(range(1, len(messages) + 1))
        for row, m in zip(rows, messages, strict=True):
            assert row["total"] == _transformers_total(tok, m), (data.name, row)
            assert 0 < row["supervised"] < row["total"]


def _assert_missing(r, package: str):
    assert r.exit_code == 2, r
    assert r.exception is None or isinstance(r.exception, SystemExit), r
    assert "error[missing_dependency]" in r.stderr
    assert (
        f"needs the {package} package" in r.stderr
        and 'pip install "sentencepiece<0.2.3" protobuf' in r.stderr
    )
    assert "tiktoken" not in r.stderr and "Traceback" not in r.stderr + r.stdout


@pytest.fixture
def primed():
    """Load once with everything installed, so transformers' cached "is sentencepiece available" stays true."""
    load_tokenizer(str(SPM))


def test_missing_sentencepiece_is_named(cli, monkeypatch, primed):
    monkeypatch.setitem(sys.modules, "sentencepiece", None)  # `import sentencepiece` now raises ImportError
    _assert_missing(cli("check-template", SPM), "sentencepiece")
    _assert_missing(cli("stats", CHAT, "--model", SPM, "--json"), "sentencepiece")


def test_missing_protobuf_is_named(cli, monkeypatch, primed):
    import sentencepiece

    monkeypatch.setitem(sys.modules, "google.protobuf", None)
    # forget sentencepiece's schema module (imported by the priming load), so it is imported again and fails
    monkeypatch.delitem(sys.modules, "sentencepiece.sentencepiece_model_pb2", raising=False)
    monkeypatch.delattr(sentencepiece, "sentencepiece_model_pb2", raising=False)
    _assert_missing(cli("check-template", SPM), "protobuf")


def test_broken_model_file_is_named_not_tiktoken(cli, tmp_path):
    model = tmp_path / "broken"
    shutil.copytree(SPM, model)
    data = (model / "tokenizer.model").read_bytes()
    (model / "tokenizer.model").write_bytes(data[: len(data) // 2])
    r = cli("check-template", model)
    assert r.exit_code == 2, r
    assert f"error[unreadable_input]: {model / 'tokenizer.model'}: not a SentencePiece model" in r.stderr
