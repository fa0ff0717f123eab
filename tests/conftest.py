"""Shared test set-up: tests never touch the machine's HF cache or the network."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, settings

# Shared machines are slow and noisy: no per-example deadline. In CI the examples are derandomized so a
# landing never depends on the draw; locally each run explores new examples.
settings.register_profile(
    "dataprep",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=bool(os.environ.get("CI")),
)
settings.load_profile("dataprep")

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
REAL = ROOT.parent / "shared" / "real"


@pytest.fixture(autouse=True)
def _isolated_hf_home(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("hf_home")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_DATASETS_CACHE", raising=False)
    monkeypatch.delenv("DATAPREP_RAISE", raising=False)


class CliResult:
    def __init__(self, result):
        self.exit_code = result.exit_code
        self.stdout = result.stdout
        self.stderr = result.stderr
        self.exception = result.exception

    def json(self):
        return json.loads(self.stdout)

    def __repr__(self) -> str:
        return f"<CliResult exit={self.exit_code} stdout={self.stdout[:500]!r} stderr={self.stderr[:1500]!r}>"


@pytest.fixture
def cli():
    """Run ``dataprep ARGS...`` in-process; returns exit code, stdout and stderr separately."""
    from dataprep.cli import main

    def invoke(*args: str, input: str | bytes | None = None) -> CliResult:
        runner = CliRunner()
        result = runner.invoke(main, [str(a) for a in args], input=input, catch_exceptions=False)
        return CliResult(result)

    return invoke


@pytest.fixture
def real_dir():
    if not REAL.is_dir():
        pytest.skip(f"{REAL} is absent: the real templates and tokenizers are opt-in")
    return REAL
