"""Soak: `stats` and `normalize` over millions of rows with peak RSS sampled over time; memory must stay flat.

Writes an alpaca JSONL of ``--rows`` rows (streamed, never held), runs each command in its own subprocess and
samples the RSS of its whole process tree every ``--every`` seconds with psutil. Reports rows, wall time, and the
RSS at 10%, 50% and 100% of the run (the peak so far at that point) plus the overall peak; memory is flat when
the 100% figure is within a small factor of the 10% one (stats keeps per-row count arrays: ~20 bytes a row).

    python bench/bench_soak.py --rows 2000000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "fixtures" / "models" / "chatml"


def write_input(path: Path, rows: int) -> None:
    words = "the quick brown fox jumps over a lazy dog while the rain falls on the hills".split()
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(rows):
            n = 8 + i % 40
            fh.write(
                json.dumps(
                    {
                        "instruction": f"{i}: " + " ".join(words[(i + k) % len(words)] for k in range(n)),
                        "input": "" if i % 3 else "some context " * (i % 7),
                        "output": " ".join(words[(i * 7 + k) % len(words)] for k in range(10 + i % 60)),
                    }
                )
                + "\n"
            )


def tree_rss(p: psutil.Process) -> int:
    total = 0
    for q in [p, *p.children(recursive=True)]:
        try:
            total += q.memory_info().rss
        except psutil.Error:
            pass
    return total


def soak(args: list[str], every: float) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "dataprep", *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    ps = psutil.Process(proc.pid)
    samples: list[tuple[float, int]] = []
    while proc.poll() is None:
        try:
            samples.append((time.perf_counter() - t0, tree_rss(ps)))
        except psutil.Error:
            pass
        time.sleep(every)
    err = proc.stderr.read()
    wall = time.perf_counter() - t0
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{args[0]} failed ({proc.returncode}): {err[-2000:]}")

    def peak_until(frac: float) -> float:
        upto = [r for t, r in samples if t <= frac * wall] or [samples[0][1]]
        return max(upto) / 2**20

    return {
        "wall_s": round(wall, 1),
        "rss_mb_at_10pct": round(peak_until(0.1)),
        "rss_mb_at_50pct": round(peak_until(0.5)),
        "rss_mb_at_100pct": round(peak_until(1.0)),
        "samples": len(samples),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--every", type=float, default=0.5)
    ap.add_argument("--only", choices=["stats", "normalize"], default=None)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        inp = Path(d) / "alpaca.jsonl"
        t = time.perf_counter()
        write_input(inp, a.rows)
        print(
            f"input: {a.rows} rows, {inp.stat().st_size / 2**20:.0f} MB ({time.perf_counter() - t:.0f} s)",
            flush=True,
        )
        runs = {
            "normalize": ["normalize", str(inp), str(Path(d) / "out.jsonl")],
            "stats": ["stats", str(inp), "--model", str(MODEL), "--json"],
        }
        print("| command | rows | wall (s) | RSS at 10% (MB) | at 50% | at 100% (peak) |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, args in runs.items():
            if a.only and name != a.only:
                continue
            r = soak(args, a.every)
            print(f"| {name} | {a.rows:,} | {r['wall_s']} | {r['rss_mb_at_10pct']} | {r['rss_mb_at_50pct']} | "
                  f"{r['rss_mb_at_100pct']} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
