"""Benchmark the streaming readers against plain-Python baselines, in one run.

    python bench/bench_readers.py [--rows 300000] [--repeat 2]

Each variant runs in its own subprocess (wall time, peak RSS) over the same generated alpaca records:
  dataprep jsonl        open_source(...).batches(), Arrow tables (what vectorized converters use)
  dataprep jsonl dicts  the same plus Batch.records() (what per-record code uses)
  (a) json.loads loop   for line in file: json.loads(line)
  floor: pyarrow.json   pyarrow.json.open_json streaming the file (no row numbers, errors or exact records)
  floor: polars         polars.scan_ndjson(...).collect() (coerces types: not exact, see dataprep/sources/jsonl.py)
  dataprep csv          open_source(...).batches()
  (b) csv.DictReader    for row in csv.DictReader(file)

With --repeat N every variant runs N times, interleaved, and the best time counts (the machine is shared).
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
    "floor: pyarrow.json open_json": (
        "jsonl",
        "import pyarrow.json as pj\nn = sum(b.num_rows for b in pj.open_json(P))",
    ),
    "floor: polars scan_ndjson": (
        "jsonl",
        "import polars as pl\nn = pl.scan_ndjson(P).collect().height",
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
    """Written record by record: the benchmark's own memory must not show in the variants' peak RSS (Linux
    carries a process's peak RSS across fork and exec)."""
    rng = random.Random(0)
    jsonl, csvp = d / "bench.jsonl", d / "bench.csv"
    with open(jsonl, "w") as fj, open(csvp, "w", newline="") as fc:
        w = csv.DictWriter(fc, fieldnames=["instruction", "input", "output"])
        w.writeheader()
        for i in range(rows):
            r = {
                "instruction": _text(rng, 20),
                "input": _text(rng, 10) if i % 3 == 0 else "",
                "output": _text(rng, 80),
            }
            fj.write(json.dumps(r) + "\n")
            w.writerow(r)
    return {"jsonl": jsonl, "csv": csvp}


def run(code: str, path: Path) -> tuple[int, float, float]:
    out = subprocess.run(
        [sys.executable, "-c", RUNNER.format(code=code), str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    ).stdout.split()
    return int(out[0]), float(out[1]), int(out[2]) / 1024


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=300_000)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    results: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as d:
        files = generate(Path(d), args.rows)
        size_mb = files["jsonl"].stat().st_size / 1e6
        for rep in range(args.repeat):
            for name, (kind, code) in VARIANTS.items():
                n, dt, rss = run(code, files[kind])
                assert n == args.rows, (name, n)
                best = results.get(name, (float("inf"), 0.0))
                results[name] = (min(best[0], dt), max(best[1], rss))
                print(f"[{rep + 1}] {name:30} {dt:7.2f} s  {rss:7.0f} MB peak RSS", flush=True)
    loop = results["(a) json.loads loop"][0]
    lines = [
        f"### readers ({args.rows:,} alpaca rows, JSONL {size_mb:.0f} MB, best of {args.repeat})",
        "",
        "| variant | read time (s) | vs json.loads loop | peak RSS (MB) |",
        "|---|---:|---:|---:|",
        *(f"| {k} | {v[0]:.2f} | {loop / v[0]:.1f}x | {v[1]:.0f} |" for k, v in results.items()),
        "",
        f"JSONL: dataprep (Arrow tables) is {loop / results['dataprep jsonl'][0]:.1f}x "
        f"the json.loads loop; with dicts {loop / results['dataprep jsonl dicts'][0]:.1f}x; "
        f"{results['dataprep jsonl'][0] / results['floor: pyarrow.json open_json'][0]:.2f}x the time of "
        "pyarrow.json alone. "
        f"CSV: {results['(b) csv.DictReader'][0] / results['dataprep csv'][0]:.1f}x csv.DictReader.",
    ]
    print("\n" + "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
