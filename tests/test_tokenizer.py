"""load_tokenizer: local folders, the HF cache layout, template sources and their order, never remote code."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from dataprep.errors import ModelNotFound, UsageError
from dataprep.tokenizer import load_tokenizer

MODELS = Path(__file__).resolve().parent.parent / "fixtures" / "models"


def _copy(name: str, dest: Path) -> Path:
    shutil.copytree(MODELS / name, dest)
    return dest


def test_chatml_gen_loads_with_jinja_template_and_its_sha256():
    lt = load_tokenizer(str(MODELS / "chatml-gen"))
    text = (MODELS / "chatml-gen" / "chat_template.jinja").read_text(encoding="utf-8")
    assert lt.template == text
    assert lt.tokenizer.chat_template == text
    assert lt.template_source == "chat_template.jinja"
    assert lt.template_sha256 == hashlib.sha256(text.encode()).hexdigest()
    assert lt.has_generation_tags
    assert lt.tokenizer.eos_token == "<|im_end|>"
    assert lt.stop_token_ids == (lt.tokenizer.eos_token_id,)
    assert set(lt.files) >= {"tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "config.json"}


def test_template_from_tokenizer_config_string():
    lt = load_tokenizer(str(MODELS / "chatml"))
    assert lt.template_source == "tokenizer_config.json"
    assert not lt.has_generation_tags
    assert (
        lt.template == json.loads((MODELS / "chatml" / "tokenizer_config.json").read_text())["chat_template"]
    )


def test_named_templates_use_default():
    lt = load_tokenizer(str(MODELS / "default-system"))
    named = json.loads((MODELS / "default-system" / "tokenizer_config.json").read_text())["chat_template"]
    default = next(t["template"] for t in named if t["name"] == "default")
    assert lt.template == default
    assert "default" in lt.template_source and "tokenizer_config.json" in lt.template_source
    # the tokenizer keeps its named templates: with tools, transformers renders tool_use (as the trainer does)
    tool_use = next(t["template"] for t in named if t["name"] == "tool_use")
    assert lt.tokenizer.get_chat_template(None, [{"type": "function"}]) == tool_use
    assert lt.tokenizer.get_chat_template(None, None) == default


def test_no_template_still_loads():
    lt = load_tokenizer(str(MODELS / "no-template"))
    assert lt.template is None and lt.template_source is None and lt.template_sha256 is None
    assert not lt.has_generation_tags


def test_jinja_file_wins_over_tokenizer_config(tmp_path):
    d = _copy("chatml", tmp_path / "m")
    (d / "chat_template.jinja").write_text("{{ 'from jinja' }}", encoding="utf-8")
    lt = load_tokenizer(str(d))
    assert lt.template == "{{ 'from jinja' }}" and lt.template_source == "chat_template.jinja"


def test_option_string_file_and_json_forms(tmp_path):
    model = str(MODELS / "no-template")
    inline = "{% for m in messages %}{{ m.content }}{% endfor %}"
    lt = load_tokenizer(model, chat_template=inline)
    assert lt.template == inline and lt.template_source == "--chat-template (string)"

    jinja = tmp_path / "t.jinja"
    jinja.write_text(inline, encoding="utf-8")
    lt = load_tokenizer(model, chat_template=str(jinja))
    assert lt.template == inline and lt.template_source == f"--chat-template {jinja}"

    js = tmp_path / "t.json"
    js.write_text(json.dumps({"chat_template": inline}), encoding="utf-8")
    assert load_tokenizer(model, chat_template=str(js)).template == inline

    js.write_text(json.dumps({"chat_template": [{"name": "default", "template": inline}]}), encoding="utf-8")
    assert load_tokenizer(model, chat_template=str(js)).template == inline

    # the option beats the folder's own template
    assert load_tokenizer(str(MODELS / "chatml-gen"), chat_template=inline).template == inline


@pytest.mark.parametrize("bad", ["missing.jinja", "dir/missing.json"])
def test_option_missing_file_is_a_usage_error(bad, tmp_path):
    with pytest.raises(UsageError, match="no such file"):
        load_tokenizer(str(MODELS / "chatml"), chat_template=str(tmp_path / bad))


def test_option_json_without_key_is_a_usage_error(tmp_path):
    js = tmp_path / "t.json"
    js.write_text(json.dumps({"template": "x"}), encoding="utf-8")
    with pytest.raises(UsageError, match="chat_template"):
        load_tokenizer(str(MODELS / "chatml"), chat_template=str(js))


def test_missing_folder_names_where_it_looked(tmp_path):
    with pytest.raises(ModelNotFound, match=str(tmp_path / "nope")):
        load_tokenizer(str(tmp_path / "nope"))


def test_hub_id_not_cached_names_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelNotFound) as err:
        load_tokenizer("some-org/some-model")
    assert str(tmp_path / "hf" / "hub") in str(err.value)
    assert err.value.finding.code == "model_not_found"


def _fake_cache(cache: Path, repo: str, src: str) -> Path:
    root = cache / ("models--" + repo.replace("/", "--"))
    snap = root / "snapshots" / "0123abcd"
    shutil.copytree(MODELS / src, snap)
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text("0123abcd", encoding="utf-8")
    return snap


def test_hub_id_resolves_from_hf_home_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    snap = _fake_cache(tmp_path / "hf" / "hub", "tiny-org/tiny-chat", "chatml-gen")
    lt = load_tokenizer("tiny-org/tiny-chat")
    assert lt.model == "tiny-org/tiny-chat"
    assert lt.model_dir == snap
    assert lt.has_generation_tags


def test_hf_hub_cache_takes_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "elsewhere"))
    snap = _fake_cache(tmp_path / "elsewhere", "tiny-org/tiny-chat", "chatml")
    assert load_tokenizer("tiny-org/tiny-chat").model_dir == snap


def test_folder_without_tokenizer_files(tmp_path):
    (tmp_path / "config.json").write_text("{}", encoding="utf-8")
    with pytest.raises(ModelNotFound, match="no tokenizer files"):
        load_tokenizer(str(tmp_path))


def test_vocab_and_merges_folder(tmp_path):
    from tokenizers import Tokenizer

    src = MODELS / "chatml"
    tok = Tokenizer.from_file(str(src / "tokenizer.json"))
    tok.model.save(str(tmp_path))
    cfg = json.loads((src / "tokenizer_config.json").read_text())
    cfg["tokenizer_class"] = "GPT2Tokenizer"
    cfg["added_tokens_decoder"] = {
        str(tok.token_to_id(t)): {
            "content": t,
            "special": True,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "single_word": False,
        }
        for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>")
    }
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(cfg), encoding="utf-8")
    lt = load_tokenizer(str(tmp_path))
    ref = load_tokenizer(str(src)).tokenizer
    text = "<|im_start|>user\nWhat is the capital of France?<|im_end|>"
    assert lt.tokenizer(text).input_ids == ref(text).input_ids
    assert lt.template_source == "tokenizer_config.json"
    assert set(lt.files) >= {"vocab.json", "merges.txt"}


def test_generation_config_adds_stop_ids(tmp_path):
    d = _copy("no-eos", tmp_path / "m")
    lt0 = load_tokenizer(str(d))
    im_end = lt0.tokenizer.convert_tokens_to_ids("<|im_end|>")
    (d / "generation_config.json").write_text(
        json.dumps({"eos_token_id": [lt0.tokenizer.eos_token_id, im_end]})
    )
    assert load_tokenizer(str(d)).stop_token_ids == (lt0.tokenizer.eos_token_id, im_end)


def test_remote_code_is_never_run(tmp_path):
    d = _copy("chatml", tmp_path / "m")
    marker = tmp_path / "ran"
    (d / "evil_tok.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n", encoding="utf-8")
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    cfg["tokenizer_class"] = "EvilTokenizer"
    cfg["auto_map"] = {"AutoTokenizer": ["evil_tok.EvilTokenizer", "evil_tok.EvilTokenizer"]}
    (d / "tokenizer_config.json").write_text(json.dumps(cfg), encoding="utf-8")
    lt = load_tokenizer(str(d))  # falls back to tokenizer.json
    assert not marker.exists()
    assert lt.tokenizer("hello").input_ids


def test_to_dict_is_json_native():
    d = load_tokenizer(str(MODELS / "double-bos")).to_dict()
    json.dumps(d)
    assert d["special_tokens"]["bos"] == {"token": "<s>", "id": d["special_tokens"]["bos"]["id"]}
    assert d["special_tokens"]["adds_bos"] is True
    assert d["template_source"] == "chat_template.jinja"
