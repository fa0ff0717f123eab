"""Every reader on its fixture: format, compression, rows, columns, records and row numbers."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dataprep.errors import UnreadableInput, UsageError
from dataprep.sources import Batch, RowError, iter_records, open_source

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
DATA = FIXTURES / "data"

_spec = importlib.util.spec_from_file_location("make_data", FIXTURES / "make_data.py")
make_data = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_data)
ALPACA = make_data.ALPACA
COLS = ["instruction", "input", "output"]

READABLE = [
    # (path under fixtures/data, format, compression, number of records)
    ("alpaca.jsonl", "jsonl", "none", 6),
    ("alpaca_lines.json", "jsonl", "none", 6),
    ("alpaca.jsonl.gz", "jsonl", "gzip", 6),
    ("alpaca.jsonl.bz2", "jsonl", "bz2", 6),
    ("alpaca.jsonl.zst", "jsonl", "zstd", 6),
    ("alpaca.json", "json", "none", 6),
    ("alpaca_wrapped.json", "json", "none", 6),
    ("alpaca.csv", "csv", "none", 6),
    ("alpaca_bom.csv", "csv", "none", 6),
    ("alpaca.csv.gz", "csv", "gzip", 6),
    ("alpaca.csv.zst", "csv", "zstd", 6),
    ("alpaca.tsv", "tsv", "none", 6),
    ("alpaca.parquet", "parquet", "none", 6),
    ("shards", "parquet", "none", 6),
    ("shards/*.parquet", "parquet", "none", 6),
    ("alpaca.arrow", "arrow", "none", 6),
    ("alpaca.feather", "arrow", "none", 6),
    ("hf_disk", "hf_disk", "none", 6),
    ("hf_disk_dict", "hf_disk", "none", 4),
]


def _read_all(src) -> tuple[list[int], list[dict], list[RowError]]:
    rows, recs, errs = [], [], []
    for b in src.batches():
        assert isinstance(b, Batch)
        rows += b.row_numbers()
        recs += b.records()
        errs += b.errors
    return rows, recs, errs


@pytest.mark.parametrize("rel,fmt,comp,n", READABLE, ids=[r[0] for r in READABLE])
def test_reader_reads_fixture(rel, fmt, comp, n):
    src = open_source(str(DATA / rel))
    assert (src.format, src.compression) == (fmt, comp)
    assert src.columns == COLS
    assert src.num_rows == n and src.num_rows_exact
    rows, recs, errs = _read_all(src)
    assert errs == []
    assert rows == list(range(1, n + 1))
    expected = ALPACA[:n]
    if fmt == "tsv":  # the TSV fixture has its newlines flattened (TSV cannot quote them)
        expected = [{k: v.replace("\n", " ") for k, v in r.items()} for r in expected]
    assert recs == expected


def test_small_batches_split_and_number_rows_across_shards():
    src = open_source(str(DATA / "shards"), batch_rows=4)
    batches = list(src.batches())
    assert [len(b) for b in batches] == [4, 2]
    assert [r for r, _ in iter_records(iter(batches))] == [1, 2, 3, 4, 5, 6]
    assert all(b.table is not None for b in batches)


@pytest.mark.parametrize("rel", ["alpaca.arrow", "alpaca.csv", "alpaca.json", "hf_disk"])
def test_batch_rows_is_an_upper_bound(rel):
    src = open_source(str(DATA / rel), batch_rows=4)
    sizes = [len(b) for b in src.batches()]
    assert sizes == [4, 2]


def test_jsonl_larger_than_batch_rows_yields_several_batches(tmp_path):
    p = tmp_path / "big.jsonl"
    p.write_text("".join(json.dumps({"i": i, "text": f"row {i}"}) + "\n" for i in range(1050)))
    batches = list(open_source(str(p), batch_rows=100).batches())
    assert len(batches) == 11
    assert all(len(b) <= 100 for b in batches)
    assert [r["i"] for _, r in iter_records(iter(batches))] == list(range(1050))
    assert batches[3].row_numbers()[0] == 301


def test_jsonl_bad_lines_become_row_errors_and_blank_lines_count():
    src = open_source(str(DATA / "bad" / "invalid_line.jsonl"))
    rows, recs, errs = _read_all(src)
    assert rows == [1, 2, 5]  # line 3 is invalid, line 4 blank
    assert [r["instruction"] for r in recs] == [
        ALPACA[0]["instruction"],
        ALPACA[1]["instruction"],
        ALPACA[2]["instruction"],
    ]
    assert len(errs) == 1
    e = errs[0]
    assert (e.row, e.code) == (3, "invalid_json")
    assert e.raw.startswith('{"instruction": "oops"')
    assert src.num_rows == 4  # every non-blank line is a record or a RowError


def test_jsonl_irregular_records_fall_back_to_records(tmp_path):
    p = tmp_path / "mixed.jsonl"
    lines = [{"a": 1}, {"a": "text"}, [1, 2], {"b": {"c": None}}]
    p.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    (b,) = list(open_source(str(p)).batches())
    assert b.table is None
    assert b.records() == [{"a": 1}, {"a": "text"}, {"b": {"c": None}}]
    assert b.row_numbers() == [1, 2, 4]
    assert [(e.row, e.code) for e in b.errors] == [(3, "invalid_json")]
    assert "not an object" in b.errors[0].message


def test_jsonl_dates_stay_strings(tmp_path):
    # pyarrow's JSON reader would turn these into timestamps; text must stay text.
    p = tmp_path / "dates.jsonl"
    p.write_text('{"q": "2020-01-01", "a": "2020-01-01 10:00:00"}\n')
    (b,) = list(open_source(str(p)).batches())
    assert b.records() == [{"q": "2020-01-01", "a": "2020-01-01 10:00:00"}]


def test_raw_text_of_a_bad_line_is_cut(tmp_path):
    p = tmp_path / "long.jsonl"
    p.write_text('{"a": "' + "x" * 5000 + "\n")
    (b,) = list(open_source(str(p)).batches())
    assert len(b.errors[0].raw) <= 2001


def test_latin1_needs_encoding():
    with pytest.raises(UnreadableInput) as err:
        list(open_source(str(DATA / "alpaca_latin1.csv")).batches())
    assert "pass encoding latin-1" in err.value.finding.hint
    src = open_source(str(DATA / "alpaca_latin1.csv"), encoding="latin-1")
    recs = [r for _, r in iter_records(src.batches())]
    assert {"instruction": "Name a café drink.", "input": "", "output": "A crème brûlée latte."} in recs


def test_latin1_jsonl_with_encoding(tmp_path):
    p = tmp_path / "l1.jsonl"
    p.write_bytes('{"q": "café"}\n'.encode("latin-1"))
    _, recs, errs = _read_all(open_source(str(p), encoding="latin-1"))
    assert recs == [{"q": "café"}] and errs == []
    _, recs, errs = _read_all(open_source(str(p)))
    assert recs == [] and "real encoding (e.g. latin-1" in errs[0].message


def test_unknown_encoding_is_a_usage_error():
    with pytest.raises(UsageError):
        open_source(str(DATA / "alpaca.csv"), encoding="no-such-codec")


def test_csv_keeps_every_column_as_text(tmp_path):
    p = tmp_path / "nums.csv"
    p.write_text("id,text\n1,a\n2,b\nx3,c\n")
    (b,) = list(open_source(str(p)).batches())
    assert b.table.schema.types == [pa.string(), pa.string()]
    assert b.records()[2] == {"id": "x3", "text": "c"}


@pytest.mark.parametrize(
    "rel,needle,line",
    [
        ("bad/empty.jsonl", "empty file", None),
        ("bad/truncated.jsonl.gz", "truncated gzip", None),
        ("bad/ragged.csv", "data row 2 has 4 fields", 3),
        ("bad/garbage.bin", "binary data", None),
        ("bad/mixed", "mixing formats", None),
        ("bad/not_a_pack.npy", "NumPy array", None),
        ("alpaca.jsonl.idx.npy", "index sidecar of alpaca.jsonl", None),
        ("nope.jsonl", "no such file", None),
    ],
)
def test_unreadable_inputs_raise_naming_the_path(rel, needle, line):
    path = str(DATA / rel)
    with pytest.raises(UnreadableInput) as err:
        src = open_source(path)
        list(src.batches())
    msg = err.value.finding.message
    assert needle in msg
    assert msg.startswith(path + (f":{line}:" if line else ":"))
    assert err.value.finding.code == "unreadable_input"


def test_truncated_zstd_and_bz2(tmp_path):
    for name, data in (
        ("t.jsonl.zst", (DATA / "alpaca.jsonl.zst").read_bytes()),
        ("t.jsonl.bz2", (DATA / "alpaca.jsonl.bz2").read_bytes()),
    ):
        p = tmp_path / name
        p.write_bytes(data[: len(data) // 2])
        with pytest.raises(UnreadableInput, match="corrupt or truncated"):
            list(open_source(str(p)).batches())


def test_permission_denied(tmp_path, monkeypatch):
    p = tmp_path / "secret.jsonl"
    p.write_text('{"a": 1}\n')
    p.chmod(0)
    if os.geteuid() == 0:  # root reads every file: make the check see what a user would
        import dataprep.sources.readers as readers

        monkeypatch.setattr(readers.os, "access", lambda path, mode: False)
    with pytest.raises(UnreadableInput, match="permission denied"):
        open_source(str(p))


def test_empty_glob_and_empty_dir(tmp_path):
    with pytest.raises(UnreadableInput, match="no file matches"):
        open_source(str(tmp_path / "*.parquet"))
    with pytest.raises(UnreadableInput, match="no data files"):
        open_source(str(tmp_path))


def test_several_jsonl_files_are_read_in_order_with_continuing_row_numbers(tmp_path):
    shutil.copy(DATA / "alpaca.jsonl", tmp_path / "a.jsonl")
    shutil.copy(DATA / "bad" / "invalid_line.jsonl", tmp_path / "b.jsonl")
    src = open_source(str(tmp_path), batch_rows=4)
    assert (src.format, src.num_rows, src.num_rows_exact) == ("jsonl", 10, True)
    rows, recs, errs = _read_all(src)
    assert rows == [1, 2, 3, 4, 5, 6, 7, 8, 11]  # b.jsonl's lines 1, 2, 5 after a.jsonl's 6 lines
    assert [(e.row, e.code) for e in errs] == [(9, "invalid_json")]
    assert recs[:6] == ALPACA


def test_csv_and_jsonl_in_one_folder_are_refused(tmp_path):
    shutil.copy(DATA / "alpaca.jsonl", tmp_path / "a.jsonl")
    shutil.copy(DATA / "alpaca.csv", tmp_path / "b.csv")
    with pytest.raises(UnreadableInput, match="mixing formats"):
        open_source(str(tmp_path))


def test_hf_disk_dict_reads_train_split():
    src = open_source(str(DATA / "hf_disk_dict"))
    assert src.detail["split"] == "train" and sorted(src.detail["splits"]) == ["test", "train"]
    assert src.data_format == "arrow"


def test_hf_hub_cache_id(tmp_path, monkeypatch):
    home = Path(os.environ["HF_HOME"])
    repo = home / "hub" / "datasets--acme--alpaca-mini"
    snap = repo / "snapshots" / "abc123"
    (snap / "data").mkdir(parents=True)
    table = pa.Table.from_pylist(ALPACA)
    pq.write_table(table.slice(0, 5), snap / "data" / "train-00000-of-00001.parquet")
    pq.write_table(table.slice(5), snap / "data" / "test-00000-of-00001.parquet")
    (snap / "README.md").write_text("# card\n")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    src = open_source("acme/alpaca-mini")
    assert (src.format, src.data_format, src.num_rows) == ("hf_hub", "parquet", 5)
    assert src.detail["cache"] == "hub" and src.detail["revision"] == "abc123"
    assert [r for _, r in iter_records(src.batches())] == ALPACA[:5]


def test_hf_hub_cache_dir_env_wins(tmp_path, monkeypatch):
    hub = tmp_path / "elsewhere"
    snap = hub / "datasets--acme--chat" / "snapshots" / "r1"
    snap.mkdir(parents=True)
    shutil.copy(DATA / "chat.jsonl", snap / "train.jsonl")
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    src = open_source("acme/chat")
    assert (src.format, src.data_format, src.num_rows) == ("hf_hub", "jsonl", 3)


def test_hf_datasets_cache_id(tmp_path, monkeypatch):
    cache = tmp_path / "dscache"
    d = cache / "acme___alpaca" / "default" / "0.0.0" / "f00d"
    d.mkdir(parents=True)
    shutil.copy(DATA / "hf_disk" / "data-00000-of-00001.arrow", d / "alpaca-train.arrow")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
    src = open_source("acme/alpaca")
    assert (src.format, src.data_format, src.num_rows) == ("hf_hub", "arrow", 6)
    assert src.detail["cache"] == "datasets"


def test_missing_hub_id_names_where_it_looked():
    with pytest.raises(UnreadableInput) as err:
        open_source("acme/not-there")
    assert "local Hugging Face cache" in err.value.finding.message
    assert os.environ["HF_HOME"] in err.value.finding.message


def test_stdin(monkeypatch):
    import io
    import sys

    class FakeStdin:
        buffer = io.BytesIO((DATA / "alpaca.jsonl").read_bytes())

    monkeypatch.setattr(sys, "stdin", FakeStdin)
    src = open_source("-")
    assert (src.format, src.data_format, src.path) == ("stdin", "jsonl", "-")
    assert src.columns == COLS
    assert [r for _, r in iter_records(src.batches())] == ALPACA


def test_large_text_row_count_is_an_estimate(tmp_path, monkeypatch):
    import dataprep.sources.readers as readers

    p = tmp_path / "big.jsonl"
    p.write_text("".join(json.dumps({"i": i, "text": "x" * (i % 7)}) + "\n" for i in range(5000)))
    monkeypatch.setattr(readers, "EXACT_COUNT_MAX_BYTES", 1000)
    src = open_source(str(p))
    assert src.num_rows_exact is False
    assert 4000 < src.num_rows < 6000


def test_parquet_shards_with_different_columns(tmp_path):
    pq.write_table(pa.table({"a": ["x"]}), tmp_path / "0.parquet")
    pq.write_table(pa.table({"b": ["y"]}), tmp_path / "1.parquet")
    with pytest.raises(UnreadableInput, match="differ from the first shard"):
        list(open_source(str(tmp_path)).batches())


@pytest.mark.parametrize("batch_rows", [1, 2, 5, 8192])
def test_head_does_not_depend_on_batch_rows(tmp_path, batch_rows):
    p = tmp_path / "h.jsonl"
    p.write_text('{}\n{"a": 1}\n{"b": [null]}\n{"a": 2}\n')
    src = open_source(str(p), batch_rows=batch_rows)
    assert src.head() == [{}, {"a": 1}, {"b": [None]}, {"a": 2}]
    assert src.head(2) == [{}, {"a": 1}]
    assert open_source(str(DATA / "alpaca.parquet"), batch_rows=batch_rows).head(300) == ALPACA


def test_jsonl_records_are_the_lines_as_written_even_with_a_table(tmp_path):
    p = tmp_path / "sparse.jsonl"
    p.write_text('{"a": 1}\n{"b": "x"}\n')
    (b,) = list(open_source(str(p)).batches())
    assert b.table is not None and b.table.column_names == ["a", "b"]  # Arrow: absent keys are null
    assert b.records() == [{"a": 1}, {"b": "x"}]  # records: exactly the lines
