"""Property tests: what is written as JSONL/CSV/Parquet reads back equal; garbage never crashes the JSONL reader."""

from __future__ import annotations

import csv
import json
import os
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dataprep.sources import iter_records, open_source
from dataprep.sources.readers import JsonlSource

# DATAPREP_PROPS_EXAMPLES=1000 runs a deeper search (the default keeps the suite fast).
SETTINGS = settings(
    max_examples=int(os.environ.get("DATAPREP_PROPS_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.text(max_size=20)
    | st.floats(allow_nan=False, allow_infinity=False)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
records = st.lists(st.dictionaries(st.text(max_size=8), json_values, max_size=5), min_size=1, max_size=30)


def _strip_none(v):
    """Arrow tables give absent keys as null: compare records modulo null-valued keys."""
    if isinstance(v, dict):
        return {k: _strip_none(x) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        return [_strip_none(x) for x in v]
    return v


def _read(path: Path, **kw) -> tuple[list[int], list[dict], list]:
    rows, recs, errs = [], [], []
    for b in open_source(str(path), **kw).batches():
        rows += b.row_numbers()
        recs += b.records()
        errs += b.errors
    return rows, recs, errs


@SETTINGS
@given(recs=records, batch_rows=st.integers(1, 12))
def test_jsonl_round_trip(recs, batch_rows):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "r.jsonl"
        p.write_text("".join(json.dumps(r) + "\n" for r in recs), encoding="utf-8")
        rows, got, errs = _read(p, batch_rows=batch_rows)
    assert errs == []
    assert rows == list(range(1, len(recs) + 1))
    assert [_strip_none(r) for r in got] == [_strip_none(r) for r in recs]


csv_text = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\x00")
    | st.sampled_from("\n\t,\"'"),
    max_size=30,
)


@SETTINGS
@given(
    rows=st.lists(st.tuples(csv_text, csv_text, csv_text), min_size=1, max_size=30),
    batch_rows=st.integers(1, 12),
)
def test_csv_round_trip(rows, batch_rows):
    recs = [dict(zip(("a", "b", "c"), r, strict=True)) for r in rows]
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "r.csv"
        with open(p, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=["a", "b", "c"], quoting=csv.QUOTE_ALL)
            w.writeheader()
            w.writerows(recs)
        numbers, got, errs = _read(p, batch_rows=batch_rows)
    assert errs == []
    assert numbers == list(range(1, len(recs) + 1))
    assert [{k: v.replace("\r\n", "\n") for k, v in r.items()} for r in got] == [
        {k: v.replace("\r\n", "\n") for k, v in r.items()} for r in recs
    ]


@SETTINGS
@given(
    rows=st.lists(st.tuples(st.text(max_size=30), st.integers(-(2**63), 2**63 - 1)), min_size=1, max_size=40),
    batch_rows=st.integers(1, 12),
)
def test_parquet_round_trip(rows, batch_rows):
    recs = [{"text": t, "n": n} for t, n in rows]
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "r.parquet"
        pq.write_table(pa.Table.from_pylist(recs), p, row_group_size=7)
        numbers, got, errs = _read(p, batch_rows=batch_rows)
    assert (numbers, got, errs) == (list(range(1, len(recs) + 1)), recs, [])


garbage_line = st.binary(max_size=40).filter(lambda b: b"\n" not in b)
good_line = st.dictionaries(st.text(max_size=5), json_scalars, max_size=3).map(
    lambda r: json.dumps(r).encode()
)


@SETTINGS
@given(lines=st.lists(garbage_line | good_line, min_size=1, max_size=40), batch_rows=st.integers(1, 10))
def test_jsonl_garbage_never_crashes_and_counts_reconcile(lines, batch_rows):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "g.jsonl"
        p.write_bytes(b"\n".join(lines) + b"\n")
        src = JsonlSource(str(p), "jsonl", files=[p], batch_rows=batch_rows)
        seen: list[int] = []
        n_records = 0
        for b in src.batches():
            assert len(b) <= batch_rows
            seen += b.row_numbers()
            n_records += len(b)
            seen += [e.row for e in b.errors]
            assert all(e.code == "invalid_json" for e in b.errors)
        non_blank = [i for i, line in enumerate(lines, start=1) if line.strip()]
        if non_blank and lines[0].startswith(b"\xef\xbb\xbf") and not lines[0][3:].strip():
            non_blank = non_blank[1:]  # a lone UTF-8 BOM on line 1 is no content
        assert sorted(seen) == non_blank  # every non-blank line is exactly one record or one RowError
        assert src.num_rows == len(non_blank) or src.num_rows == len([x for x in lines if x.strip()])


def test_iter_records_pairs_rows_with_records(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"a": 1}\n\n{"a": 2}\n')
    assert list(iter_records(open_source(str(p)).batches())) == [(1, {"a": 1}), (3, {"a": 2})]
