"""overrides.yaml and its command line: only keys ChatDataset accepts, absolute paths, plan merged in."""

from __future__ import annotations

import shlex
from pathlib import Path

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from dataprep.overrides import (
    CHAT_DATASET_KEYS,
    CHAT_DATASET_TARGET,
    PEFT_TARGET,
    build_overrides,
    chat_dataset_section,
    command_line,
    deep_merge,
    dotted_items,
    read_cli_value,
    to_yaml,
)

PLAN = {
    "step_scheduler": {"local_batch_size": 4, "global_batch_size": 32},
    "distributed": {"activation_checkpointing": True},
    "loss_fn": {"_target_": "nemo_automodel.components.loss.linear_ce.FusedLinearCrossEntropy"},
    "dataset": {"seq_length": 1024, "truncation": True, "padding": "do_not_pad", "pack_me": 1},
    "peft": {"_target_": PEFT_TARGET, "target_modules": "*_proj", "dim": 8, "alpha": 32, "dropout": 0.0},
}


def automodel_parse(cmd: str) -> tuple[str, dict]:
    """What AutoModel's parse_cli_argv + set_by_dotted do with the line (values through translate_value)."""
    argv = shlex.split(cmd)[1:]
    config, out, i = argv[0], {}, 1
    while i < len(argv):
        tok = argv[i]
        assert tok.startswith("--"), tok
        key = tok[2:]
        if "=" in key:
            key, val = key.split("=", 1)
            i += 1
        else:
            val = argv[i + 1]
            assert not val.startswith("--")
            i += 2
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = read_cli_value(val)
    return config, out


def test_dataset_section_only_chat_dataset_keys(tmp_path):
    sec = chat_dataset_section(tmp_path / "train.jsonl", seq_length=2048)
    assert set(sec) <= CHAT_DATASET_KEYS
    assert sec["_target_"] == CHAT_DATASET_TARGET
    assert Path(sec["path_or_dataset_id"]).is_absolute()
    assert sec["seq_length"] == 2048 and sec["truncation"] is True  # seq_length only bites with truncation


def test_relative_paths_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m").mkdir()
    over = build_overrides(
        model="m", train_path="out/train.jsonl", validation_path="out/validation.jsonl", seq_length=512
    )
    assert over["model"]["pretrained_model_name_or_path"] == str(tmp_path / "m")
    assert over["dataset"]["path_or_dataset_id"] == str(tmp_path / "out" / "train.jsonl")
    assert over["validation_dataset"]["path_or_dataset_id"] == str(tmp_path / "out" / "validation.jsonl")
    # A Hub id stays an id.
    hub = build_overrides(
        model="meta-llama/Llama-3.2-1B", train_path="t.jsonl", validation_path=None, seq_length=512
    )
    assert hub["model"]["pretrained_model_name_or_path"] == "meta-llama/Llama-3.2-1B"
    assert "validation_dataset" not in hub


def test_plan_is_merged_and_unknown_dataset_keys_dropped(tmp_path):
    over = build_overrides(
        model="org/m",
        train_path=tmp_path / "t.jsonl",
        validation_path=tmp_path / "v.jsonl",
        seq_length=None,
        method="lora",
        plan_overrides=PLAN,
    )
    assert over["step_scheduler"] == PLAN["step_scheduler"]
    assert over["distributed"]["activation_checkpointing"] is True
    assert over["loss_fn"] == PLAN["loss_fn"]
    assert over["peft"]["dim"] == 8
    for name in ("dataset", "validation_dataset"):
        assert set(over[name]) <= CHAT_DATASET_KEYS, over[name]
        assert over[name]["seq_length"] == 1024  # the plan's length when none is given
    assert "pack_me" not in over["dataset"]


def test_lora_gets_peft_and_sft_does_not(tmp_path):
    lora = build_overrides(model="o/m", train_path="t", validation_path=None, seq_length=8, method="lora")
    assert lora["peft"]["_target_"] == PEFT_TARGET
    sft = build_overrides(
        model="o/m", train_path="t", validation_path=None, seq_length=8, method="sft", plan_overrides=PLAN
    )
    assert "peft" not in sft


