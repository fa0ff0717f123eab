"""preflight --recipe: AutoModel's reading of a recipe, the recipe checks, and the recipe.yaml written back.

The AutoModel side (recipe.yaml loaded by AutoModel 0.7.0's own config path, a batch drawn, the command line over
the original recipe giving the same config) is in test_automodel_conformance.py; here: the same rules without
AutoModel installed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from dataprep.errors import DataprepError, UsageError
from dataprep.memory import MemoryInputs, estimate
from dataprep.modelconfig import load_model_config
from dataprep.recipe import (
    LITERAL_LIMIT,
    compose_overrides,
    load_recipe,
    parse_overrides,
    peft_section,
    set_dotted,
    translate_value,
    wrap,
)

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
RECIPES = FIXTURES / "recipes"


@pytest.fixture(autouse=True)
def _fixtures_env(monkeypatch):
    monkeypatch.setenv("DATAPREP_FIXTURES", str(FIXTURES))


# -- AutoModel's grammar ------------------------------------------------------------------------------------------


def test_override_grammar_is_automodels():
    got = parse_overrides(
        [
            "--a.b",
            "8",
            "--c.d=none",
            "stray",
            "--flag",
            "--e",
            "[1, 'x']",
            "--f",
            "-3",
            "--g=a=b",
            "--h.i",
            "text",
        ]
    )
    # "-3" does not start with "--", so it is --f's value; "stray" is skipped; a bare --flag is True
    assert got == [("a.b", 8), ("c.d", None), ("flag", True), ("e", [1, "x"]), ("f", -3), ("g", "a=b"),
                   ("h.i", "text")]  # fmt: skip


def test_config_in_the_overrides_is_a_usage_error():
    with pytest.raises(UsageError, match="the recipe option"):
        parse_overrides(["--config", "x.yaml"])


def test_translate_value_leaves_long_literals_as_text():
    short = "{'a': 1}"
    long = "{'a': '" + "x" * LITERAL_LIMIT + "'}"
    assert translate_value(short) == {"a": 1}
    assert translate_value(long) == long
    assert (
        translate_value("1e-8") == 1e-8
        and translate_value("True") is True
        and translate_value("x y") == "x y"
    )


def test_wrap_keeps_targets_and_resolves_env(monkeypatch):
    monkeypatch.setenv("SEQ", "512")
    tree = wrap(
        "", {"_target_": "1", "collate_fn": "2", "seq": "${SEQ}", "d": "${MISSING,7}", "l": ["3", {"x": "4"}]}
    )
    assert tree == {"_target_": "1", "collate_fn": "2", "seq": 512, "d": 7, "l": [3, {"x": 4}]}
    with pytest.raises(UsageError, match="NOPE_NOT_SET"):
        wrap("", {"p": "$NOPE_NOT_SET/x"})


def test_set_dotted_dict_replaces_the_node():
    tree = {"dataset": {"a": 1, "b": 2}, "x": 5}
    set_dotted(tree, "dataset", {"c": 3})
    set_dotted(tree, "x.y", 1)  # a scalar parent becomes a section
    assert tree == {"dataset": {"c": 3}, "x": {"y": 1}}


def test_broken_recipes_are_recipe_invalid(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  a: [1, 2\n")
    with pytest.raises(DataprepError) as err:
        load_recipe(bad)
    assert err.value.finding.code == "recipe_invalid" and "line" in err.value.finding.message
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just text\n")
    with pytest.raises(DataprepError, match="mapping"):
        load_recipe(scalar)
    with pytest.raises(UsageError, match="no such file"):
        load_recipe(tmp_path / "absent.yaml")


# -- composing overrides ------------------------------------------------------------------------------------------

_scalars = st.one_of(
    st.integers(-5, 50), st.booleans(), st.none(), st.sampled_from(["a", "b/c", "do_not_pad"])
)
_keys = st.sampled_from(["dataset", "peft", "dim", "seq_length", "x", "y"])
_trees = st.recursive(_scalars, lambda kids: st.dictionaries(_keys, kids, max_size=4), max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_keys, _trees, max_size=5), st.dictionaries(_keys, _trees, max_size=5))
def test_composed_overrides_turn_the_old_config_into_the_new(old, new):
    """Applied with AutoModel's set_by_dotted rules, the overrides give exactly the new config, except that a
    removed top-level section reads as None (how AutoModel's recipes test for a section)."""
    sets, too_long = compose_overrides(old, new)
    assert not too_long
    got = json.loads(json.dumps(old))
    for key, value in sets:
        set_dotted(got, key, value)
    expected = {**{k: None for k in old if k not in new}, **new}
    assert got == expected


def test_a_section_that_loses_a_key_is_passed_whole_and_long_ones_are_reported():
    old = {"dataset": {"_target_": "squad", "dataset_name": "x"}, "peft": {"dim": 8}}
    new = {"dataset": {"_target_": "chat", "path_or_dataset_id": "/d"}, "peft": {"dim": 16}}
    sets, too_long = compose_overrides(old, new)
    assert sets == [("dataset", new["dataset"]), ("peft.dim", 16)] and not too_long
    new["dataset"]["chat_template"] = "x" * LITERAL_LIMIT
    assert compose_overrides(old, new)[1] == ["dataset"]


def test_peft_section_chooses_modules_one_way():
    conflict = {"_target_": "P", "match_all_linear": True, "target_modules": "*_proj", "dim": 8}
    assert peft_section(conflict, rank=16, alpha=32) == {
        "_target_": "P",
        "target_modules": "*_proj",
        "dim": 16,
        "alpha": 32,
    }
    assert peft_section({"match_all_linear": True}, rank=8, alpha=16)["match_all_linear"] is True
    got = peft_section({"match_all_linear": True}, rank=8, alpha=16, targets="q_proj,v_proj")
    assert got["target_modules"] == ["q_proj", "v_proj"] and "match_all_linear" not in got


# -- the recipe checks, one fixture each ------------------------------------------------------------------------

CHECKS = {
    "stale_keys": "recipe_dataset_unknown_keys",
    "seq_no_truncation": "seq_length_without_truncation",
    "batch_not_divisible": "recipe_batch_not_divisible",
    "peft_conflict": "peft_target_conflict",
    "packing_conflict": "packing_padding_conflict",
    "implicit_precision": "precision_not_explicit",
    "no_template": "chat_template_missing",
    "packed_input": "packed_parquet_used_with_automodel",
    "parallel_mismatch": "recipe_parallel_mismatch",
}
STOPS = {"no_template": "check-template", "packed_input": "recipe", "parallel_mismatch": "recipe"}


def _preflight(cli, tmp_path, recipe: Path, *extra: str):
    out = tmp_path / "prep"
    r = cli("preflight", "--recipe", recipe, "--out", out, "--val-fraction", "0.3", "--json", *extra)
    return r, out


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_each_recipe_check_fires_on_its_fixture(cli, tmp_path, name):
    r, out = _preflight(cli, tmp_path, RECIPES / f"{name}.yaml")
    d = r.json()
    codes = {f["code"] for f in d["findings"]}
    assert CHECKS[name] in codes, d["findings"]
    # each fixture changes one thing from base.yaml: no other recipe check fires
    recipe_codes = {f["code"] for f in d["findings"] if f.get("step") == "recipe"}
    assert recipe_codes <= {CHECKS[name]}, recipe_codes
    if name in STOPS:
        assert d["stopped_at"] == STOPS[name] and r.exit_code != 0
        assert not (out / "recipe.yaml").exists() and not (out / "overrides.yaml").exists()
    else:
        assert r.exit_code == 0 and (out / "recipe.yaml").exists()
        assert r.exit_code == 0 and d["verdict"] == "pass_with_warnings"


def test_base_recipe_passes_clean(cli, tmp_path):
    r, out = _preflight(cli, tmp_path, RECIPES / "base.yaml")
    d = r.json()
    assert r.exit_code == 0, d["findings"]
    assert not [f for f in d["findings"] if f.get("step") == "recipe"]
    assert d["steps"][0]["name"] == "recipe" and d["steps"][0]["status"] == "ok"
    taken = d["steps"][0]["figures"]["taken"]
    assert taken["lora_rank"] == {"key": "peft.dim", "value": 16}
    assert taken["dataset"]["key"] == "dataset.path_or_dataset_id"
    assert d["steps"][-1]["figures"]["recommendation"]["seq_length"] == 1024  # the recipe's, not the stats'


def test_recipe_yaml_keeps_the_recipe_and_changes_what_preflight_decides(cli, tmp_path):
    r, out = _preflight(cli, tmp_path, RECIPES / "stale_keys.yaml", "--", "--optimizer.lr", "3e-4")
    assert r.exit_code == 0, r.stderr
    text = (out / "recipe.yaml").read_text()
    assert "max_steps: 20  # a short run" in text and "# Uncomment for W&B logging" in text
    assert "${DATAPREP_FIXTURES}/models/chatml" in text  # untouched values keep their env references
    written = wrap("", yaml.safe_load(text))
    ds = written["dataset"]
    assert ds["path_or_dataset_id"] == str((out / "train.jsonl").resolve())
    assert not {"dataset_name", "limit_dataset_samples", "column_mapping", "answer_only_loss_mask"} & set(ds)
    assert ds["truncation"] is True and ds["seq_length"] == 1024 and ds["mask_generation_prompt"] is True
    assert written["optimizer"]["lr"] == 3e-4 and written["peft"]["dim"] == 16
    assert written["model"]["torch_dtype"] == "bf16"  # already explicit: kept as written
    assert isinstance(written["distributed"]["activation_checkpointing"], bool)
    d = r.json()
    keys = {c["key"]: c["why"] for c in d["recipe"]["changes"]}
    assert (
        keys["dataset"].startswith("replaced whole")
        and keys["optimizer.lr"] == "the recipe override after --"
    )
    # overrides.yaml's command line replaces the dataset section whole (dotted overrides cannot delete keys)
    line = d["recipe"]["command_line"]
    assert line.startswith(f"automodel {RECIPES / 'stale_keys.yaml'}") and "--dataset '{" in line


def test_flags_win_over_the_recipe_and_are_reported(cli, tmp_path):
    r, out = _preflight(
        cli, tmp_path, RECIPES / "base.yaml", "--lora-rank", "4", "--seq-length", "512", "--model",
        str(FIXTURES / "models" / "chatml-gen"),
    )  # fmt: skip
    assert r.exit_code == 0, r.stderr
    d = r.json()
    flags = {c["key"]: c for c in d["steps"][0]["figures"]["flag_changes"]}
    assert flags["peft.dim"]["old"] == 16 and flags["peft.dim"]["new"] == 4
    assert flags["dataset.seq_length"]["why"] == "--seq-length on the dataprep command line"
    written = yaml.safe_load((out / "recipe.yaml").read_text())
    assert written["peft"]["dim"] == 4 and written["dataset"]["seq_length"] == 512
    assert written["model"]["pretrained_model_name_or_path"] == str(
        (FIXTURES / "models" / "chatml-gen").resolve()
    )
    assert "mask_generation_prompt" not in written["dataset"]  # chatml-gen has generation tags
    why = {c["key"]: c["why"] for c in d["recipe"]["changes"]}
    assert why["peft.dim"] == "--lora-rank on the dataprep command line"


def test_method_sft_removes_peft(cli, tmp_path):
    r, out = _preflight(cli, tmp_path, RECIPES / "base.yaml", "--method", "sft")
    assert r.exit_code == 0, r.stderr
    assert "peft" not in yaml.safe_load((out / "recipe.yaml").read_text())
    assert "--peft None" in r.json()["recipe"]["command_line"]


def test_inline_template_goes_to_a_file_and_parallel_sizes_reach_the_plan(cli, tmp_path):
    r, out = _preflight(cli, tmp_path, RECIPES / "inline_template.yaml", "--gpus", "4")
    assert r.exit_code == 0, r.stderr
    d = r.json()
    written = yaml.safe_load((out / "recipe.yaml").read_text())
    recipe_text = yaml.safe_load((RECIPES / "inline_template.yaml").read_text())["dataset"]["chat_template"]
    assert (out / "chat_template.jinja").read_text() == recipe_text
    assert written["dataset"]["chat_template"] == str((out / "chat_template.jinja").resolve())
    rec = d["steps"][-1]["figures"]["recommendation"]
    assert rec["dp_size"] == 1 and rec["activation_checkpointing"] is True  # 4 GPUs = tp 2 x cp 2
    assert d["recipe"]["command_line"]


def test_a_recipe_whose_dataset_preflight_cannot_read_needs_dataset(cli, tmp_path):
    r, out = _preflight(cli, tmp_path, RECIPES / "not_chat.yaml")
    assert r.exit_code == 2 and "make_squad_dataset" in r.stderr and "--dataset" in r.stderr
    r, out = _preflight(
        cli, tmp_path, RECIPES / "not_chat.yaml", "--dataset", str(FIXTURES / "golden" / "sharegpt.jsonl")
    )
    assert r.exit_code == 0, r.stderr
    assert "recipe_dataset_not_chat" in {f["code"] for f in r.json()["findings"]}


def test_recipe_overrides_need_a_recipe_and_model_is_required_without_one(cli, tmp_path):
    r = cli("preflight", "--model", FIXTURES / "models" / "chatml", "--dataset", FIXTURES / "data" / "chat.jsonl",
            "--out", tmp_path / "o", "--", "--a.b", "1")  # fmt: skip
    assert r.exit_code == 2 and "--recipe" in r.stderr
    r = cli("preflight", "--dataset", FIXTURES / "data" / "chat.jsonl", "--out", tmp_path / "o")
    assert r.exit_code == 2 and "--model is required" in r.stderr


def test_a_later_flags_only_run_removes_the_recipe_outputs(cli, tmp_path):
    r, out = _preflight(cli, tmp_path, RECIPES / "inline_template.yaml", "--gpus", "4")
    assert (out / "recipe.yaml").exists() and (out / "chat_template.jinja").exists()
    r = cli("preflight", "--model", FIXTURES / "models" / "chatml", "--dataset", FIXTURES / "data" / "chat.jsonl",
            "--out", out, "--val-fraction", "0.3")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    assert not (out / "recipe.yaml").exists() and not (out / "chat_template.jinja").exists()


# -- tensor and context parallelism in the memory estimate ------------------------------------------------------


def test_tp_and_cp_divide_what_they_split():
    m = load_model_config(str(FIXTURES / "configs" / "llama-3.2-1b"))
    base = estimate(MemoryInputs(model=m, method="sft", dp=1, local_batch_size=1, padded_len=4096)).breakdown
    tp = estimate(
        MemoryInputs(model=m, method="sft", dp=1, local_batch_size=1, padded_len=4096, tp=2)
    ).breakdown
    cp = estimate(
        MemoryInputs(model=m, method="sft", dp=1, local_batch_size=1, padded_len=4096, cp=2)
    ).breakdown
    for k in ("weights", "gradients", "optimizer_states"):
        assert tp[k] == pytest.approx(base[k] / 2) and cp[k] == pytest.approx(base[k] / 2)
    assert cp["activations"] == pytest.approx(base["activations"] / 2) and cp["logits"] == pytest.approx(
        base["logits"] / 2
    )
    # tp splits heads and the MLP, not the hidden-size tensors: between a half and the whole
    assert base["activations"] / 2 < tp["activations"] < base["activations"]
    assert tp["logits"] == base["logits"]


def test_report_html_lists_the_recipe_changes(cli, tmp_path):
    r, out = _preflight(cli, tmp_path, RECIPES / "stale_keys.yaml")
    assert r.exit_code == 0, r.stderr
    html = (out / "report.html").read_text()
    assert 'id="recipe-changes"' in html and "replaced whole" in html and "recipe.yaml" in html


def test_the_recipes_run_length_reaches_the_time_estimate(cli, tmp_path):
    r, out = _preflight(cli, tmp_path, RECIPES / "base.yaml", "--gpu", "h100")
    assert r.exit_code == 0, r.stderr
    d = r.json()
    assert d["steps"][0]["figures"]["taken"]["max_steps"] == {"key": "step_scheduler.max_steps", "value": 20}
    run = next(s for s in d["steps"] if s["name"] == "plan")["figures"]["time"]["run"]
    assert run["epochs"] == 1 and run["max_steps"] == 20
    assert 'id="time"' in (out / "report.html").read_text()
