"""Benchmark ``dataprep normalize`` on 300k alpaca records (~240 MB) against two baselines, in one run.

    python bench/bench_normalize.py [--rows 300000] [--no-datasets] [--no-4x]

Variants, each timed in its own subprocess (wall time and peak RSS of that process and its children):
  dataprep jsonl / csv   normalize() with validation, writing OUT + rejects atomically
  reader alone           iterating dataprep.sources batches (the share of the time spent reading)
  (a) python loop        json.loads -> build messages -> json.dumps, line by line (no validation)
  (b) datasets           load_dataset("json") + .map(convert, num_proc=2) + .to_json
  dataprep jsonl 4x      the same at 4x the rows, to show memory stays bounded

Prints a markdown table for bench/README.md and the ratios against (a) and (b).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORDS = (
    "the model data train token answer question river mountain light energy system value memory network "
    "language python function result number reason simple quickly explain write summary story people "
    "garden coffee science history music design building market health travel school"
).split()


def _text(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n_words)).capitalize() + "."


def generate(dirpath: Path, rows: int, seed: int = 0) -> tuple[Path, Path]:
    """rows alpaca records as JSONL and CSV (~800 bytes each; one in three has an input)."""
    import csv

    rng = random.Random(seed)
    jl, cv = dirpath / f"alpaca_{rows}.jsonl", dirpath / f"alpaca_{rows}.csv"
    with open(jl, "w", encoding="utf-8") as fj, open(cv, "w", encoding="utf-8", newline="") as fc:
        w = csv.writer(fc)
        w.writerow(["instruction", "input", "output"])
        for i in range(rows):
            rec = {
                "instruction": _text(rng, 14),
                "input": _text(rng, 30) if i % 3 == 0 else "",
                "output": _text(rng, 95),
            }
            fj.write(json.dumps(rec, ensure_ascii=False) + "\n")
            w.writerow([rec["instruction"], rec["input"], rec["output"]])
    return jl, cv


CHILD_PRELUDE = """
import json, resource, sys, time
t0 = time.perf_counter()
"""
CHILD_EPILOGUE = """
wall = time.perf_counter() - t0
me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print("BENCH " + json.dumps({"wall": wall, "rss_self_kb": me, "rss_children_kb": kids}))
"""

DATAPREP = """
from dataprep.normalize import normalize
r = normalize(IN, OUT, force=True)
assert r.written == ROWS and r.reconciled, r.to_dict()
"""

READER = """
from dataprep.sources import open_source
n = sum(len(b) for b in open_source(IN).batches())
assert n == ROWS
"""

LOOP = """
def convert(rec):
    user = rec["instruction"] + ("\\n\\n" + rec["input"] if rec.get("input") else "")
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": rec["output"]}]}
with open(IN, encoding="utf-8") as fi, open(OUT, "w", encoding="utf-8") as fo:
    for line in fi:
        fo.write(json.dumps(convert(json.loads(line)), ensure_ascii=False) + "\\n")
"""

DATASETS = """
import datasets
datasets.disable_progress_bars()
def convert(rec):
    user = rec["instruction"] + ("\\n\\n" + rec["input"] if rec.get("input") else "")
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": rec["output"]}]}
ds = datasets.load_dataset("json", data_files=IN, split="train", cache_dir=CACHE)
ds = ds.map(convert, num_proc=2, remove_columns=ds.column_names)
ds.to_json(OUT, force_ascii=False)
"""


def run_variant(body: str, **params) -> dict:
    head = "".join(f"{k} = {v!r}\n" for k, v in params.items())
    code = CHILD_PRELUDE + head + textwrap.dedent(body) + CHILD_EPILOGUE
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"variant failed:\n{proc.stderr[-3000:]}")
    line = next(x for x in proc.stdout.splitlines() if x.startswith("BENCH "))
    m = json.loads(line[6:])
    m["rss_mb"] = max(m["rss_self_kb"], m["rss_children_kb"]) / 1024
    m["rss_total_mb"] = (m["rss_self_kb"] + m["rss_children_kb"]) / 1024
    return m


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=300_000)
    ap.add_argument("--no-datasets", action="store_true")
    ap.add_argument("--no-4x", action="store_true")
    args = ap.parse_args()
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench_normalize_") as tmp:
        d = Path(tmp)
        t = time.perf_counter()
        jl, cv = generate(d, args.rows)
        size_mb = jl.stat().st_size / 1e6
        print(
            f"generated {args.rows} rows: jsonl {size_mb:.0f} MB, csv {cv.stat().st_size / 1e6:.0f} MB "
            f"in {time.perf_counter() - t:.1f}s",
            flush=True,
        )
        out = str(d / "out.jsonl")
        results["dataprep normalize (JSONL)"] = run_variant(DATAPREP, IN=str(jl), OUT=out, ROWS=args.rows)
        results["dataprep normalize (CSV)"] = run_variant(DATAPREP, IN=str(cv), OUT=out, ROWS=args.rows)
        results["of which: dataprep.sources reader alone (JSONL)"] = run_variant(
            READER, IN=str(jl), ROWS=args.rows
        )
        results["(a) json.loads/json.dumps loop (JSONL)"] = run_variant(LOOP, IN=str(jl), OUT=out)
        if not args.no_datasets:
            results["(b) datasets load+map(num_proc=2)+to_json (JSONL)"] = run_variant(
                DATASETS, IN=str(jl), OUT=out, CACHE=str(d / "hf_cache")
            )
        for k, v in results.items():
            print(f"{k}: {v['wall']:.2f}s, peak RSS {v['rss_mb']:.0f} MB", flush=True)
        if not args.no_4x:
            for p in d.glob("alpaca_*"):
                p.unlink()
            jl4, cv4 = generate(d, args.rows * 4)
            cv4.unlink()
            results["dataprep normalize (JSONL, 4x rows)"] = run_variant(
                DATAPREP, IN=str(jl4), OUT=out, ROWS=args.rows * 4
            )
    ours = results["dataprep normalize (JSONL)"]
    a = results["(a) json.loads/json.dumps loop (JSONL)"]
    lines = [
        f"### normalize: {args.rows:,} alpaca records ({size_mb:.0f} MB JSONL), {os.cpu_count()} CPUs",
        "",
        "| variant | wall (s) | peak RSS (MB) |",
        "|---|---:|---:|",
    ]
    for k, v in results.items():
        rss = f"{v['rss_mb']:.0f}"
        if v["rss_children_kb"] and "datasets" in k:
            rss += f" (+ workers: {v['rss_total_mb']:.0f} total)"
        lines.append(f"| {k} | {v['wall']:.2f} | {rss} |")
    lines.append("")
    lines.append(f"- speed-up vs (a) plain loop: **{a['wall'] / ours['wall']:.1f}x** (target >= 2x)")
    b = results.get("(b) datasets load+map(num_proc=2)+to_json (JSONL)")
    if b:
        lines.append(f"- speed-up vs (b) datasets: **{b['wall'] / ours['wall']:.1f}x** (target >= 5x)")
    lines.append(f"- peak RSS: **{ours['rss_mb']:.0f} MB** (target < 400 MB)")
    big = results.get("dataprep normalize (JSONL, 4x rows)")
    if big:
        lines.append(
            f"- peak RSS at 4x input: {big['rss_mb']:.0f} MB = **{big['rss_mb'] / ours['rss_mb']:.2f}x** "
            "(target <= 1.25x)"
        )
    lines.append("- validation included; output written atomically with a rejects file.")
    print("\n" + "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