def test_chat_template_override_is_an_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.jinja").write_text("{{ messages }}")
    over = build_overrides(
        model="o/m", train_path="t", validation_path="v", seq_length=8, chat_template="t.jinja"
    )
    assert over["dataset"]["chat_template"] == str(tmp_path / "t.jinja")
    assert over["validation_dataset"]["chat_template"] == str(tmp_path / "t.jinja")
    none = build_overrides(model="o/m", train_path="t", validation_path="v", seq_length=8)
    assert "chat_template" not in none["dataset"]


def test_yaml_round_trips(tmp_path):
    over = build_overrides(
        model="o/m",
        train_path=tmp_path / "t",
        validation_path=tmp_path / "v",
        seq_length=64,
        method="lora",
        plan_overrides=PLAN,
        chat_template="{% for m in messages %}\n{{ m }}{% endfor %}",
    )
    text = to_yaml(over, header="made by a test\nline two")
    assert text.startswith("# made by a test\n# line two\n")
    assert yaml.safe_load(text) == over


def test_command_line_reads_back_to_the_same_overrides(tmp_path):
    over = build_overrides(
        model="o/m",
        train_path=tmp_path / "a b" / "t.jsonl",
        validation_path=None,
        seq_length=64,
        method="lora",
        plan_overrides=PLAN,
    )
    over["optimizer"] = {"lr": -1e-4, "betas": [0.9, 0.95]}
    cmd = command_line(over, config="llama_lora.yaml")
    config, parsed = automodel_parse(cmd)
    assert config == "llama_lora.yaml"
    assert parsed == over


scalars = st.one_of(
    st.none(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.text(min_size=0, max_size=12).filter(lambda t: "\x00" not in t),
    st.lists(st.one_of(st.integers(), st.text(max_size=5)), max_size=3),
)


@settings(max_examples=80, deadline=None)
@given(st.dictionaries(st.from_regex(r"[a-z_]{1,8}", fullmatch=True), scalars, min_size=1, max_size=5))
def test_command_line_round_trip_property(section):
    over = {"sec": section}
    assert automodel_parse(command_line(over))[1] == over


def test_read_cli_value_matches_automodel_rules():
    assert read_cli_value("true") is True and read_cli_value("None") is None
    assert read_cli_value("8") == 8 and read_cli_value("[1, 'a']") == [1, "a"]
    assert read_cli_value("*_proj") == "*_proj"


def test_deep_merge_and_dotted_items():
    merged = deep_merge({"a": {"b": 1, "c": 2}, "d": 1}, {"a": {"c": 3}, "e": {"f": 4}})
    assert merged == {"a": {"b": 1, "c": 3}, "d": 1, "e": {"f": 4}}
    assert dict(dotted_items(merged)) == {"a.b": 1, "a.c": 3, "d": 1, "e.f": 4}


def test_one_writer_for_every_override_command_line():
    """plan's cli_overrides, preflight's command line and recipe.yaml's all go through cli_arguments: lists and
    dicts as double-quoted literals, a string that would read back as a number stays a string."""
    from dataprep.modelconfig import load_model_config
    from dataprep.overrides import cli_arguments
    from dataprep.plan import make_plan
    from dataprep.recipe import command_line as recipe_command_line

    over = {"a": {"s": "8", "l": ["q_proj"], "d": {"x": "y"}, "neg": -1, "t": True}}
    args = cli_arguments(dotted_items(over))
    assert args == [
        "--a.s '\"8\"'", "--a.l '[\"q_proj\"]'", "--a.d.x y", "--a.neg=-1", "--a.t true",
    ]  # fmt: skip
    assert command_line(over, config="r.yaml") == "automodel r.yaml " + " ".join(args)
    assert recipe_command_line("r.yaml", list(dotted_items(over))) == command_line(over, config="r.yaml")
    assert automodel_parse(command_line(over))[1] == over
    m8b = load_model_config(
        str(Path(__file__).resolve().parent.parent / "fixtures" / "configs" / "llama-3.1-8b")
    )
    plan = make_plan(m8b, seq_length=2048, gpus=8, method="lora")
    assert plan.cli_overrides() == cli_arguments(dotted_items(plan.overrides()))
