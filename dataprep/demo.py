"""``make demo``: the main job (preflight) on the bundled fixtures, no arguments, no download.

400 alpaca records as CSV (two without an answer) and a fixture model (the tiny test tokenizer with
Llama-3.2-1B's architecture numbers, see fixtures/make_demo.py) go through recipe -> inspect -> normalize ->
validate -> check-template -> stats -> plan, starting from an AutoModel LoRA recipe (fixtures/recipes/base.yaml),
for one 24 GiB GPU; the outputs, recipe.yaml first, land in demo-out/preflight/.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
OUT = ROOT / "demo-out" / "preflight"


def _run(*args: str) -> int:
    print("\n$ dataprep " + " ".join(args), file=sys.stderr, flush=True)
    env = {**os.environ, "DATAPREP_FIXTURES": str(FIXTURES)}  # the recipe fixture reads ${DATAPREP_FIXTURES}
    return subprocess.call([sys.executable, "-m", "dataprep", *args], cwd=ROOT, env=env)


def main() -> int:
    dataset = "fixtures/demo/alpaca.csv"
    model = "fixtures/demo/llama-3.2-1b-chatml"
    _run("inspect", dataset)
    rc = _run(
        "preflight",
        "--recipe", "fixtures/recipes/base.yaml",
        "--model", model,
        "--dataset", dataset,
        "--gpus", "1",
        "--gpu-memory", "24GiB",
        "--out", str(OUT.relative_to(ROOT)),
    )  # fmt: skip
    print(f"\nreport: {OUT / 'report.html'}\nrecipe: {OUT / 'recipe.yaml'}", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
