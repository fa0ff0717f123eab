"""Hostile input for every command that reads data: one clear line, an exit code of the policy, no traceback,
no hang. The corpus is fixtures/make_fuzz.py's: small cases checked in under fixtures/fuzz/, large ones (a 10 MB
string, 10,000 CSV columns, JSON nested 100,000 deep) written to a temporary folder by the test."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "fixtures"))
from make_fuzz import OUT, write_corpus  # noqa: E402

MODEL = ROOT / "fixtures" / "models" / "chatml"
SMALL = sorted(OUT.iterdir()) if OUT.is_dir() else []
SECONDS = 60  # per command and input: a hang is a failure, not a slow test
COMMANDS = {
    "inspect": lambda p, out: ("inspect", p),
    "validate": lambda p, out: ("validate", p),
    "normalize": lambda p, out: ("normalize", p, out / "o.jsonl", "--force"),
    "stats": lambda p, out: ("stats", p, "--model", MODEL),
}


def _check(cli, args) -> None:
    t0 = time.perf_counter()
    r = cli(*args)
    took = time.perf_counter() - t0
    assert r.exit_code in (0, 1, 2), (args, r)
    assert "Traceback" not in r.stderr and "internal_error" not in r.stderr, (args, r.stderr[-2000:])
    assert took < SECONDS, (args, took)


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("path", SMALL, ids=[p.name for p in SMALL])
def test_small_corpus(cli, tmp_path, command, path):
    _check(cli, COMMANDS[command](path, tmp_path))


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("fuzz_big"), big=True)


@pytest.mark.parametrize("command", ["inspect", "validate", "normalize"])
def test_big_corpus(cli, tmp_path, big, command):
    for path in big:
        _check(cli, COMMANDS[command](path, tmp_path))


def test_preflight_on_hostile_inputs(cli, tmp_path):
    for path in [OUT / "flipped_bytes.jsonl", OUT / "nul_bytes.jsonl", OUT / "wrong_types.jsonl"]:
        _check(cli, ("preflight", "--model", MODEL, "--dataset", path, "--out", tmp_path / path.stem))
