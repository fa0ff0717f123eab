"""dataprep.sources.readers: a wrong --encoding, shard schemas, --map records, the normalize fast path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

from dataprep.errors import UnreadableInput
from dataprep.sources import open_source
from dataprep.sources.readers import Source
from tests.rows import write_jsonl

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "fixtures" / "data"


def _jsonl(path: Path, rows: list[dict]) -> Path:
    return write_jsonl(path, rows, ensure_ascii=False)


# -- 1. a wrong --encoding is unreadable_input (exit 2), never a traceback ------------------------------------


@pytest.mark.parametrize("command", ["inspect", "normalize"])
def test_latin1_csv_read_as_utf16_is_unreadable_input(cli, tmp_path, command):
    # `dataprep inspect fixtures/data/alpaca_latin1.csv --encoding utf-16` died in a traceback: the UTF-16
    # decoder's "stream does not start with BOM" is a UnicodeError, not the UnicodeDecodeError that was caught.
    src = DATA / "alpaca_latin1.csv"
    args = (
        [command, src] + ([tmp_path / "o.jsonl"] if command == "normalize" else []) + ["--encoding", "utf-16"]
    )
    r = cli(*args)
    assert r.exit_code == 2, r
    assert r.stderr.startswith(f"error[unreadable_input]: {src}: not valid utf-16 text"), r
    assert "hint: pass --encoding latin-1" in r.stderr
    assert not (tmp_path / "o.jsonl").exists()


@pytest.mark.parametrize(
    "name",
    [
        "alpaca.csv",
        "alpaca.tsv",
        "alpaca.json",
        "alpaca.jsonl",
        "alpaca.csv.gz",
        "alpaca.csv.zst",
        "alpaca.jsonl.gz",
        "alpaca.jsonl.bz2",
        "alpaca.jsonl.zst",
    ],
)
@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32"])
def test_utf8_text_read_as_a_wide_encoding_says_so(cli, name, encoding):
    # `inspect alpaca.jsonl --encoding utf-16` said "invalid JSON at column 1", hiding the wrong encoding.
    r = cli("inspect", DATA / name, "--encoding", encoding)
    assert r.exit_code == 2, r
    assert r.stderr.startswith(f"error[unreadable_input]: {DATA / name}: not valid {encoding} text"), r
    assert "it reads as UTF-8" in r.stderr and "hint: drop --encoding" in r.stderr
    assert "invalid JSON" not in r.stderr and "Traceback" not in r.stderr


def test_ascii_on_latin1_jsonl_says_the_hint_once(cli, tmp_path):
    # The line's message carried the hint ("...; pass --encoding latin-1 ...") and the hint repeated it.
    p = tmp_path / "l1.jsonl"
    p.write_bytes(
        '{"instruction": "café", "output": "olé"}\n{"instruction": "a", "output": "b"}\n'.encode("latin-1")
    )
    r = cli("inspect", p, "--encoding", "ascii")
    assert r.exit_code == 2, r
    head, hint = r.stderr.splitlines()[:2]
    assert head.startswith(f"error[unreadable_input]: {p}:1: not valid ascii text"), r
    assert "--encoding" not in head and hint.strip().startswith("hint: pass --encoding latin-1")
    assert r.stderr.count("pass --encoding") == 1
    # normalize keeps the line-by-line contract: the line is rejected, the hint is in its rejects message
    r = cli("normalize", p, tmp_path / "o.jsonl", "--encoding", "ascii")
    assert r.exit_code == 0, r
    (rej,) = [json.loads(x) for x in (tmp_path / "o.rejects.jsonl").read_text().splitlines()]
    assert rej["row"] == 1 and "real encoding (e.g. latin-1" in rej["message"] and "--" not in rej["message"]


def test_a_head_that_does_not_decode_names_its_line(cli):
    r = cli("inspect", DATA / "alpaca.tsv", "--encoding", "ascii")
    assert r.exit_code == 2, r
    assert f"{DATA / 'alpaca.tsv'}:5: not valid ascii text (byte 0xe6" in r.stderr, r


def test_a_bad_byte_past_the_head_is_unreadable_input_too(cli, tmp_path):
    # Past the head the check reads, the error comes from pyarrow's transcoder in the middle of the stream.
    p = tmp_path / "big.csv"
    p.write_bytes(
        b"instruction,input,output\n"
        + b"".join(b"q%d,,a%d\n" % (i, i) for i in range(20000))
        + b"caf\xe9,,x\n"
    )
    r = cli("normalize", p, tmp_path / "o.jsonl", "--encoding", "ascii")
    assert r.exit_code == 2, r
    assert r.stderr.startswith(f"error[unreadable_input]: {p}: not valid ascii text"), r


def test_unicode_errors_mid_stream_are_translated_without_their_traceback():
    # A UnicodeError raised from pyarrow's Python transcoder callback; the UnreadableInput must not chain it
    # (its traceback holds the pyarrow reader and the callback alive into interpreter shutdown).
    class Broken(Source):
        def _iter(self, batch_rows):
            raise UnicodeError("UTF-16 stream does not start with BOM")
            yield

    src = Broken("x.csv", "csv", files=[Path("x.csv")], encoding="utf-16")
    with pytest.raises(UnreadableInput) as err:
        list(src.batches())
    assert "not valid utf-16 text (UTF-16 stream does not start with BOM)" in err.value.finding.message
    assert err.value.__context__ is None and err.value.__cause__ is None


def test_the_real_process_exits_2(tmp_path):
    # In a real process (not click's runner): exit status 2 and a finding, no traceback, no abort.
    proc = subprocess.run(
        [sys.executable, "-c", "from dataprep.cli import main; main()", "inspect"]
        + [str(DATA / "alpaca_latin1.csv"), "--encoding", "utf-16"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "error[unreadable_input]" in proc.stderr and "Traceback" not in proc.stderr


def test_the_right_encoding_still_reads(cli):
    r = cli("inspect", DATA / "alpaca_latin1.csv", "--encoding", "cp1252", "--json")
    assert r.exit_code == 0 and r.json()["num_rows"] == 5


# -- 2. shard folders: one schema for all the shards, or a refusal naming two files ---------------------------


def _columns(cli, folder) -> list[tuple[str, str]]:
    r = cli("inspect", folder, "--json")
    assert r.exit_code == 0, r
    return [(c["name"], c["type"]) for c in r.json()["columns"]]


def test_parquet_shards_schema_is_every_shard_s(cli, tmp_path):
    # inspect showed the first shard's types; int32 in one shard and int64 in the next is int64.
    pq.write_table(
        pa.table({"instruction": ["a"], "output": ["b"], "id": pa.array([1], pa.int32())}),
        tmp_path / "0.parquet",
    )
    pq.write_table(
        pa.table({"output": ["d"], "instruction": ["c"], "id": pa.array([2], pa.int64())}),
        tmp_path / "1.parquet",
    )
    assert _columns(cli, tmp_path) == [("instruction", "string"), ("output", "string"), ("id", "int64")]
    r = cli("normalize", tmp_path, tmp_path.parent / f"{tmp_path.name}.out.jsonl", "--json")
    assert r.exit_code == 0 and r.json()["counts"]["written"] == 2, r


@pytest.mark.parametrize("command", ["inspect", "normalize"])
def test_parquet_shards_that_disagree_are_refused_naming_both(cli, tmp_path, command):
    d = tmp_path / "shards"
    d.mkdir()
    pq.write_table(pa.table({"instruction": ["a"], "output": ["b"], "id": [1]}), d / "0.parquet")
    pq.write_table(pa.table({"instruction": ["c"], "output": ["d"], "id": ["x"]}), d / "1.parquet")
    args = [command, d] + ([tmp_path / "o.jsonl"] if command == "normalize" else [])
    r = cli(*args)
    assert r.exit_code == 2, r
    assert "error[unreadable_input]" in r.stderr and "'id'" in r.stderr
    assert str(d / "0.parquet") in r.stderr and str(d / "1.parquet") in r.stderr


def test_parquet_shard_with_an_extra_column_is_refused_by_inspect_too(cli, tmp_path):
    # inspect showed the first shard's columns as the dataset's; normalize then refused the second shard.
    pq.write_table(pa.table({"instruction": ["a"], "output": ["b"]}), tmp_path / "0.parquet")
    pq.write_table(pa.table({"instruction": ["c"], "input": ["i"], "output": ["d"]}), tmp_path / "1.parquet")
    r = cli("inspect", tmp_path)
    assert r.exit_code == 2, r
    assert f"{tmp_path / '1.parquet'}: its columns differ from the first shard's" in r.stderr
    assert "'input'" in r.stderr and str(tmp_path / "0.parquet") in r.stderr


def test_arrow_shards_that_disagree_are_refused(cli, tmp_path):
    feather.write_feather(pa.table({"instruction": ["a"], "output": ["b"]}), tmp_path / "0.arrow")
    feather.write_feather(pa.table({"instruction": [1], "output": ["d"]}), tmp_path / "1.arrow")
    r = cli("inspect", tmp_path)
    assert r.exit_code == 2 and "'instruction'" in r.stderr and str(tmp_path / "1.arrow") in r.stderr, r


def test_jsonl_shards_columns_are_the_union(cli, tmp_path):
    _jsonl(tmp_path / "a.jsonl", [{"instruction": "i", "output": "o"}])
    _jsonl(tmp_path / "b.jsonl", [{"instruction": "i", "input": "x", "output": "o", "system": "s"}])
    assert [n for n, _ in _columns(cli, tmp_path)] == ["instruction", "output", "input", "system"]
    src = open_source(str(tmp_path))
    assert src.columns == ["instruction", "output", "input", "system"]


def test_jsonl_shards_whose_types_differ_still_read(tmp_path):
    # Text rows are records: a type that changes between files is not a refusal (it is not between lines).
    _jsonl(tmp_path / "a.jsonl", [{"q": "x", "id": 1}])
    _jsonl(tmp_path / "b.jsonl", [{"q": "y", "id": "two"}])
    src = open_source(str(tmp_path))
    assert src.columns == ["q", "id"]
    assert [r for b in src.batches() for r in b.records()] == [{"q": "x", "id": 1}, {"q": "y", "id": "two"}]


# -- 3. --map keeps the records exactly as written ------------------------------------------------------------


def test_map_keeps_exact_records(tmp_path):
    from dataprep.pipeline import _rename_batch

    p = _jsonl(
        tmp_path / "m.jsonl", [{"q": "Why?", "a": "Because.", "w": 1}, {"q": "Hi", "a": "Hello", "w": 1.5}]
    )
    (b,) = list(open_source(str(p)).batches())
    r = _rename_batch(b, {"instruction": "q", "output": "a"})
    assert r.table.column_names == ["instruction", "output", "w"]
    assert r.records() == [
        {"instruction": "Why?", "output": "Because.", "w": 1},
        {"instruction": "Hi", "output": "Hello", "w": 1.5},
    ]
    assert isinstance(r.records()[0]["w"], int)  # the table has it as 1.0
    # a key named as a target is replaced, as in the table; a record without a key gains no null
    p = _jsonl(tmp_path / "t.jsonl", [{"q": "x", "instruction": "old"}, {"q": "y", "extra": None}])
    (b,) = list(open_source(str(p)).batches())
    r = _rename_batch(b, {"instruction": "q"})
    assert r.records() == [{"instruction": "x"}, {"instruction": "y", "extra": None}]


# -- 4. the one-query fast path: row numbers and rejects where the batch has gaps ----------------------------


def test_fast_path_rows_with_blank_lines_and_rejects(tmp_path):
    from dataprep.normalize import normalize

    p = tmp_path / "a.jsonl"
    lines = [
        json.dumps({"instruction": "i1", "output": "o1"}),
        "",
        json.dumps({"instruction": "i2", "output": " "}),
        json.dumps({"instruction": "i3", "output": "o3"}),
    ]
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    for batch_rows in (1, 2, 8192):
        out = tmp_path / f"o{batch_rows}.jsonl"
        r = normalize(p, out, batch_rows=batch_rows)
        assert (r.read, r.written, r.rejected) == (3, 2, 1)
        assert [json.loads(x)["messages"][0]["content"] for x in out.read_text().splitlines()] == ["i1", "i3"]
        (rej,) = [json.loads(x) for x in r.rejects_path and Path(r.rejects_path).read_text().splitlines()]
        assert (rej["row"], rej["code"]) == (3, "empty_content")
