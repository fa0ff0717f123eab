"""``make demo``: the main job on the bundled fixtures, no arguments, no download."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"


def _run(*args: str) -> int:
    cmd = [sys.executable, "-m", "dataprep", *args]
    print("$ dataprep " + " ".join(args), file=sys.stderr, flush=True)
    return subprocess.call(cmd)


def main() -> int:
    rc = _run("inspect", str(FIXTURES / "data" / "alpaca.csv"))
    return rc


if __name__ == "__main__":
    sys.exit(main())
