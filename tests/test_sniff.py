"""Sniffing goes by content first: magic bytes for compression and binary formats, then the text itself."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from dataprep.errors import UnreadableInput
from dataprep.sources import open_source, sniff_file
from dataprep.sources.sniff import text_format

DATA = Path(__file__).resolve().parent.parent / "fixtures" / "data"


@pytest.mark.parametrize(
    "src,fmt,comp",
    [
        ("alpaca.jsonl.gz", "jsonl", "gzip"),
        ("alpaca.jsonl.bz2", "jsonl", "bz2"),
        ("alpaca.jsonl.zst", "jsonl", "zstd"),
        ("alpaca.csv.gz", "csv", "gzip"),
        ("alpaca.parquet", "parquet", "none"),
        ("alpaca.arrow", "arrow", "none"),
        ("alpaca.feather", "arrow", "none"),
        ("hf_disk/data-00000-of-00001.arrow", "arrow", "none"),
        ("alpaca.tsv", "tsv", "none"),
        ("alpaca.json", "json", "none"),
        ("alpaca_wrapped.json", "json", "none"),
        ("nemo/training_2048.npy", "npy", "none"),
    ],
)
def test_content_wins_over_a_meaningless_name(tmp_path, src, fmt, comp):
    blob = tmp_path / "data.bin"  # no useful extension at all
    shutil.copy(DATA / src, blob)
    assert (sniff_file(blob).format, sniff_file(blob).compression) == (fmt, comp)


def test_json_name_holding_jsonl_is_jsonl():
    assert sniff_file(DATA / "alpaca_lines.json").format == "jsonl"


def test_gz_name_on_plain_text_is_not_decompressed(tmp_path):
    p = tmp_path / "plain.jsonl.gz"
    p.write_text('{"a": 1}\n')
    s = sniff_file(p)
    assert (s.format, s.compression) == ("jsonl", "none")


def test_csv_with_bom():
    assert sniff_file(DATA / "alpaca_bom.csv").format == "csv"
    assert open_source(str(DATA / "alpaca_bom.csv")).columns[0] == "instruction"  # no "\ufeffinstruction"


def test_tab_separated_content_under_a_csv_name(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("a\tb\n1\t2\n")
    assert sniff_file(p).format == "tsv"


@pytest.mark.parametrize(
    "text,name,expected",
    [
        ('{"data": [{"a": 1}, {"a": 2}]}', "x.json", "json"),  # one object holding one list of records
        ('{"messages": [{"role": "user", "content": "hi"}]}', "x.json", "jsonl"),  # one chat record
        ('{"data": [{"a": 1}]}', "x.jsonl", "jsonl"),  # the extension settles a one-line tie
        ('{"a": 1}\n{"a": 2}\n', "x.json", "jsonl"),
        ('{\n  "a": 1\n}\n', "x.json", "json"),  # pretty-printed
        ("[\n{}\n]", "x.jsonl", "json"),
        ("not json at all", "x.jsonl", "jsonl"),  # read as JSONL so line 1 is named as invalid
        ("a,b\n1,2\n", "x.txt", "csv"),
    ],
)
def test_text_format(text, name, expected):
    assert text_format(text.encode(), name, complete=True) == expected


def test_gzip_of_jsonl_under_a_json_name(tmp_path):
    p = tmp_path / "data.json"
    p.write_bytes(gzip.compress(b"".join(json.dumps({"i": i}).encode() + b"\n" for i in range(3))))
    src = open_source(str(p))
    assert (src.format, src.compression, src.num_rows) == ("jsonl", "gzip", 3)


@pytest.mark.parametrize(
    "data,needle",
    [
        (b"", "empty file"),
        (b"  \n\n", "empty file"),
        (gzip.compress(b""), "empty file (after gzip)"),
        (bytes(range(256)) * 4, "binary data"),
        (b"PK\x03\x04rest-of-zip", "zip archive"),
        ('{"a": "b"}\n'.encode("utf-16"), "UTF-16 text"),
        (gzip.compress(b"PAR1...."), "Parquet/Arrow"),
    ],
)
def test_unreadable_by_content(tmp_path, data, needle):
    p = tmp_path / "input.jsonl"
    p.write_bytes(data)
    with pytest.raises(UnreadableInput) as err:
        sniff_file(p)
    assert needle in err.value.finding.message
    assert err.value.finding.message.startswith(str(p) + ": ")


def test_latin1_text_is_not_binary(tmp_path):
    p = tmp_path / "l.csv"
    p.write_bytes("a,b\ncafé,crème\n".encode("latin-1"))
    assert sniff_file(p).format == "csv"
