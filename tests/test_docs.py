"""README and --help stay true to the code: every command documented with an example, every code listed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dataprep.cli import COMMANDS
from dataprep.findings import CATALOGUE

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_a_readme_section_with_an_example(name):
    assert re.search(rf"^### `dataprep {re.escape(name)}\b", README, re.M), (
        f"README has no section for {name}"
    )
    assert re.search(rf"^\s+dataprep {re.escape(name)} ", README, re.M), f"README shows no example of {name}"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_help_carries_an_example(cli, name):
    r = cli(name, "--help")
    assert r.exit_code == 0, r
    assert f"dataprep {name} " in r.stdout, f"`dataprep {name} --help` shows no example"


@pytest.mark.parametrize("code", sorted(CATALOGUE))
def test_every_finding_code_is_in_the_readme(code):
    assert f"`{code}`" in README


def test_readme_shows_the_two_setup_commands():
    assert "make demo" in README and "make test" in README
