"""Benchmark the streaming readers against plain-Python baselines, in one run.

    python bench/bench_readers.py [--rows 200000]

Each variant runs in its own subprocess (wall time, peak RSS) over the same generated alpaca records:
  dataprep jsonl        open_source(...).batches(), Arrow tables (what vectorized converters use)
  dataprep jsonl dicts  the same plus Batch.records() (what per-record code uses)
  (a) json.loads loop   for line in file: json.loads(line)
  dataprep csv          open_source(...).batches()
  (b) csv.DictReader    for row in csv.DictReader(file)

Prints a markdown table for bench/README.md and the ratios against the baselines.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORDS = "the model data train token answer question river mountain light energy system value memory".split()

VARIANTS = {
    "dataprep jsonl": (
        "jsonl",
        "from dataprep.sources import open_source\nn = sum(len(b) for b in open_source(P).batches())",
    ),
    "dataprep jsonl dicts": (
        "jsonl",
        "from dataprep.sources import open_source\nn = sum(len(b.records()) for b in open_source(P).batches())",
    ),
    "(a) json.loads loop": (
        "jsonl",
        "import json\nn = 0\nfor line in open(P, 'rb'):\n    if line.strip():\n        json.loads(line); n += 1",
    ),
    "dataprep csv": (
        "csv",
        "from dataprep.sources import open_source\nn = sum(len(b) for b in open_source(P).batches())",
    ),
    "(b) csv.DictReader": ("csv", "import csv\nn = sum(1 for _ in csv.DictReader(open(P, newline='')))"),
}

RUNNER = """
import resource, sys, time
P = sys.argv[1]
t = time.perf_counter()
{code}
dt = time.perf_counter() - t
print(n, dt, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def generate(d: Path, rows: int) -> dict[str, Path]:
    rng = random.Random(0)
    recs = [
        {
            "instruction": _text(rng, 20),
            "input": _text(rng, 10) if i % 3 == 0 else "",
            "output": _text(rng, 80),
        }
        for i in range(rows)
    ]
    jsonl, csvp = d / "bench.jsonl", d / "bench.csv"
    with open(jsonl, "w") as fh:
        for r in recs:
            fh.write(json.dumps(r) + "\n")
    with open(csvp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(recs[0]))
        w.writeheader()
        w.writerows(recs)
    return {"jsonl": jsonl, "csv": csvp}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    args = ap.parse_args()
    results: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as d:
        files = generate(Path(d), args.rows)
        size_mb = files["jsonl"].stat().st_size / 1e6
        for name, (kind, code) in VARIANTS.items():
            t0 = time.perf_counter()
            out = subprocess.run(
                [sys.executable, "-c", RUNNER.format(code=code), str(files[kind])],
                capture_output=True,
                text=True,
                cwd=ROOT,
                check=True,
            ).stdout.split()
            n, dt, rss_kb = int(out[0]), float(out[1]), int(out[2])
            assert n == args.rows, (name, n)
            results[name] = (dt, rss_kb / 1024)
            print(
                f"{name:22} {dt:7.2f} s  {rss_kb / 1024:7.0f} MB peak RSS  ({time.perf_counter() - t0:.1f} s)"
            )
    lines = [
        f"### readers ({args.rows:,} alpaca rows, JSONL {size_mb:.0f} MB)",
        "",
        "| variant | read time (s) | peak RSS (MB) |",
        "|---|---:|---:|",
        *(f"| {k} | {v[0]:.2f} | {v[1]:.0f} |" for k, v in results.items()),
        "",
        f"JSONL: dataprep (Arrow tables) is {results['(a) json.loads loop'][0] / results['dataprep jsonl'][0]:.1f}x "
        f"the json.loads loop; with dicts {results['(a) json.loads loop'][0] / results['dataprep jsonl dicts'][0]:.1f}x. "
        f"CSV: {results['(b) csv.DictReader'][0] / results['dataprep csv'][0]:.1f}x csv.DictReader.",
    ]
    print("\n" + "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
