"""--allow-download is the only way a command may reach the Hub; offline, it fails as a clear finding."""

from __future__ import annotations

from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


@pytest.mark.parametrize(
    "args",
    [
        ["plan", "--model", "example-org/not-cached", "--seq-length", "1024"],
        ["check-template", "example-org/not-cached"],
    ],
)
def test_missing_model_names_where_it_looked_and_the_flag(cli, args):
    r = cli(*args)
    assert r.exit_code == 2, r
    assert "error[model_not_found]" in r.stderr
    assert "not-cached" in r.stderr


def test_plan_with_allow_download_offline_fails_cleanly(cli):
    # HF_HUB_OFFLINE=1 (conftest): the download is attempted and refused, and that is a finding, not a traceback
    r = cli("plan", "--model", "example-org/not-cached", "--seq-length", "1024", "--allow-download", "--json")
    assert r.exit_code == 2, r
    doc = r.json()
    assert doc["findings"][0]["code"] == "model_not_found"
    assert "config.json" in doc["findings"][0]["message"]


def test_preflight_accepts_allow_download(cli, tmp_path):
    r = cli(
        "preflight", "--model", FIXTURES / "models" / "chatml-gen", "--dataset", FIXTURES / "records" / "alpaca.csv",
        "--out", tmp_path / "out", "--allow-download", "--quiet",
    )  # fmt: skip
    assert r.exit_code == 0, r
    assert (tmp_path / "out" / "overrides.yaml").is_file()
