"""``dataprep inspect``: names every fixture's format, refuses packed data (exit 1), bad input exits 2 in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.rows import chat, write_jsonl

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "fixtures" / "data"
PACKED_HINT = (
    "AutoModel reads chat JSONL: point it at the source JSONL, or train packed data with sft/megatron_bridge"
)

FORMATS = [
    ("alpaca.jsonl", "jsonl", "none"),
    ("alpaca_lines.json", "jsonl", "none"),
    ("alpaca.jsonl.gz", "jsonl", "gzip"),
    ("alpaca.jsonl.bz2", "jsonl", "bz2"),
    ("alpaca.jsonl.zst", "jsonl", "zstd"),
    ("alpaca.json", "json", "none"),
    ("alpaca_wrapped.json", "json", "none"),
    ("alpaca.csv", "csv", "none"),
    ("alpaca_bom.csv", "csv", "none"),
    ("alpaca.csv.gz", "csv", "gzip"),
    ("alpaca.csv.zst", "csv", "zstd"),
    ("alpaca.tsv", "tsv", "none"),
    ("alpaca.parquet", "parquet", "none"),
    ("shards", "parquet", "none"),
    ("alpaca.arrow", "arrow", "none"),
    ("alpaca.feather", "arrow", "none"),
    ("hf_disk", "hf_disk", "none"),
    ("hf_disk_dict", "hf_disk", "none"),
    ("chat.jsonl", "jsonl", "none"),
    ("chat.parquet", "parquet", "none"),
]


@pytest.mark.parametrize("rel,fmt,comp", FORMATS, ids=[f[0] for f in FORMATS])
def test_inspect_names_the_format(cli, rel, fmt, comp):
    r = cli("inspect", DATA / rel, "--json")
    assert r.exit_code == 0, r
    doc = r.json()
    assert (doc["format"], doc["compression"]) == (fmt, comp)
    assert doc["num_rows"] in (3, 4, 6) and doc["num_rows_exact"] is True
    assert doc["columns"] and all(set(c) == {"name", "type"} for c in doc["columns"])
    assert 1 <= len(doc["sample"]) <= 3
    assert doc["packed"] == {"packed": False, "kind": None, "evidence": doc["packed"]["evidence"]}
    assert "shape" in doc
    assert [f for f in doc["findings"] if f["severity"] == "error"] == []


def test_inspect_json_document(cli):
    doc = cli("inspect", DATA / "alpaca.csv", "--json").json()
    assert doc["num_rows"] == 6
    assert doc["columns"] == [{"name": n, "type": "string"} for n in ("instruction", "input", "output")]
    assert doc["sample"][0]["instruction"] == "Give three tips for staying healthy."
    assert doc["findings"] == []


def test_inspect_cuts_long_values(cli):
    doc = cli("inspect", DATA / "chat.jsonl", "--json", "--sample", "3").json()
    long_answer = doc["sample"][2]["messages"][1]["content"]
    assert len(long_answer) < 260 and "more" not in long_answer and "(+" in long_answer


def test_inspect_human_output_goes_to_stderr(cli):
    r = cli("inspect", DATA / "alpaca.jsonl.gz")
    assert r.exit_code == 0 and r.stdout == ""
    assert "jsonl, gzip" in r.stderr and "instruction" in r.stderr


def test_inspect_encoding(cli):
    r = cli("inspect", DATA / "alpaca_latin1.csv")
    assert r.exit_code == 2
    assert r.stderr.startswith(
        f"error[unreadable_input]: {DATA / 'alpaca_latin1.csv'}:5: not valid UTF-8 text"
    )
    assert "--encoding latin-1" in r.stderr
    r = cli("inspect", DATA / "alpaca_latin1.csv", "--encoding", "latin-1", "--json")
    assert r.exit_code == 0 and r.json()["num_rows"] == 5


def test_inspect_hub_id_from_the_local_cache(cli):
    snap = Path(os.environ["HF_HOME"]) / "hub" / "datasets--acme--chat" / "snapshots" / "r1"
    snap.mkdir(parents=True)
    (snap / "train.jsonl").write_bytes((DATA / "chat.jsonl").read_bytes())
    r = cli("inspect", "acme/chat", "--json")
    assert r.exit_code == 0, r
    doc = r.json()
    assert (doc["format"], doc["data_format"], doc["num_rows"], doc["cache"]) == ("hf_hub", "jsonl", 3, "hub")


def test_inspect_stdin(cli):
    r = cli("inspect", "-", "--json", input=(DATA / "alpaca.jsonl").read_bytes())
    assert r.exit_code == 0, r
    doc = r.json()
    assert (doc["format"], doc["num_rows"], doc["path"]) == ("stdin", 6, "-")


@pytest.mark.parametrize(
    "rel,code,kind",
    [
        (
            "packed/llama3_pad_seq_to_mult16_sft_0a1b2c3d/training_2048.idx.parquet",
            "packed_parquet_used_with_automodel",
            "megatron_bridge_parquet",
        ),
        ("packed", "packed_parquet_used_with_automodel", "megatron_bridge_parquet"),
        ("nemo/training_2048.npy", "packed_parquet_used_with_automodel", "nemo_npy"),
        ("inmem_pack.parquet", "packed_parquet_used_with_automodel", "in_memory_pack"),
        ("pretokenized.parquet", "pretokenized_input", "pretokenized"),
    ],
)
def test_packed_exits_1_with_the_code(cli, rel, code, kind):
    r = cli("inspect", DATA / rel)
    assert r.exit_code == 1, r
    assert f"error[{code}]: " in r.stderr
    if code == "packed_parquet_used_with_automodel":
        assert f"hint: {PACKED_HINT}" in r.stderr
    r = cli("inspect", DATA / rel, "--json")
    assert r.exit_code == 1
    doc = r.json()
    assert [f["code"] for f in doc["findings"]] == [code]
    assert doc["packed"]["kind"] == kind
    assert doc["packed"]["packed"] is (code == "packed_parquet_used_with_automodel")


BAD = [
    ("nope.jsonl", "", "no such file"),
    ("bad/empty.jsonl", "", "empty file"),
    ("bad/truncated.jsonl.gz", "", "truncated gzip"),
    ("bad/invalid_line.jsonl", ":3", "invalid JSON"),
    ("bad/ragged.csv", ":3", "ragged CSV"),
    ("bad/garbage.bin", "", "binary data"),
    ("bad/mixed", "", "mixing formats"),
    ("bad/not_a_pack.npy", "", "NumPy array"),
    ("alpaca.jsonl.idx.npy", "", "index sidecar"),
]


@pytest.mark.parametrize("rel,where,needle", BAD, ids=[b[0] for b in BAD])
def test_bad_input_exits_2_with_one_line(cli, rel, where, needle):
    path = DATA / rel
    r = cli("inspect", path)
    assert r.exit_code == 2, r
    assert r.stdout == ""
    first, *rest = r.stderr.strip().splitlines()
    assert first.startswith(f"error[unreadable_input]: {path}{where}: ")
    assert needle in first
    assert len(rest) == 1 and rest[0].strip().startswith("hint: ")
    assert "Traceback" not in r.stderr
    doc = cli("inspect", path, "--json").json()
    assert [f["code"] for f in doc["findings"]] == ["unreadable_input"]


def test_permission_denied_via_cli(cli, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root reads every file (covered in test_sources with a patched access check)")
    p = tmp_path / "secret.jsonl"
    p.write_text('{"a": 1}\n')
    p.chmod(0)
    r = cli("inspect", p)
    assert r.exit_code == 2 and "permission denied" in r.stderr


def _imported(args: list[str]) -> set[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run(
        [sys.executable, "-X", "importtime", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    mods = set()
    for line in r.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            mods.add(line.rsplit("|", 1)[1].strip())
    return mods


@pytest.mark.parametrize(
    "args",
    [
        ["-m", "dataprep", "--help"],
        ["-m", "dataprep", "inspect", str(DATA / "alpaca.jsonl")],
        ["-m", "dataprep", "inspect", str(DATA / "hf_disk")],
    ],
    ids=["help", "inspect-jsonl", "inspect-hf-disk"],
)
def test_no_heavy_imports(args):
    mods = _imported(args)
    assert "dataprep.cli" in mods  # the measurement works
    heavy = {m for m in mods if m.split(".")[0] in ("transformers", "datasets", "torch")}
    assert heavy == set()


def test_inspect_shows_the_shape_normalize_uses(cli, tmp_path):
    # A folder of shards whose first file is alpaca and second messages: inspect said alpaca (the first
    # file's schema), normalize detected openai_messages from the first rows' column union.
    folder = tmp_path / "shards"
    folder.mkdir()
    write_jsonl(
        folder / "a.jsonl", [{"instruction": f"i{i}", "input": "", "output": f"o{i}"} for i in range(3)]
    )
    write_jsonl(folder / "b.jsonl", [chat(i) for i in range(3)])
    shape = cli("inspect", folder, "--json").json()["shape"]["shape"]
    r = cli("normalize", folder, tmp_path / "out.jsonl", "--json")
    assert r.json()["detection"]["shape"] == shape
