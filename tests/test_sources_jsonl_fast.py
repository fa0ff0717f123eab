"""The block JSONL reader gives what reading line by line gives: rows, records, errors, batch cuts, columns.

The reference is the per-line reader (each run of ``batch_rows`` non-blank lines through ``parse_jsonl_chunk``).
Tiny blocks put lines across block edges, batches across blocks, bad lines at the edges.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dataprep.sources.jsonl as jsonl
from dataprep.sources import open_source
from dataprep.sources.jsonl import count_jsonl, iter_jsonl, parse_jsonl_chunk
from dataprep.sources.sniff import UTF8_BOM

DATA = Path(__file__).resolve().parent.parent / "fixtures" / "data"
SETTINGS = settings(
    max_examples=int(os.environ.get("DATAPREP_PROPS_EXAMPLES", "120")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def reference(data: bytes, batch_rows: int, encoding: str | None = None) -> list:
    """The per-line reader: line by line, blank lines skipped but counted, batch_rows non-blank lines a batch."""
    out, chunk = [], []
    for lineno, raw in enumerate(io.BytesIO(data), start=1):
        if lineno == 1:
            raw = raw.removeprefix(UTF8_BOM)
        if not raw.strip():
            continue
        chunk.append((lineno, raw))
        if len(chunk) >= batch_rows:
            out.append(parse_jsonl_chunk(chunk, encoding))
            chunk = []
    if chunk:
        out.append(parse_jsonl_chunk(chunk, encoding))
    return out


def blocks(data: bytes, batch_rows: int, block_bytes: int, encoding: str | None = None) -> list:
    return list(iter_jsonl(io.BytesIO(data), batch_rows, encoding, block_bytes=block_bytes))


def assert_same(got: list, want: list) -> None:
    assert [len(b) for b in got] == [len(b) for b in want]
    assert [b.row_numbers() for b in got] == [b.row_numbers() for b in want]
    assert [b.start for b in got] == [b.start for b in want]
    assert [b.errors for b in got] == [b.errors for b in want]
    assert [b.records() for b in got] == [b.records() for b in want]
    for g, w in zip(got, want, strict=True):
        if g.table is not None and w.table is not None:
            # the batch's own keys (a block's other lines do not add columns); the order may differ
            assert sorted(g.table.column_names) == sorted(w.table.column_names)
    union = lambda bs: list(  # noqa: E731
        dict.fromkeys(c for b in bs if b.table is not None for c in b.table.column_names)
    )
    if all(b.table is not None for b in got + want):
        assert union(got) == union(want)


# -- properties ---------------------------------------------------------------------------------------------------
keys = st.sampled_from(["a", "b", "c", "instruction", "output", "é"])
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(["2020-01-01", "2020-01-01 10:00:00", "", "null", "[null]"])
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
    max_leaves=8,
)
objects = st.dictionaries(keys, values, max_size=4)
good_line = st.builds(
    lambda o, ascii_, pad: (pad + json.dumps(o, ensure_ascii=ascii_)).encode("utf-8"),
    objects,
    st.booleans(),
    st.sampled_from(["", "", "", " ", "\t"]),
)
flat_line = st.builds(
    lambda o: json.dumps(o).encode(),
    st.dictionaries(keys, st.text(max_size=10) | st.integers(0, 9), max_size=3),
)
blank_line = st.sampled_from([b"", b"", b"  ", b"\t", b"\r", b"\x0c", b" \x0b "])
bad_line = st.sampled_from(
    [
        b"{",
        b"}",
        b"nope",
        b"[1, 2]",
        b"42",
        b'"text"',
        b"null",
        b'{"a": 1} {"b": 2}',
        b'{"a": 1}{"b": 2}',
        b'{"a": 1},{"b": 2}',
        b'{"a":',
        b'{"a": 1, "a": 2}',
        b'{"a": "\xc3"}',
        b"\xff\xfe{}",
        b'{"a": 1} x',
        b'{"a": 123456789012345678901}',
        b'{"a": [null, []]}',
    ]
)
lines_st = st.lists(st.one_of(good_line, flat_line, flat_line, blank_line, bad_line), min_size=1, max_size=30)


def join(lines: list[bytes], crlf: bool, final_newline: bool, bom: bool) -> bytes:
    eol = b"\r\n" if crlf else b"\n"
    data = eol.join(lines) + (eol if final_newline else b"")
    return (UTF8_BOM if bom else b"") + data


@SETTINGS
@given(
    lines=lines_st,
    crlf=st.booleans(),
    final_newline=st.booleans(),
    bom=st.booleans(),
    batch_rows=st.integers(1, 12),
    block_bytes=st.integers(1, 300),
)
def test_blocks_read_as_lines_do(lines, crlf, final_newline, bom, batch_rows, block_bytes):
    data = join(lines, crlf, final_newline, bom)
    assert_same(blocks(data, batch_rows, block_bytes), reference(data, batch_rows))
    assert count_jsonl(io.BytesIO(data), block_bytes=block_bytes) == sum(
        len(b) + len(b.errors) for b in reference(data, batch_rows)
    )


@SETTINGS
@given(
    lines=st.lists(st.one_of(flat_line, blank_line), min_size=1, max_size=60),
    batch_rows=st.integers(1, 12),
    block_bytes=st.integers(1, 400),
)
def test_clean_flat_records_read_through_tables(lines, batch_rows, block_bytes):
    data = b"\n".join(lines) + b"\n"
    got = blocks(data, batch_rows, block_bytes)
    assert_same(got, reference(data, batch_rows))


@SETTINGS
@given(lines=lines_st, batch_rows=st.integers(1, 6), block_bytes=st.integers(1, 120))
def test_other_encodings_read_line_by_line(lines, batch_rows, block_bytes):
    data = b"\n".join(lines) + b"\n"
    assert_same(blocks(data, batch_rows, block_bytes, "latin-1"), reference(data, batch_rows, "latin-1"))


# -- block edges --------------------------------------------------------------------------------------------------
def _lines(n: int, **extra) -> list[bytes]:
    return [json.dumps({"i": i, "text": f"row {i}" * (i % 5), **extra}).encode() for i in range(n)]


@pytest.mark.parametrize("block_bytes", [1, 7, 64, 100, 1 << 20])
def test_a_line_spanning_blocks_and_a_final_line_without_newline(block_bytes):
    data = b"\n".join(_lines(40))  # no final newline
    got = blocks(data, 8, block_bytes)
    assert_same(got, reference(data, 8))
    assert [r["i"] for b in got for r in b.records()] == list(range(40))
    assert all(b.table is not None for b in got)  # the whole file went through pyarrow


def test_crlf_and_blank_lines_count_as_lines():
    data = b'{"a": 1}\r\n\r\n  \r\n{"a": 2}\r\n\n{"a": 3}'
    (b,) = blocks(data, 10, 5)
    assert b.table is not None
    assert b.row_numbers() == [1, 4, 6]
    assert b.records() == [{"a": 1}, {"a": 2}, {"a": 3}]


def test_a_bad_line_at_a_block_edge_only_costs_its_batch():
    good = _lines(30)
    data = b"\n".join([*good[:12], b'{"broken": ', *good[12:]]) + b"\n"
    for block_bytes in (len(b"\n".join(good[:12])) + 1, 64, 1 << 20):
        got = blocks(data, 5, block_bytes)
        assert_same(got, reference(data, 5))
        errors = [e for b in got for e in b.errors]
        assert [(e.row, e.code) for e in errors] == [(13, "invalid_json")]
        assert [r["i"] for b in got for r in b.records()] == list(range(30))


def test_objects_running_over_lines_are_not_taken_from_pyarrow():
    # pyarrow reads 3 rows here, as many as the lines: each line must still be judged on its own.
    data = b'{"x": 1}{"y": 2}\n{"b": 2\n}\n'
    (b,) = blocks(data, 10, 1 << 20)
    assert b.records() == []
    assert [e.row for e in b.errors] == [1, 2, 3]


@pytest.mark.parametrize(
    "line",
    [
        b'{"d": "2020-01-01"}',  # pyarrow: a timestamp
        b'{"n": 12345678901234567890123, "f": 1.5}',  # pyarrow: a double
        b'{"l": [null, []]}',  # pyarrow: [[], []]
    ],
)
def test_what_pyarrow_misreads_stays_exact(line):
    data = b"\n".join([*_lines(20), line, *_lines(20)]) + b"\n"
    got = blocks(data, 8, 1 << 20)
    assert_same(got, reference(data, 8))
    assert json.loads(line) in [r for b in got for r in b.records()]


def test_columns_are_the_batch_own_keys():
    data = b"\n".join([b'{"a": "x"}'] * 5 + [b'{"b": "y"}'] * 5) + b"\n"
    got = blocks(data, 5, 1 << 20)
    assert [b.table.column_names for b in got] == [["a"], ["b"]]
    assert [b.records() for b in got] == [[{"a": "x"}] * 5, [{"b": "y"}] * 5]


def test_explicit_null_keys_keep_their_column():
    data = b'{"a": "x", "b": null}\n{"a": "y"}\n{"c": "z"}\n'
    got = blocks(data, 2, 1 << 20)
    assert [b.table.column_names for b in got] == [["a", "b"], ["c"]]


def test_a_type_change_between_blocks_falls_back_for_the_joining_batch_only():
    data = b"\n".join([b'{"a": 1}'] * 6 + [b'{"a": "text"}'] * 6) + b"\n"
    got = blocks(data, 4, 6 * 9)  # the first block holds the six int lines; batch 2 joins both blocks
    assert_same(got, reference(data, 4))
    assert [b.table is not None for b in got] == [True, False, True]


def test_records_are_exact_with_numbers_and_unicode():
    lines = [
        json.dumps({"q": "naïve café", "n": 1}, ensure_ascii=False).encode(),
        json.dumps({"q": "x", "n": 2.0}).encode(),
        b'{"q": "\\ud83d\\ude00", "n": -0}',
    ]
    data = b"\n".join(lines) + b"\n"
    (b,) = blocks(data, 10, 1 << 20)
    assert b.records() == [json.loads(x) for x in lines]
    assert isinstance(b.records()[1]["n"], float)


def test_non_utf8_block_goes_line_by_line():
    data = b'{"a": "ok"}\n{"a": "caf\xe9"}\n{"a": "ok"}\n'
    got = blocks(data, 10, 1 << 20)
    assert_same(got, reference(data, 10))
    assert [(e.row, e.code) for b in got for e in b.errors] == [(2, "invalid_json")]


@pytest.mark.parametrize("rel", ["alpaca.jsonl", "alpaca.jsonl.gz", "alpaca.jsonl.bz2", "alpaca.jsonl.zst"])
def test_compressed_inputs_in_small_blocks(rel, monkeypatch):
    monkeypatch.setattr(jsonl, "BLOCK_BYTES", 97)
    small = open_source(str(DATA / rel), batch_rows=4)
    monkeypatch.setattr(jsonl, "BLOCK_BYTES", 1 << 23)
    whole = open_source(str(DATA / rel), batch_rows=4)
    a, b = list(small.batches()), list(whole.batches())
    assert_same(a, b)
    assert small.num_rows == whole.num_rows == 6


def test_large_file_uses_tables_and_counts(tmp_path, monkeypatch):
    monkeypatch.setattr(jsonl, "BLOCK_BYTES", 4096)
    p = tmp_path / "big.jsonl.gz"
    with gzip.open(p, "wb") as fh:
        fh.write(b"\n".join(_lines(3000)) + b"\n")
    src = open_source(str(p), batch_rows=1000)
    got = list(src.batches())
    assert [len(b) for b in got] == [1000, 1000, 1000]
    assert all(b.table is not None for b in got)
    assert [b.start for b in got] == [1, 1001, 2001]
    assert src.num_rows == 3000


def test_stdin_copy_is_read_in_blocks(tmp_path, monkeypatch):
    import sys

    monkeypatch.setattr(jsonl, "BLOCK_BYTES", 50)
    shutil.copy(DATA / "alpaca.jsonl", tmp_path / "in.jsonl")

    class FakeStdin:
        buffer = io.BytesIO((tmp_path / "in.jsonl").read_bytes())

    monkeypatch.setattr(sys, "stdin", FakeStdin)
    recs = [r for b in open_source("-").batches() for r in b.records()]
    want = [json.loads(x) for x in (tmp_path / "in.jsonl").read_bytes().splitlines() if x.strip()]
    assert recs == want


def test_records_stay_exact_across_jsonl_files(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"a": 1}\n{"b": "x"}\n')
    (tmp_path / "b.jsonl").write_text('{"a": 2}\n\n{"c": "y"}\n')
    batches = list(open_source(str(tmp_path)).batches())
    assert [r for b in batches for r in b.row_numbers()] == [1, 2, 3, 5]
    assert [r for b in batches for r in b.records()] == [{"a": 1}, {"b": "x"}, {"a": 2}, {"c": "y"}]
