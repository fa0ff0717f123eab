"""Packed and pre-tokenized data is detected (from schemas, names and .npy headers) and refused; chat data is not."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dataprep.errors import FindingError, UnreadableInput
from dataprep.findings import CATALOGUE
from dataprep.sources import detect_packed, open_source, packed_verdict, refuse_packed

DATA = Path(__file__).resolve().parent.parent / "fixtures" / "data"
MEGATRON = DATA / "packed" / "llama3_pad_seq_to_mult16_sft_0a1b2c3d" / "training_2048.idx.parquet"


def _npy_header(descr: str, shape: tuple[int, ...]) -> bytes:
    header = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape!r}, }}"
    pad = (64 - (10 + len(header) + 1) % 64) % 64
    header += " " * pad + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode("latin1")


@pytest.mark.parametrize(
    "path,kind",
    [
        (MEGATRON, "megatron_bridge_parquet"),
        (MEGATRON.parent, "megatron_bridge_parquet"),  # the folder, metadata sidecar and all
        (DATA / "packed", "megatron_bridge_parquet"),
        (DATA / "nemo" / "training_2048.npy", "nemo_npy"),
        (DATA / "inmem_pack.parquet", "in_memory_pack"),
    ],
)
def test_packed_fixtures_are_refused(path, kind):
    src = open_source(str(path))
    v = packed_verdict(src)
    assert v.packed and v.kind == kind and v.evidence
    (f,) = detect_packed(src)
    assert f.code == "packed_parquet_used_with_automodel"
    assert f.hint == CATALOGUE["packed_parquet_used_with_automodel"].hint
    assert f.hint == (
        "AutoModel reads chat JSONL: point it at the source JSONL, "
        "or train packed data with sft/megatron_bridge"
    )
    with pytest.raises(FindingError) as err:
        refuse_packed(src)
    assert err.value.exit_code == 1


def test_megatron_evidence_names_schema_name_folder_and_metadata():
    ev = " | ".join(packed_verdict(open_source(str(MEGATRON))).evidence)
    for needle in (
        "seq_start_id",
        "training_2048.idx.parquet",
        "_pad_seq_to_mult16_sft_",
        "2048_metadata.jsonl",
    ):
        assert needle in ev


def test_megatron_real_column_types():
    schema = pq.read_schema(MEGATRON)
    assert schema.field("input_ids").type == pa.list_(pa.int32())
    assert schema.field("seq_start_id").type == pa.list_(pa.int32())
    assert schema.field("loss_mask").type == pa.list_(pa.int8())


def test_pretokenized_is_refused_with_its_own_code():
    src = open_source(str(DATA / "pretokenized.parquet"))
    v = packed_verdict(src)
    assert not v.packed and v.kind == "pretokenized"
    (f,) = detect_packed(src)
    assert f.code == "pretokenized_input"
    with pytest.raises(FindingError):
        refuse_packed(src)


def test_pretokenized_jsonl(tmp_path):
    p = tmp_path / "tok.jsonl"
    p.write_text('{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}\n')
    assert [f.code for f in detect_packed(open_source(str(p)))] == ["pretokenized_input"]


@pytest.mark.parametrize("rel", ["chat.parquet", "chat.jsonl", "alpaca.parquet", "alpaca.jsonl", "hf_disk"])
def test_records_are_not_packed(rel):
    src = open_source(str(DATA / rel))
    assert detect_packed(src) == []
    refuse_packed(src)  # no exception


def test_messages_column_beside_token_columns_is_not_packed(tmp_path):
    p = tmp_path / "mixed.parquet"
    pq.write_table(
        pa.table(
            {
                "messages": [[{"role": "user", "content": "hi"}]],
                "input_ids": [[1, 2]],
                "seq_start_id": [[0]],
                "loss_mask": [[0, 1]],
            }
        ),
        p,
    )
    assert detect_packed(open_source(str(p))) == []


def test_token_ids_beside_text_are_not_pretokenized(tmp_path):
    p = tmp_path / "both.parquet"
    pq.write_table(pa.table({"text": ["hello"], "input_ids": [[1, 2]], "attention_mask": [[1, 1]]}), p)
    assert detect_packed(open_source(str(p))) == []


def test_idx_parquet_name_with_input_ids_only(tmp_path):
    d = tmp_path / "out"
    d.mkdir()
    pq.write_table(pa.table({"input_ids": [[1, 2, 3]]}), d / "validation_4096.idx.parquet")
    v = packed_verdict(open_source(str(d / "validation_4096.idx.parquet")))
    assert v.packed and v.kind == "megatron_bridge_parquet"


def test_index_sidecar_is_not_packed_and_not_readable():
    src = open_source(str(DATA / "alpaca.jsonl.idx.npy"))
    v = packed_verdict(src)
    assert not v.packed and "index sidecar" in v.evidence[0]
    with pytest.raises(UnreadableInput) as err:
        list(src.batches())
    assert "index sidecar of alpaca.jsonl" in err.value.finding.message
    assert "point at the data file alpaca.jsonl" in err.value.finding.hint


def test_npy_is_never_unpickled(tmp_path):
    # An object-dtype header followed by bytes that are not a pickle at all: the verdict comes from the header.
    p = tmp_path / "packed_4096_seed0.npy"
    p.write_bytes(_npy_header("|O", (5,)) + b"\x00definitely not a pickle")
    src = open_source(str(p))
    v = packed_verdict(src)
    assert v.packed and v.kind == "nemo_npy"
    assert src.num_rows == 5


def test_object_npy_with_another_name_is_not_called_a_pack(tmp_path):
    p = tmp_path / "arrays.npy"
    p.write_bytes(_npy_header("|O", (2,)) + b"junk")
    src = open_source(str(p))
    assert not packed_verdict(src).packed
    with pytest.raises(UnreadableInput, match="never unpickled"):
        list(src.batches())


def test_numeric_npy_named_like_a_pack_is_not_a_pack(tmp_path):
    p = tmp_path / "training_2048.npy"
    shutil.copy(DATA / "bad" / "not_a_pack.npy", p)
    assert not packed_verdict(open_source(str(p))).packed


def test_corrupt_npy_header(tmp_path):
    p = tmp_path / "training_1.npy"
    p.write_bytes(b"\x93NUMPY\x01\x00\xff\x00{garbage")
    with pytest.raises(UnreadableInput, match="not a valid .npy"):
        packed_verdict(open_source(str(p)))
