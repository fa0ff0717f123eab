"""The train/validation split: deterministic, order-free, duplicates on one side, streamed atomically."""

from __future__ import annotations

import hashlib
import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataprep.errors import UsageError
from dataprep.split import canonical_json, conversation_hash, side_of, split_conversations


def conv(i: int, answer: str = "ok") -> dict:
    return {
        "messages": [{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": answer}]
    }


def lines(path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def run(tmp_path, convs, frac=0.1, **kw):
    index: dict = {}
    res = split_conversations(
        list(enumerate(convs, start=1)),
        tmp_path / "train.jsonl",
        tmp_path / "validation.jsonl",
        val_fraction=frac,
        row_index=index,
        **kw,
    )
    return res, index


def test_canonical_hash_ignores_key_order():
    a = {"messages": [{"role": "user", "content": "hi"}], "tools": []}
    b = {"tools": [], "messages": [{"content": "hi", "role": "user"}]}
    assert canonical_json(a) == canonical_json(b)
    assert conversation_hash(a) == conversation_hash(b)
    assert conversation_hash(a) != conversation_hash({"messages": [{"role": "user", "content": "hi "}]})


def test_split_is_deterministic_and_order_free(tmp_path):
    convs = [conv(i) for i in range(400)]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    r1, _ = run(tmp_path / "a", convs)
    shuffled = convs[:]
    random.Random(7).shuffle(shuffled)
    r2, _ = run(tmp_path / "b", shuffled)
    v1 = {canonical_json(c) for c in lines(r1.validation_path)}
    v2 = {canonical_json(c) for c in lines(r2.validation_path)}
    assert v1 == v2 and r1.validation_rows == r2.validation_rows
    # Same input, same order: byte-identical files.
    (tmp_path / "c").mkdir()
    r3, _ = run(tmp_path / "c", convs)
    assert r3.train_sha256 == r1.train_sha256 and r3.validation_sha256 == r1.validation_sha256


def test_fraction_is_roughly_kept_and_counts_reconcile(tmp_path):
    convs = [conv(i) for i in range(2000)]
    res, index = run(tmp_path, convs, frac=0.1)
    assert res.train_rows + res.validation_rows == 2000
    assert 140 <= res.validation_rows <= 260
    assert len(lines(res.train_path)) == res.train_rows
    assert len(lines(res.validation_path)) == res.validation_rows
    assert res.train_sha256 == hashlib.sha256(res.train_path.read_bytes()).hexdigest()
    assert res.validation_sha256 == hashlib.sha256(res.validation_path.read_bytes()).hexdigest()
    # The row index maps each output line back to its input row.
    for key, path in (("train", res.train_path), ("validation", res.validation_path)):
        for row, c in zip(index[key], lines(path), strict=True):
            assert c == convs[row - 1]
    assert not res.forced_validation


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=30), min_size=2, max_size=80))
def test_exact_duplicates_never_straddle(tmp_path_factory, ids):
    tmp = tmp_path_factory.mktemp("dup")
    convs = [conv(i) for i in ids]
    res, _ = run(tmp, convs, frac=0.3)
    train = {canonical_json(c) for c in lines(res.train_path)}
    val = {canonical_json(c) for c in lines(res.validation_path)}
    assert not train & val
    assert res.rows == len(convs)
    assert res.duplicates == len(ids) - len(set(ids))


def test_small_input_still_gets_a_validation_row(tmp_path):
    convs = [conv(i) for i in range(5)] + [conv(0)]  # one exact duplicate
    res, index = run(tmp_path, convs, frac=0.001)
    lowest = min(conversation_hash(c) for c in convs)
    val = lines(res.validation_path)
    assert res.forced_validation
    assert val and all(conversation_hash(c) == lowest for c in val)
    # the duplicate follows its twin: if conv(0) is the lowest both copies moved
    moved = [c for c in convs if conversation_hash(c) == lowest]
    assert len(val) == len(moved)
    assert res.train_rows + res.validation_rows == 6
    assert sorted([*index["train"], *index["validation"]]) == list(range(1, 7))
    assert res.validation_sha256 == hashlib.sha256(res.validation_path.read_bytes()).hexdigest()
    assert not list(tmp_path.glob(".*"))  # no temp files left


def test_zero_fraction_means_no_validation(tmp_path):
    res, _ = run(tmp_path, [conv(i) for i in range(10)], frac=0.0)
    assert res.validation_rows == 0 and res.train_rows == 10
    assert res.validation_path.read_text() == ""


def test_side_of_threshold():
    assert side_of("0" * 64, 0.01) == "validation"
    assert side_of("f" * 64, 0.99) == "train"


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5])
def test_bad_fraction_is_a_usage_error(tmp_path, bad):
    with pytest.raises(UsageError):
        run(tmp_path, [conv(1)], frac=bad)


def test_failure_midway_leaves_previous_outputs(tmp_path):
    (tmp_path / "train.jsonl").write_text("old\n")

    def boom():
        yield 1, conv(1)
        raise RuntimeError("reader died")

    with pytest.raises(RuntimeError):
        split_conversations(boom(), tmp_path / "train.jsonl", tmp_path / "validation.jsonl")
    assert (tmp_path / "train.jsonl").read_text() == "old\n"
    assert not (tmp_path / "validation.jsonl").exists()
    assert not list(tmp_path.glob(".*"))
