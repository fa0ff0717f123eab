"""Shared option groups (dataprep/cli/_options.py): every command spells, documents and parses a flag the same way."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import click
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dataprep.cli import COMMANDS
from dataprep.cli._options import (
    BATCH_SIZES,
    PLAN_DEFAULTS,
    SEQ_LENGTHS,
    ConvertFlags,
    parse_int_list,
    parse_pairs,
)
from dataprep.errors import UsageError

CONFIGS = Path(__file__).resolve().parent.parent / "fixtures" / "configs"

CONVERT_FLAGS = ("--format", "--map", "--role-map", "--system", "--take", "--text-only", "--encoding")
PLAN_FLAGS = (
    "--gpus",
    "--gpu-memory",
    "--seq-length",
    "--global-batch-size",
    "--lora-rank",
    "--lora-alpha",
    "--lora-targets",
    "--activation-checkpointing",
    "--loss",
    "--param-dtype",
    "--packing",
    "--margin",
)


def command(name: str) -> click.Command:
    module, attr = COMMANDS[name].split(":")
    return getattr(importlib.import_module(module), attr)


def option(name: str, flag: str) -> click.Option:
    (opt,) = [p for p in command(name).params if flag in getattr(p, "opts", ())]
    return opt


def spelling(opt: click.Option, *, with_default: bool = True) -> tuple:
    choices = tuple(opt.type.choices) if isinstance(opt.type, click.Choice) else None
    return (
        tuple(opt.opts),
        opt.name,
        opt.type.name,
        choices,
        opt.multiple,
        opt.is_flag,
        opt.metavar,
        opt.help if with_default else None,
        (opt.default, opt.show_default) if with_default else None,
    )


@pytest.mark.parametrize("flag", CONVERT_FLAGS)
def test_commands_that_read_records_spell_the_conversion_flags_identically(flag):
    spelled = {name: spelling(option(name, flag)) for name in ("normalize", "stats", "preflight")}
    assert len(set(spelled.values())) == 1, spelled


@pytest.mark.parametrize("flag", PLAN_FLAGS)
def test_plan_and_preflight_spell_the_plan_flags_identically(flag):
    plan, pre = option("plan", flag), option("preflight", flag)
    assert spelling(plan, with_default=False) == spelling(pre, with_default=False)
    # preflight leaves an unset flag None (only what the user gave reaches make_plan and report.json), and its
    # --help shows the value make_plan will use instead.
    key = plan.name
    if key in PLAN_DEFAULTS:
        assert plan.default == PLAN_DEFAULTS[key] and pre.default is None
        assert plan.help in pre.help and f"[default: {PLAN_DEFAULTS[key]}]" in pre.help


@pytest.mark.parametrize("flag", ("--seq-lengths", "--batch-sizes"))
def test_stats_and_preflight_spell_the_length_flags_identically(flag):
    stats, pre = option("stats", flag), option("preflight", flag)
    assert spelling(stats, with_default=False) == spelling(pre, with_default=False)
    assert pre.default is None and f"[default: {stats.default}]" in pre.help


def test_shown_defaults_are_the_ones_the_library_uses():
    from dataprep.plan import make_plan
    from dataprep.preflight import DEFAULT_BATCH_SIZES, DEFAULT_SEQ_LENGTHS

    params = inspect.signature(make_plan).parameters
    assert {k: params[k].default for k in PLAN_DEFAULTS} == PLAN_DEFAULTS
    assert parse_int_list(SEQ_LENGTHS, "--seq-lengths") == DEFAULT_SEQ_LENGTHS
    assert parse_int_list(BATCH_SIZES, "--batch-sizes") == DEFAULT_BATCH_SIZES


@pytest.mark.parametrize("value", ["instruction", "=question", "instruction=", "", "="])
def test_a_malformed_pair_is_a_usage_error_naming_the_flag(value):
    with pytest.raises(UsageError) as err:
        parse_pairs(("ok=fine", value), "--map")
    f = err.value.finding
    assert f.code == "usage_error" and f.message == f"--map {value!r}: expected NAME=VALUE"
    assert f.hint == "e.g. --map instruction=question" and err.value.exit_code == 2
    with pytest.raises(UsageError) as err:
        parse_pairs((value,), "--role-map")
    assert err.value.finding.hint == "e.g. --role-map gpt=assistant"


_name = st.text(st.characters(blacklist_characters="=", blacklist_categories=("Cs",)), min_size=1)


@given(st.lists(st.tuples(_name, st.text(st.characters(blacklist_categories=("Cs",)), min_size=1))))
def test_pairs_split_at_the_first_equals_sign_and_the_last_one_wins(pairs):
    assert parse_pairs(tuple(f"{k}={v}" for k, v in pairs), "--map") == dict(pairs)


def test_convert_flags_parse_into_one_convert_spec():
    from dataprep.pipeline import ConvertSpec

    flags = ConvertFlags("alpaca", ("output=answer",), (), "Be brief.", "chosen", True, False, "latin-1")
    assert flags.spec() == ConvertSpec(
        fmt="alpaca",
        mapping={"output": "answer"},
        system="Be brief.",
        take="chosen",
        text_only=True,
        encoding="latin-1",
    )
    with pytest.raises(UsageError, match="--map"):
        ConvertFlags(None, ("output",), (), None, None, False, False, None).spec()


@pytest.mark.parametrize(
    ("text", "expected"), [(None, None), ("512", (512,)), ("512, 1024,", (512, 1024)), (" 8 ,16", (8, 16))]
)
def test_int_lists(text, expected):
    assert parse_int_list(text, "--seq-lengths") == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("512,abc", "--seq-lengths '512,abc': expected comma-separated integers"),
        ("512,0", "--seq-lengths '512,0': expected positive integers"),
        ("-1", "--seq-lengths '-1': expected positive integers"),
        (",", "--seq-lengths ',': expected positive integers"),
    ],
)
def test_a_bad_int_list_is_a_usage_error(text, message):
    with pytest.raises(UsageError) as err:
        parse_int_list(text, "--seq-lengths")
    assert err.value.finding.message == message and err.value.exit_code == 2


@pytest.mark.parametrize(
    "args",
    [
        ("normalize", "in.jsonl", "out.jsonl"),
        ("stats", "in.jsonl", "--model", "nowhere"),
        ("preflight", "--model", "nowhere", "--dataset", "in.jsonl", "--out", "prep"),
    ],
)
def test_every_command_reports_a_bad_pair_the_same_way(cli, tmp_path, monkeypatch, args):
    monkeypatch.chdir(tmp_path)
    r = cli(*args, "--map", "instruction", "--json")
    assert r.exit_code == 2, r
    assert "error[usage_error]: --map 'instruction': expected NAME=VALUE" in r.stderr
    assert [f["code"] for f in r.json()["findings"]] == ["usage_error"]
    assert not (tmp_path / "prep").exists() and not (tmp_path / "out.jsonl").exists()


# -- command-line errors are findings too ---------------------------------------------------------------


def test_bad_flag_is_a_usage_error_finding(cli):
    r = cli("inspect", "--bogus", "x")
    assert r.exit_code == 2
    assert "error[usage_error]: No such option '--bogus'." in r.stderr
    assert "hint: see `dataprep inspect --help`" in r.stderr


def test_bad_flag_with_json_prints_one_json_document(cli):
    # `dataprep plan ... --method foo --json` printed nothing on stdout: a pipeline had nothing to parse.
    r = cli("plan", "--model", CONFIGS / "llama-3.2-1b", "--method", "foo", "--json")
    assert r.exit_code == 2
    doc = r.json()
    assert [f["code"] for f in doc["findings"]] == ["usage_error"]
    assert "--method" in doc["findings"][0]["message"]


def test_help_and_no_args_still_work(cli):
    assert cli("inspect", "--help").exit_code == 0
    assert cli("--version").exit_code == 0
