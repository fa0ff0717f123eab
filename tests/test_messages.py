"""validate_conversation: each invariant, its code, and the message index it names."""

from __future__ import annotations

import pytest

from dataprep.findings import CATALOGUE
from dataprep.messages import validate_conversation


def u(text="hi"):
    return {"role": "user", "content": text}


def a(text="hello", **kw):
    return {"role": "assistant", "content": text, **kw}


def call(id_="c1", name="f", args='{"x": 1}'):
    return {"id": id_, "type": "function", "function": {"name": name, "arguments": args}}


def codes(conv):
    return [(p.code, p.index) for p in validate_conversation(conv)]


def test_valid_conversation_with_tools_and_reasoning():
    conv = {
        "messages": [
            {"role": "system", "content": "sys"},
            u(),
            a("", tool_calls=[call()]),
            {"role": "tool", "content": "", "tool_call_id": "c1"},
            a("done", reasoning_content="thought"),
        ],
        "tools": [{"type": "function", "function": {"name": "f"}}],
    }
    assert validate_conversation(conv) == []


@pytest.mark.parametrize(
    ("conv", "expected"),
    [
        ({}, [("missing_field", None)]),
        ({"messages": []}, [("missing_field", None)]),
        ("text", [("missing_field", None)]),
        ({"messages": [u(), {"role": "gpt", "content": "x"}, a()]}, [("unknown_role", 1)]),
        ({"messages": [u(), a(None)]}, [("missing_field", 1)]),
        ({"messages": [u("  "), a()]}, [("empty_content", 0)]),
        ({"messages": [u(), a(" \n")]}, [("empty_content", 1)]),
        ({"messages": [u()]}, [("no_assistant_turn", None)]),
        ({"messages": [u(), {"role": "system", "content": "s"}, a()]}, [("role_order", 1)]),
        (
            {"messages": [u(), {"role": "tool", "content": "r", "tool_call_id": "zz"}, a()]},
            [("role_order", 1)],
        ),
        (
            {"messages": [u(), a("", tool_calls=[call()]), {"role": "tool", "content": "r"}, a()]},
            [("invalid_tool_call", 2)],
        ),
        ({"messages": [u(), a("", tool_calls=[call(args="{bad")]), a()]}, [("invalid_tool_call", 1)]),
        ({"messages": [u(), a("", tool_calls=[call(args={"x": 1})]), a()]}, [("invalid_tool_call", 1)]),
        ({"messages": [u(), a("", tool_calls=[call(id_="")]), a()]}, [("invalid_tool_call", 1)]),
        (
            {
                "messages": [
                    u(),
                    a(
                        "",
                        tool_calls=[
                            {"id": "c", "type": "code", "function": {"name": "f", "arguments": "{}"}}
                        ],
                    ),
                    a(),
                ]
            },
            [("invalid_tool_call", 1)],
        ),
        ({"messages": [u(), a(reasoning_content=["x"])]}, [("missing_field", 1)]),
        ({"messages": [u(), a()], "tools": "nope"}, [("invalid_tool_call", None)]),
        (
            {"messages": [{"role": "user", "content": "x", "tool_calls": [call()]}, a()]},
            [("invalid_tool_call", 0)],
        ),
    ],
)
def test_each_invariant_has_its_code_and_index(conv, expected):
    assert codes(conv) == expected


def test_messages_name_the_index():
    problems = validate_conversation({"messages": [u(), a(), {"role": "system", "content": "late"}]})
    assert problems[0].message == "system message at index 2; system goes only first"


def test_every_problem_code_is_catalogued():
    samples = [{}, {"messages": [u(), {"role": "x", "content": "y"}]}, {"messages": [u()]}]
    for conv in samples:
        for p in validate_conversation(conv):
            assert p.code in CATALOGUE


def test_tool_call_id_must_come_from_an_earlier_call():
    later = {
        "messages": [
            u(),
            {"role": "tool", "content": "r", "tool_call_id": "c1"},
            a("", tool_calls=[call()]),
            a(),
        ]
    }
    assert ("role_order", 1) in codes(later)
