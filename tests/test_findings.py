"""The catalogue and the exit-code policy every command shares."""

from __future__ import annotations

import re

import pytest

from dataprep.findings import CATALOGUE, Severity, apply_strict, exit_code, finding

# DESIGN.md's initial catalogue: these names are released and must never change
DESIGN_CODES = """packed_parquet_used_with_automodel pretokenized_input unreadable_input unknown_schema preference_data
pretraining_text output_would_overwrite_input invalid_json missing_field empty_content unknown_role no_assistant_turn
role_order invalid_tool_call non_text_content duplicate_row chat_template_missing template_render_error
system_role_unsupported system_message_dropped default_system_prompt_injected strict_alternation
generation_tags_missing prefix_unstable double_bos eos_not_trained pad_equals_eos marker_not_special_token
date_injected tools_required reasoning_dropped no_supervised_tokens truncation_drops_answers
exceeds_model_max_length oom global_batch_not_divisible""".split()


@pytest.mark.parametrize("code", DESIGN_CODES)
def test_design_codes_are_catalogued(code):
    assert code in CATALOGUE


@pytest.mark.parametrize("code", sorted(CATALOGUE))
def test_every_entry_is_snake_case_with_a_hint(code):
    spec = CATALOGUE[code]
    assert re.fullmatch(r"[a-z][a-z0-9_]*", code) and spec.code == code
    assert spec.hint.strip() and spec.summary.strip()


def test_unknown_code_is_a_programming_error():
    with pytest.raises(KeyError):
        finding("no_such_code", "x")


def test_finding_takes_catalogue_defaults_and_serializes():
    f = finding("oom", "does not fit", rows=[3, 1], gib=81.5)
    assert f.severity is Severity.ERROR and f.hint == CATALOGUE["oom"].hint
    d = f.to_dict()
    assert d == {
        "code": "oom",
        "severity": "error",
        "message": "does not fit",
        "hint": CATALOGUE["oom"].hint,
        "rows": [3, 1],
        "gib": 81.5,
    }


def test_exit_codes_follow_the_policy():
    warn = finding("duplicate_row", "dup")
    info = finding("generation_tags_missing", "no tags")
    err = finding("oom", "too big")
    assert exit_code([]) == 0
    assert exit_code([warn, info]) == 0
    assert exit_code([warn, info], strict=True) == 1
    assert exit_code([info], strict=True) == 0
    assert exit_code([info, err]) == 1
    assert [f.severity for f in apply_strict([warn, info], True)] == [Severity.ERROR, Severity.INFO]
