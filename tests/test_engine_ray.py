"""The Ray engine gives the local engine's bytes and stats: sharded inputs, rejects, refusals, the missing extra."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dataprep.errors import DataprepError, FindingError, MissingDependency, UsageError
from dataprep.normalize import normalize
from dataprep.pipeline import ConvertSpec

ROOT = Path(__file__).resolve().parent.parent
RECORDS = ROOT / "fixtures" / "records"
DATA = ROOT / "fixtures" / "data"
MODELS = ROOT / "fixtures" / "models"
sys.path.insert(0, str(ROOT / "fixtures"))
from make_records import GOLDEN_CASES  # noqa: E402

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'dataprep[ray]')")
pytest.importorskip("ray.data", reason="the ray extra is not installed (pip install 'dataprep[ray]')")

from dataprep import engine_ray  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
from dataprep.engine_ray import normalize_ray, stats_ray  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One local Ray for the module (starting one costs seconds); shut down at the end."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    engine_ray.session._quiet_data_context(ray)
    yield
    ray.shutdown()


def _alpaca_rows(n: int) -> list[dict]:
    """Varied alpaca rows; every 7th has an empty answer (a reject), some carry non-ASCII text."""
    rows = []
    for i in range(n):
        rows.append(
            {
                "instruction": f"Question {i}: what is {i} + {i % 5}?" + (" Résumé ✓" if i % 3 == 0 else ""),
                "input": "" if i % 2 else f"context {'x' * (i % 11)}",
                "output": "" if i % 7 == 3 else f"The answer is {i + i % 5}." + " more" * (i % 13),
            }
        )
    return rows


def _parquet_shards(folder: Path, rows: list[dict], files: int, row_group: int) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    per = -(-len(rows) // files)
    for k in range(files):
        part = rows[k * per : (k + 1) * per]
        if not part:  # 4 rows in 3 files: 2 + 2 + none (an empty table has no columns: not a shard)
            break
        pq.write_table(
            pa.Table.from_pylist(part), folder / f"train-{k:03d}.parquet", row_group_size=row_group
        )
    return folder


def _read(p: Path) -> bytes:
    return p.read_bytes() if p.exists() else b""


def _assert_same_result(local, remote) -> None:
    lc, rc = local.to_dict()["counts"], remote.to_dict()["counts"]
    assert rc == lc
    assert remote.reconciled
    # the same findings, but for where each engine wrote its rejects
    theirs = json.dumps([f.to_dict() for f in remote.findings()]).replace(remote.rejects_path, "REJECTS")
    ours = json.dumps([f.to_dict() for f in local.findings()]).replace(local.rejects_path, "REJECTS")
    assert theirs == ours


# -- normalize: byte-identical to the local engine ---------------------------------------------------------------
CASES = sorted(n for n in GOLDEN_CASES if not n.startswith("oasst"))


@pytest.mark.parametrize("name", CASES)
def test_merged_output_and_rejects_equal_the_local_engine(name, tmp_path):
    src, fields, kw = GOLDEN_CASES[name]
    spec = ConvertSpec(**fields)
    local = normalize(
        RECORDS / src, tmp_path / "local.jsonl", spec, rejects=tmp_path / "local.rej.jsonl", **kw
    )
    remote = normalize_ray(
        RECORDS / src, tmp_path / "ray.jsonl", spec, rejects=tmp_path / "ray.rej.jsonl", merge=True, **kw
    )
    assert (tmp_path / "ray.jsonl").read_bytes() == (tmp_path / "local.jsonl").read_bytes()
    assert (tmp_path / "ray.rej.jsonl").read_bytes() == (tmp_path / "local.rej.jsonl").read_bytes()
    _assert_same_result(local, remote)


def test_parquet_shards_cut_by_row_group_keep_the_input_numbering(tmp_path):
    rows = _alpaca_rows(95)
    inp = _parquet_shards(tmp_path / "in", rows, files=3, row_group=8)
    local = normalize(inp, tmp_path / "local.jsonl")
    out = tmp_path / "out"
    seen: list[tuple[int, int | None]] = []
    remote = normalize_ray(inp, out, block_rows=10, progress=lambda n, total: seen.append((n, total)))
    assert len(seen) == 12 and seen[-1] == (95, 95)
    # 3 files of 32/32/31 rows in row groups of 8 -> blocks of <= 10 rows never cross a file: 4 blocks each
    names = [f"part-{i:05d}.jsonl" for i in range(12)]
    assert sorted(p.name for p in out.iterdir()) == names
    assert remote.to_dict()["engine"]["blocks"] == 12
    assert b"".join(_read(out / n) for n in names) == (tmp_path / "local.jsonl").read_bytes()
    rejects_dir = tmp_path / "out.rejects"
    assert remote.rejects_path == str(rejects_dir)
    assert b"".join(_read(rejects_dir / n) for n in names) == (tmp_path / "local.rejects.jsonl").read_bytes()
    assert all(
        (rejects_dir / Path(p).name).stat().st_size for p in remote.to_dict()["engine"]["rejects_shards"]
    )
    rejected_rows = [
        json.loads(line)["row"] for line in (tmp_path / "local.rejects.jsonl").read_text().splitlines()
    ]
    assert rejected_rows == [i + 1 for i in range(95) if i % 7 == 3]  # whole-input row numbers, not per file
    _assert_same_result(local, remote)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    n=st.integers(min_value=1, max_value=60),
    files=st.integers(min_value=1, max_value=4),
    row_group=st.integers(min_value=1, max_value=17),
    block_rows=st.integers(min_value=1, max_value=40),
)
def test_any_cut_gives_the_local_bytes(tmp_path_factory, n, files, row_group, block_rows):
    tmp = tmp_path_factory.mktemp("cut")
    inp = _parquet_shards(tmp / "in", _alpaca_rows(n), files=min(files, n), row_group=row_group)
    normalize(inp, tmp / "local.jsonl")
    normalize_ray(inp, tmp / "ray.jsonl", merge=True, block_rows=block_rows, batch_rows=5)
    assert (tmp / "ray.jsonl").read_bytes() == (tmp / "local.jsonl").read_bytes()
    assert (tmp / "ray.rejects.jsonl").read_bytes() == (tmp / "local.rejects.jsonl").read_bytes()


def test_jsonl_shards_equal_the_local_engine_on_their_concatenation(tmp_path):
    lines = (RECORDS / "malformed.jsonl").read_bytes().splitlines(keepends=True)
    lines += (RECORDS / "openai_messages.jsonl").read_bytes().splitlines(keepends=True)
    lines = [ln if ln.endswith(b"\n") else ln + b"\n" for ln in lines]
    shards = tmp_path / "shards"
    shards.mkdir()
    cuts = [0, 4, 5, 11, len(lines)]
    for k in range(4):
        (shards / f"s{k}.jsonl").write_bytes(b"".join(lines[cuts[k] : cuts[k + 1]]))
    (tmp_path / "all.jsonl").write_bytes(b"".join(lines))
    spec = ConvertSpec(fmt="openai_messages")
    local = normalize(tmp_path / "all.jsonl", tmp_path / "local.jsonl", spec)
    remote = normalize_ray(shards, tmp_path / "ray.jsonl", spec, merge=True)
    assert (tmp_path / "ray.jsonl").read_bytes() == (tmp_path / "local.jsonl").read_bytes()
    assert (tmp_path / "ray.rejects.jsonl").read_bytes() == (tmp_path / "local.rejects.jsonl").read_bytes()
    assert local.rejected > 0
    _assert_same_result(local, remote)
    # a glob reads the same shards
    normalize_ray(str(shards / "s*.jsonl"), tmp_path / "glob.jsonl", spec, merge=True)
    assert (tmp_path / "glob.jsonl").read_bytes() == (tmp_path / "local.jsonl").read_bytes()


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    block_bytes=st.integers(min_value=150, max_value=1500),
    blank=st.booleans(),
    last_newline=st.booleans(),
    two_files=st.booleans(),
    bom=st.booleans(),
)
def test_jsonl_cut_into_byte_ranges_gives_the_local_bytes(
    tmp_path_factory, block_bytes, blank, last_newline, two_files, bom
):
    """Cuts fall anywhere (inside a line, on a newline, in a blank run); each line is read once, numbered."""
    tmp = tmp_path_factory.mktemp("ranges")
    lines = (RECORDS / "malformed.jsonl").read_bytes().splitlines(keepends=True)
    lines += (RECORDS / "openai_messages.jsonl").read_bytes().splitlines(keepends=True)
    lines = [ln if ln.endswith(b"\n") else ln + b"\n" for ln in lines]
    if blank:
        lines[3:3] = [b"\n", b"  \n"]
    if bom:  # a byte-order mark opens the file; the same bytes mid-file are part of a line
        lines[0] = b"\xef\xbb\xbf" + lines[0]
        lines[7] = b"\xef\xbb\xbf" + lines[7]
    data = b"".join(lines)
    if not last_newline:
        data = data[:-1]
    (tmp / "all.jsonl").write_bytes(data)
    src = tmp / "all.jsonl"
    if two_files:  # the second file starts mid-way: its rows continue the first file's line numbers
        (tmp / "in").mkdir()
        half = b"".join(lines[:5])
        (tmp / "in" / "a.jsonl").write_bytes(half)
        (tmp / "in" / "b.jsonl").write_bytes(data[len(half) :])
        src = tmp / "in"
    spec = ConvertSpec(fmt="openai_messages")
    local = normalize(tmp / "all.jsonl", tmp / "local.jsonl", spec)
    remote = normalize_ray(src, tmp / "ray.jsonl", spec, merge=True, block_bytes=block_bytes)
    assert (tmp / "ray.jsonl").read_bytes() == (tmp / "local.jsonl").read_bytes()
    assert (tmp / "ray.rejects.jsonl").read_bytes() == (tmp / "local.rejects.jsonl").read_bytes()
    assert remote.read == local.read


def test_dedup_needs_merge_and_then_matches_local(tmp_path):
    spec = ConvertSpec(fmt="openai_messages")
    with pytest.raises(UsageError, match="needs merge"):
        normalize_ray(RECORDS / "malformed.jsonl", tmp_path / "o", spec, dedup=True)
    local = normalize(RECORDS / "malformed.jsonl", tmp_path / "local.jsonl", spec, dedup=True)
    remote = normalize_ray(RECORDS / "malformed.jsonl", tmp_path / "ray.jsonl", spec, merge=True, dedup=True)
    assert remote.duplicates == local.duplicates == 1
    assert (tmp_path / "ray.jsonl").read_bytes() == (tmp_path / "local.jsonl").read_bytes()
    _assert_same_result(local, remote)


# -- refusals: before Ray runs anything -------------------------------------------------------------------------
@pytest.fixture
def no_ray_work(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("Ray was used before the input was checked")

    monkeypatch.setattr(engine_ray.session, "ray_session", boom)  # not even started / connected
    monkeypatch.setattr(engine_ray.normalize, "_run_convert", boom)


def test_packed_input_is_refused_before_any_block_runs(tmp_path, no_ray_work):
    with pytest.raises(FindingError) as e:
        normalize_ray(DATA / "packed", tmp_path / "out")
    assert e.value.finding.code == "packed_parquet_used_with_automodel"
    assert not (tmp_path / "out").exists()


def test_tree_shapes_unknown_shapes_and_existing_outputs_are_refused(tmp_path, no_ray_work):
    with pytest.raises(UsageError, match="whole input"):
        normalize_ray(RECORDS / "oasst.jsonl", tmp_path / "a")
    with pytest.raises(FindingError) as e:
        normalize_ray(RECORDS / "text.jsonl", tmp_path / "b")
    assert e.value.finding.code in ("pretraining_text", "unknown_schema")
    (tmp_path / "exists").mkdir()
    with pytest.raises(DataprepError) as e2:
        normalize_ray(RECORDS / "alpaca.jsonl", tmp_path / "exists")
    assert e2.value.finding.code == "output_exists"
    with pytest.raises(DataprepError) as e3:
        normalize_ray(RECORDS / "alpaca.jsonl", RECORDS / "alpaca.jsonl", merge=True)
    assert e3.value.finding.code == "output_would_overwrite_input"


def test_force_replaces_a_shard_folder(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.jsonl").write_text("old\n")
    normalize_ray(RECORDS / "alpaca.jsonl", out, force=True)
    assert sorted(p.name for p in out.iterdir()) == ["part-00000.jsonl"]
    assert not list(tmp_path.glob(".*"))  # no staging folders left behind


def _truncated_gzip_jsonl(path: Path, rows: int = 1000) -> Path:
    """A gzip JSONL file cut at 90%: its head reads fine, its end is corrupt (found by a worker, not the driver)."""
    import gzip
    import random

    rng = random.Random(0)
    text = "".join(
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": "".join(rng.choices("abcdefghij0123456789 ", k=300))},
                    {"role": "assistant", "content": "ok"},
                ]
            }
        )
        + "\n"
        for _ in range(rows)
    )
    data = gzip.compress(text.encode())
    path.write_bytes(data[: int(len(data) * 0.9)])
    return path


def test_a_block_a_worker_cannot_read_is_unreadable_input(tmp_path):
    bad = _truncated_gzip_jsonl(tmp_path / "bad.jsonl.gz")
    with pytest.raises(DataprepError) as e:  # one file: one block, converted on a worker
        normalize_ray(bad, tmp_path / "out", merge=True)
    assert (e.value.finding.code, e.value.exit_code) == ("unreadable_input", 2)
    assert "truncated gzip" in e.value.finding.message
    assert not (tmp_path / "out").exists()
    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "a.jsonl").write_bytes((RECORDS / "openai_messages.jsonl").read_bytes())
    bad.rename(shards / "b.jsonl.gz")
    with pytest.raises(DataprepError) as e:  # found while counting the shards' lines
        normalize_ray(shards, tmp_path / "out2")
    assert (e.value.finding.code, e.value.exit_code) == ("unreadable_input", 2)


# -- the missing extra ------------------------------------------------------------------------------------------
def test_missing_ray_is_a_usage_error_naming_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(MissingDependency) as e:
        normalize_ray(RECORDS / "alpaca.jsonl", tmp_path / "o")
    assert e.value.exit_code == 2
    assert e.value.finding.hint == "pip install 'dataprep[ray]'"
    from dataprep.engine import stats_on

    with pytest.raises(MissingDependency):
        stats_on("ray", str(RECORDS / "alpaca.jsonl"), object())


def test_engine_options_on_a_command(monkeypatch, tmp_path):
    import click
    from click.testing import CliRunner

    from dataprep.cli._common import Outcome, run
    from dataprep.cli._engine import engine_options
    from dataprep.engine import normalize_on

    @click.command()
    @click.argument("inp")
    @click.argument("out")
    @engine_options(merge=True)
    def cmd(inp, out, engine, ray_address, merge):
        def body():
            r = normalize_on(engine, inp, out, ray_address=ray_address, merge=merge)
            return Outcome(r.to_dict(), r.findings())

        run(body, as_json=True)

    runner = CliRunner()
    help_text = runner.invoke(cmd, ["--help"]).output
    assert "--engine [local|ray]" in help_text and "--ray-address" in help_text and "--merge" in help_text
    r = runner.invoke(
        cmd, [str(RECORDS / "alpaca.jsonl"), str(tmp_path / "a.jsonl"), "--ray-address", "auto"]
    )
    assert r.exit_code == 2 and "--engine ray" in r.output
    r = runner.invoke(cmd, [str(RECORDS / "alpaca.jsonl"), str(tmp_path / "b"), "--engine", "ray"])
    assert r.exit_code == 0, r.output  # one reject (an empty answer) is a warning
    doc = json.loads(r.stdout)
    assert doc["engine"]["shards"] == [str(tmp_path / "b" / "part-00000.jsonl")]
    monkeypatch.setitem(sys.modules, "ray", None)
    r = runner.invoke(cmd, [str(RECORDS / "alpaca.jsonl"), str(tmp_path / "c"), "--engine", "ray"])
    assert r.exit_code == 2
    assert "pip install 'dataprep[ray]'" in r.stdout


def test_an_unreachable_cluster_is_a_usage_error(monkeypatch):
    def refuse(*a, **k):
        raise ConnectionError("Could not find any running Ray instance.")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", refuse)
    with pytest.raises(UsageError) as e, engine_ray.ray_session("auto"):
        pass
    assert e.value.exit_code == 2
    assert "cannot connect to Ray at auto" in e.value.finding.message
    assert "ray start --head" in e.value.finding.hint


def test_resolve_address(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert engine_ray.resolve_address(None) is None
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert engine_ray.resolve_address(None) == "10.0.0.1:6379"
    assert engine_ray.resolve_address("auto") == "auto"


# -- stats: the same JSON -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("model", "sample"), [("chatml-gen", None), ("chatml", None), ("chatml-gen", 17)], ids=str
)
def test_stats_json_equals_the_local_engine(tmp_path, model, sample):
    from dataprep.pipeline import conversations
    from dataprep.stats import Skipped, compute_stats
    from dataprep.tokenizer import load_tokenizer

    inp = _parquet_shards(tmp_path / "in", _alpaca_rows(60), files=2, row_group=8)
    loaded = load_tokenizer(str(MODELS / model))
    kw = {"seq_lengths": (16, 32, 64), "batch_sizes": (1, 4), "sample": sample}
    skipped = Skipped()
    local = compute_stats(conversations(inp, on_reject=skipped.add_reject), loaded, skipped=skipped, **kw)
    done: list[int] = []
    remote = stats_ray(inp, loaded, block_rows=16, progress=done.append, **kw)
    assert remote.to_dict() == local.to_dict()
    # every row the converter accepts is measured, sampled or not; the others are counted under findings
    assert sum(done) + sum(local.rows_skipped.values()) == local.rows_read


def test_stats_on_jsonl_with_rejects_and_a_model_path(tmp_path):
    from dataprep.pipeline import conversations
    from dataprep.stats import Skipped, compute_stats
    from dataprep.tokenizer import load_tokenizer

    loaded = load_tokenizer(str(MODELS / "chatml-gen"))
    skipped = Skipped()
    rows = conversations(RECORDS / "malformed.jsonl", on_reject=skipped.add_reject)
    local = compute_stats(rows, loaded, skipped=skipped)
    assert local.rows_skipped and local.rows_read == local.rows + sum(local.rows_skipped.values())
    # byte ranges of ~200 bytes: several blocks, one actor measures them all
    remote = stats_ray(RECORDS / "malformed.jsonl", str(MODELS / "chatml-gen"), actors=1, block_bytes=200)
    assert remote.to_dict() == local.to_dict()
    with pytest.raises(FindingError) as e:
        stats_ray(RECORDS / "alpaca.jsonl", str(MODELS / "no-template"))
    assert e.value.finding.code == "chat_template_missing"


# -- the commands (once normalize_cmd / stats_cmd call dataprep.cli._engine) --------------------------------------
def _wired(command: str) -> bool:
    from click.testing import CliRunner

    from dataprep.cli import main

    return "--engine" in CliRunner().invoke(main, [command, "--help"]).output


def test_normalize_command_on_ray(cli, tmp_path):
    if not _wired("normalize"):
        pytest.skip("dataprep normalize has no --engine yet (see dataprep/cli/_engine.py)")
    src = RECORDS / "malformed.jsonl"
    local = cli("normalize", src, tmp_path / "l.jsonl", "--format", "openai_messages", "--json")
    remote = cli(
        "normalize",
        src,
        tmp_path / "r.jsonl",
        "--format",
        "openai_messages",
        "--engine",
        "ray",
        "--merge",
        "--json",
    )
    assert remote.exit_code == local.exit_code == 0
    assert remote.json()["counts"] == local.json()["counts"]
    assert (tmp_path / "r.jsonl").read_bytes() == (tmp_path / "l.jsonl").read_bytes()
    assert (tmp_path / "r.rejects.jsonl").read_bytes() == (tmp_path / "l.rejects.jsonl").read_bytes()
    shards = cli("normalize", src, tmp_path / "dir", "--format", "openai_messages", "--engine", "ray")
    assert shards.exit_code == 0 and (tmp_path / "dir" / "part-00000.jsonl").is_file()


def test_stats_command_on_ray(cli, tmp_path):
    if not _wired("stats"):
        pytest.skip("dataprep stats has no --engine yet (see dataprep/cli/_engine.py)")
    inp = _parquet_shards(tmp_path / "in", _alpaca_rows(30), files=2, row_group=8)
    args = ("stats", inp, "--model", MODELS / "chatml-gen", "--seq-lengths", "32,64", "--json")
    local = cli(*args)
    remote = cli(*args, "--engine", "ray")
    assert remote.exit_code == local.exit_code
    assert remote.stdout == local.stdout


def test_stats_quality_lint_and_notes_equal_the_local_engine(tmp_path):
    """Quality defects (one canned answer repeated across blocks, placeholders, mojibake) and the converter's
    notes (pandas literal cells) give the same findings and figures on Ray, block by block merged."""
    from dataprep.converters._common import Notes
    from dataprep.pipeline import conversations, note_findings
    from dataprep.stats import Skipped, compute_stats
    from dataprep.tokenizer import load_tokenizer

    canned = "I am sorry, but I cannot help with that request today."
    rows = []
    for i in range(80):
        answer = (
            canned
            if i % 3 == 0
            else f"Answer {i}: " + ("CafÃ© " if i % 11 == 0 else "") + "{{name}}" * (i % 17 == 0)
        )
        msgs = [{"role": "user", "content": f"question number {i}"}, {"role": "assistant", "content": answer}]
        rows.append({"messages": repr(msgs) if i % 5 == 0 else json.dumps(msgs)})
    inp = _parquet_shards(tmp_path / "in", rows, files=2, row_group=8)
    loaded = load_tokenizer(str(MODELS / "chatml"))
    skipped, notes = Skipped(), Notes()
    local = compute_stats(
        conversations(inp, on_reject=skipped.add_reject, notes=notes), loaded, skipped=skipped
    )
    local_findings = [*local.findings, *note_findings(notes)]
    remote = stats_ray(inp, loaded, block_rows=16)
    assert remote.quality == local.quality
    assert [f.to_dict() for f in remote.findings] == [f.to_dict() for f in local_findings]
    codes = {f.code for f in remote.findings}
    assert {"repeated_answer", "mojibake", "unfilled_placeholder", "python_literal_cells"} <= codes
