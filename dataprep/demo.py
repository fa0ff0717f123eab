"""``make demo``: the main job (preflight) on the bundled fixtures, no arguments, no download.

A CSV of alpaca records, the fixture tokenizer (ChatML with generation tags) and its small config.json go
through inspect -> normalize -> validate -> check-template -> stats -> plan; the outputs land in demo-out/.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
OUT = ROOT / "demo-out" / "preflight"


def _run(*args: str) -> int:
    print("\n$ dataprep " + " ".join(args), file=sys.stderr, flush=True)
    return subprocess.call([sys.executable, "-m", "dataprep", *args], cwd=ROOT)


def main() -> int:
    dataset = "fixtures/records/alpaca.csv"
    model = "fixtures/models/chatml-gen"
    _run("inspect", dataset)
    rc = _run(
        "preflight",
        "--model", model,
        "--dataset", dataset,
        "--method", "lora",
        "--gpus", "1",
        "--gpu-memory", "24GiB",
        "--out", str(OUT.relative_to(ROOT)),
    )  # fmt: skip
    print(f"\nreport: {OUT / 'report.html'}\noverrides: {OUT / 'overrides.yaml'}", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
