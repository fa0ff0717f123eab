"""Benchmark the Ray engine against the local engine on generated Parquet shards, in one run.

    python bench/bench_ray.py [--rows 1000000] [--files 8] [--row-group 25000] [--stats-rows 100000]

Variants, each in its own subprocess (wall time; peak RSS of the driver process itself, not Ray's workers):
  normalize local          normalize(DIR, OUT.jsonl): the baseline
  normalize ray shards     normalize_ray(DIR, OUT/): a local Ray with num_cpus = the machine's cores
  normalize ray --merge    normalize_ray(DIR, OUT.jsonl, merge=True): shards concatenated on the driver
  jsonl local / ray        the same rows as one JSONL file; Ray cuts it into byte ranges (--block-bytes)
  stats local              compute_stats(conversations(DIR)) through fixtures/models/chatml-gen
  stats ray                stats_ray(DIR): measuring actors, one per core

Ray start-up (ray.init) is timed apart from the run. From the per-block timings it projects what one more
node adds: rows/s of one block on one core x the node's cores (ideal scaling; the shared filesystem and the
driver's merge are the limits it does not model). Prints a markdown snippet for bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "fixtures" / "models" / "chatml-gen"
WORDS = (
    "the model data train token answer question river mountain light energy system value memory network "
    "language python function result number reason simple quickly explain write summary story people "
    "garden coffee science history music design building market health travel school"
).split()


def generate(folder: Path, rows: int, files: int, row_group: int, seed: int = 0) -> Path:
    """``rows`` alpaca records (~330 bytes each, one in three with an input, one in 500 rejected) as Parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = WORDS

    def text(n: int) -> str:
        return " ".join(rng.choices(vocab, k=n)).capitalize() + "."

    per = -(-rows // files)
    done = 0
    for k in range(files):
        n = min(per, rows - done)
        ins, inp, out = [], [], []
        for i in range(done, done + n):
            ins.append(text(10))
            inp.append(text(12) if i % 3 == 0 else "")
            out.append("" if i % 500 == 7 else text(32))
        pq.write_table(
            pa.table({"instruction": ins, "input": inp, "output": out}),
            folder / f"train-{k:05d}.parquet",
            row_group_size=row_group,
        )
        done += n
    return folder


def to_jsonl(folder: Path, out: Path) -> Path:
    """The same rows as one JSONL file (the shape of a big raw dump)."""
    import pyarrow.parquet as pq

    with open(out, "w", encoding="utf-8") as fh:
        for f in sorted(folder.glob("*.parquet")):
            for rb in pq.ParquetFile(f).iter_batches(batch_size=65536):
                for rec in rb.to_pylist():
                    fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return out


PRELUDE = """
import json, sys, time
t0 = time.perf_counter()
extra = {}
"""
EPILOGUE = """
wall = time.perf_counter() - t0
# VmHWM: this process's peak RSS (ru_maxrss would carry the parent's peak across fork + exec on Linux)
hwm = next(int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmHWM:"))
print("BENCH " + json.dumps({"wall": wall, "rss_kb": hwm, **extra}))
"""
RAY_INIT = """
import os, ray
ti = time.perf_counter()
ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, logging_level="ERROR")
extra["ray_init"] = time.perf_counter() - ti
"""

VARIANTS = {
    "normalize local": """
from dataprep.normalize import normalize
r = normalize(IN, OUT + ".jsonl", force=True)
extra["written"] = r.written
""",
    "normalize ray shards": RAY_INIT
    + """
from dataprep.engine_ray import normalize_ray
tr = time.perf_counter()
r = normalize_ray(IN, OUT + ".shards", force=True, block_rows=BLOCK_ROWS)
extra.update(run=time.perf_counter() - tr, written=r.written, blocks=r.blocks,
             block_seconds=list(r.block_seconds))
""",
    "normalize ray --merge": RAY_INIT
    + """
from dataprep.engine_ray import normalize_ray
tr = time.perf_counter()
r = normalize_ray(IN, OUT + ".merged.jsonl", merge=True, force=True, block_rows=BLOCK_ROWS)
extra.update(run=time.perf_counter() - tr, written=r.written, blocks=r.blocks)
""",
    "jsonl local": """
from dataprep.normalize import normalize
r = normalize(JSONL_IN, OUT + ".jl-local.jsonl", force=True)
extra["written"] = r.written
""",
    "jsonl ray --merge": RAY_INIT
    + """
from dataprep.engine_ray import normalize_ray
tr = time.perf_counter()
r = normalize_ray(JSONL_IN, OUT + ".jl-ray.jsonl", merge=True, force=True, block_bytes=BLOCK_BYTES)
extra.update(run=time.perf_counter() - tr, written=r.written, blocks=r.blocks)
""",
    "stats local": """
from dataprep.pipeline import conversations
from dataprep.stats import compute_stats
from dataprep.tokenizer import load_tokenizer
r = compute_stats(conversations(STATS_IN), load_tokenizer(MODEL))
extra["rows"] = r.rows
open(OUT + ".stats-local.json", "w").write(json.dumps(r.to_dict(), sort_keys=True))
""",
    "stats ray": RAY_INIT
    + """
from dataprep.engine_ray import stats_ray
from dataprep.tokenizer import load_tokenizer
tr = time.perf_counter()
r = stats_ray(STATS_IN, load_tokenizer(MODEL), block_rows=BLOCK_ROWS)
extra.update(run=time.perf_counter() - tr, rows=r.rows)
open(OUT + ".stats-ray.json", "w").write(json.dumps(r.to_dict(), sort_keys=True))
""",
}


def run_variant(name: str, consts: dict) -> dict:
    code = PRELUDE + "".join(f"{k} = {v!r}\n" for k, v in consts.items()) + VARIANTS[name] + EPILOGUE
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=ROOT, check=False
    )
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH "):
            return json.loads(line[6:])
    raise RuntimeError(f"{name} failed:\n{proc.stderr[-3000:]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--row-group", type=int, default=25_000)
    ap.add_argument("--block-rows", type=int, default=50_000)
    ap.add_argument("--block-bytes", type=int, default=16 << 20, help="JSONL byte range per block")
    ap.add_argument("--stats-rows", type=int, default=100_000, help="rows measured by the stats variants")
    ap.add_argument("--out", type=Path, help="write the markdown snippet here too")
    args = ap.parse_args()

    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        t = Path(tmp)
        inp = generate(t / "in", args.rows, args.files, args.row_group)
        stats_in = generate(t / "stats-in", args.stats_rows, max(1, args.files // 2), args.row_group, seed=1)
        consts = {
            "IN": str(inp),
            "STATS_IN": str(stats_in),
            "OUT": str(t / "out"),
            "MODEL": str(MODEL),
            "BLOCK_ROWS": args.block_rows,
            "JSONL_IN": str(to_jsonl(inp, t / "all.jsonl")),
            "BLOCK_BYTES": args.block_bytes,
        }
        res = {}
        for name in VARIANTS:
            res[name] = run_variant(name, consts)
            print(f"{name}: {json.dumps({k: v for k, v in res[name].items() if k != 'block_seconds'})}")
        same_bytes = (t / "out.jsonl").read_bytes() == (t / "out.merged.jsonl").read_bytes()
        shards = sorted((t / "out.shards").glob("part-*.jsonl"))
        same_shards = b"".join(p.read_bytes() for p in shards) == (t / "out.jsonl").read_bytes()
        same_stats = (t / "out.stats-local.json").read_text() == (t / "out.stats-ray.json").read_text()
        same_jsonl = (t / "out.jl-local.jsonl").read_bytes() == (t / "out.jl-ray.jsonl").read_bytes()
        jsonl_mb = (t / "all.jsonl").stat().st_size / 1e6

    loc, sh, mg = res["normalize local"], res["normalize ray shards"], res["normalize ray --merge"]
    sl, sr = res["stats local"], res["stats ray"]
    jl, jr = res["jsonl local"], res["jsonl ray --merge"]
    blocks = sh["blocks"]
    bsec = sh["block_seconds"]
    rows_per_block = args.rows / blocks
    per_core = args.rows / sum(bsec)  # rows/s of one core inside a block (worker-seconds, no scheduling)
    mb = lambda kb: f"{kb / 1024:.0f} MB"  # noqa: E731
    lines = [
        f"### Ray engine vs local engine ({args.rows:,} generated alpaca rows, {args.files} Parquet files, "
        f"row groups of {args.row_group:,}; this machine: {cores} shared cores, a local Ray with num_cpus={cores})",
        "",
        "| variant | wall (s) | of which ray.init (s) | rows/s (wall) | ratio vs local | driver peak RSS |",
        "|---|---:|---:|---:|---:|---:|",
        f"| normalize, local engine | {loc['wall']:.1f} | - | {args.rows / loc['wall']:,.0f} | 1.00 | "
        f"{mb(loc['rss_kb'])} |",
        f"| normalize, ray, {blocks} shards | {sh['wall']:.1f} | {sh['ray_init']:.1f} | "
        f"{args.rows / sh['wall']:,.0f} | {loc['wall'] / sh['wall']:.2f} | {mb(sh['rss_kb'])} |",
        f"| normalize, ray, --merge | {mg['wall']:.1f} | {mg['ray_init']:.1f} | {args.rows / mg['wall']:,.0f} | "
        f"{loc['wall'] / mg['wall']:.2f} | {mb(mg['rss_kb'])} |",
        f"| one {jsonl_mb:,.0f} MB JSONL file, local engine | {jl['wall']:.1f} | - | {args.rows / jl['wall']:,.0f} | "
        f"1.00 | {mb(jl['rss_kb'])} |",
        f"| same JSONL, ray --merge, {jr['blocks']} byte ranges | {jr['wall']:.1f} | {jr['ray_init']:.1f} | "
        f"{args.rows / jr['wall']:,.0f} | {jl['wall'] / jr['wall']:.2f} | {mb(jr['rss_kb'])} |",
        f"| stats ({args.stats_rows:,} rows), local engine | {sl['wall']:.1f} | - | "
        f"{args.stats_rows / sl['wall']:,.0f} | 1.00 | {mb(sl['rss_kb'])} |",
        f"| stats ({args.stats_rows:,} rows), ray, {cores} actors | {sr['wall']:.1f} | {sr['ray_init']:.1f} | "
        f"{args.stats_rows / sr['wall']:,.0f} | {sl['wall'] / sr['wall']:.2f} | {mb(sr['rss_kb'])} |",
        "",
        f"- ratio = local wall / ray wall (above 1: Ray is faster). Output identical: merged file "
        f"{'yes' if same_bytes else 'NO'}, shards concatenated {'yes' if same_shards else 'NO'}, "
        f"JSONL merged file {'yes' if same_jsonl else 'NO'}, stats JSON {'yes' if same_stats else 'NO'}.",
        f"- blocks: {blocks} of ~{rows_per_block:,.0f} rows; per-block time median {statistics.median(bsec):.2f} s "
        f"(min {min(bsec):.2f}, max {max(bsec):.2f}), {sum(bsec):.1f} worker-seconds in all -> one core converts "
        f"~{per_core:,.0f} rows/s inside a block.",
        f"- Ray's own cost here: the convert run took {sh['run']:.1f} s on {cores} cores for {sum(bsec):.1f} "
        f"worker-seconds of block work ({sum(bsec) / (sh['run'] * cores):.0%} busy); the rest is worker start-up "
        "(each fresh worker imports dataprep, pyarrow, polars), scheduling and the driver's planning.",
        f"- projection: each added node of C cores adds ~C x {per_core:,.0f} rows/s of conversion (16 cores: "
        f"~{16 * per_core:,.0f} rows/s, 1M rows in ~{1e6 / (16 * per_core):.1f} s of block work per node) while "
        "there are at least as many blocks as cores and the shared filesystem keeps up; the fixed cost is "
        "ray.init/connect plus scheduling (seconds), and --merge adds one sequential copy on the driver. Token "
        f"counting is ~{args.stats_rows / sl['wall']:,.0f} rows/s for one local process here (render and encode "
        f"overlapped), ~{per_core / (args.stats_rows / sl['wall']):.0f}x slower than conversion, so for stats "
        "Ray's fixed cost is amortized far sooner and a cluster pays off much sooner than for normalize.",
    ]
    md = "\n".join(lines)
    print()
    print(md)
    if args.out:
        args.out.write_text(md + "\n")


if __name__ == "__main__":
    main()
