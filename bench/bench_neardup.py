"""Benchmark near-duplicate detection (``dataprep.neardup``) on alpaca rows with injected near duplicates.

    python bench/bench_neardup.py [--rows 200000] [--rate 0.05] [--no-datasketch]

The data: ``--rows`` alpaca records (instruction from 40 templates with a topic and a number, an answer of 40-160
words from a 2,000-word Zipf vocabulary, one in three with an input). A fraction ``--rate`` of the rows are
edited copies of an earlier original row (the truth): 1-3 words replaced, the numbers changed, whitespace and
punctuation changed, or all of these.

Variants, each timed in its own subprocess (wall time and peak RSS), in the same run:
  dataprep normalize --dedup near   the whole pipeline (read, convert, validate, exact + near dedup, write)
  dataprep normalize --dedup        exact dedup only: the baseline a user runs today
  NearDup over conversations   the detector alone with dataprep's reader; recall and precision
  (lib) rensa loop                  json.loads -> text -> word 3-grams -> RMinHash + RMinHashLSH, verified
  (lib) datasketch loop             the same with datasketch MinHash(update_batch) + MinHashLSH(0.7, 128)
                                    (the baseline; not a dataprep dependency: pip install datasketch, else skipped)

Recall: injected copies reported as a near duplicate of their source row. Precision: reported near duplicates
that are injected copies. Prints a markdown table for bench/README.md and the ratios.
"""

from __future__ import annotations

import argparse
import importlib.util
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
TEMPLATES = [
    f"{verb} {what} about {{topic}} in {{n}} {unit}."
    for verb in ("Explain", "Describe", "Summarize", "Write", "List")
    for what in ("the key ideas", "a short guide", "the main risks", "the history")
    for unit in ("steps", "sentences")
]


def _vocab(rng: random.Random, n: int = 2000) -> list[str]:
    syll = "ka lo mi ne ru sa te vo da fi gu ha ji ko lu ma no pi re si to ve wa yo ze".split()
    out: set[str] = set()
    while len(out) < n:
        out.add("".join(rng.choice(syll) for _ in range(rng.randint(1, 4))))
    return sorted(out)


def generate(path: Path, rows: int, rate: float, seed: int = 0) -> dict[int, int]:
    """Write ``rows`` alpaca records to ``path``; return {injected row: source row} (1-based rows)."""
    rng = random.Random(seed)
    vocab = _vocab(rng)
    weights = [1 / (i + 1) for i in range(len(vocab))]  # Zipf: a few common words, a long tail
    cum = list(__import__("itertools").accumulate(weights))

    def text(n: int) -> str:
        ws = rng.choices(vocab, cum_weights=cum, k=n)
        for i in range(0, n, rng.randint(8, 15)):
            ws[i] = ws[i].capitalize() if i == 0 else ws[i] + ","
        return " ".join(ws) + "."

    truth: dict[int, int] = {}
    originals: list[dict] = []
    with open(path, "w", encoding="utf-8") as f:
        for row in range(1, rows + 1):
            if originals and rng.random() < rate:
                src_row, src = rng.choice(originals)
                rec = _edit(rng, src, vocab)
                truth[row] = src_row
            else:
                rec = {
                    "instruction": rng.choice(TEMPLATES).format(
                        topic=rng.choice(vocab), n=rng.randint(2, 99)
                    ),
                    "input": text(rng.randint(15, 40)) if row % 3 == 0 else "",
                    "output": text(rng.randint(40, 160)) + f" That makes {rng.randint(2, 999)} in total.",
                }
                if len(originals) < 200_000:  # the sources of copies (bounded: the generator stays small)
                    originals.append((row, rec))
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return truth


def _edit(rng: random.Random, rec: dict, vocab: list[str]) -> dict:
    kind = rng.randrange(4)
    out = dict(rec)
    if kind in (0, 3):  # 1-3 words replaced in the answer
        ws = out["output"].split(" ")
        for _ in range(rng.randint(1, 3)):
            ws[rng.randrange(len(ws))] = rng.choice(vocab)
        out["output"] = " ".join(ws)
    if kind in (1, 3):  # every number changed
        for k in ("instruction", "output"):
            out[k] = "".join(str(rng.randrange(10)) if c.isdigit() else c for c in out[k])
    if kind in (2, 3):  # whitespace and punctuation
        out["output"] = out["output"].replace(", ", " ,  ").replace(".", "!")
        out["instruction"] = "  " + out["instruction"].replace(" ", "\t", 2)
    return out


CHILD_PRELUDE = """
import json, resource, sys, time
t0 = time.perf_counter()
"""
CHILD_EPILOGUE = """
wall = time.perf_counter() - t0
print("BENCH " + json.dumps({"wall": wall, "rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                             "found": {str(k): v for k, v in FOUND.items()}}))
"""

NORMALIZE = """
from dataprep.normalize import normalize
r = normalize(IN, OUT, force=True, dedup=MODE)
assert r.reconciled, r.to_dict()
FOUND = {}
if MODE == "near":
    with open(OUT[:-6] + ".rejects.jsonl", encoding="utf-8") as f:
        for line in f:
            x = json.loads(line)
            if x["code"] == "near_duplicate":
                FOUND[x["row"]] = int(x["message"].split("of row ")[1].split(" ")[0])
"""

DETECTOR = """
from dataprep.neardup import NearDup
from dataprep.pipeline import conversations
d = NearDup()
FOUND = {}
for row, conv in conversations(IN):
    of = d.check(row, conv)
    if of is not None:
        FOUND[row] = of
"""

LOOP_HEAD = """
import re
import numpy as np
W = re.compile(r"\\w+")
def shingles(rec):
    t = rec["instruction"] + ("\\n\\n" + rec["input"] if rec.get("input") else "") + "\\n" + rec["output"]
    ws = W.findall(t.lower())
    return [" ".join(ws[i:i + 3]) for i in range(max(1, len(ws) - 2))]
FOUND = {}
"""

RENSA_LOOP = """
from rensa import RMinHash, RMinHashLSH
lsh = RMinHashLSH(threshold=0.7, num_perm=128, num_bands=32)
kept = {}
with open(IN, encoding="utf-8") as f:
    for row, line in enumerate(f, 1):
        m = RMinHash(num_perm=128, seed=1)
        m.update(shingles(json.loads(line)))
        best = max(((m.jaccard(kept[k]), -k) for k in lsh.query(m)), default=(0, 0))
        if best[0] >= 0.7:
            FOUND[row] = -best[1]
        else:
            kept[row] = m
            lsh.insert(row, m)
"""

DATASKETCH_LOOP = """
from datasketch import MinHash, MinHashLSH
lsh = MinHashLSH(threshold=0.7, num_perm=128)
kept = {}
with open(IN, encoding="utf-8") as f:
    for row, line in enumerate(f, 1):
        m = MinHash(num_perm=128, seed=1)
        m.update_batch([s.encode() for s in shingles(json.loads(line))])
        best = max(((m.jaccard(kept[k]), -k) for k in lsh.query(m)), default=(0, 0))
        if best[0] >= 0.7:
            FOUND[row] = -best[1]
        else:
            kept[row] = m
            lsh.insert(row, m)
"""


def run_variant(body: str, **params) -> dict:
    head = "".join(f"{k} = {v!r}\n" for k, v in params.items())
    code = CHILD_PRELUDE + head + textwrap.dedent(body) + CHILD_EPILOGUE
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=os.environ
    )
    if proc.returncode != 0:
        raise SystemExit(f"variant failed:\n{proc.stderr[-3000:]}")
    line = next(x for x in proc.stdout.splitlines() if x.startswith("BENCH "))
    m = json.loads(line[6:])
    m["rss_mb"] = m["rss_kb"] / 1024
    m["found"] = {int(k): v for k, v in m["found"].items()}
    return m


def score(found: dict[int, int], truth: dict[int, int], rows: int) -> dict:
    hits = sum(1 for r, src in truth.items() if found.get(r) == src)
    flagged_injected = sum(1 for r in found if r in truth)
    false = len(found) - flagged_injected
    return {
        "recall": hits / len(truth) if truth else 1.0,
        "precision": flagged_injected / len(found) if found else 1.0,
        "fp_rate": false / (rows - len(truth)),
        "false": false,
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--rate", type=float, default=0.05)
    ap.add_argument("--no-datasketch", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_neardup_") as tmp:
        d = Path(tmp)
        src = d / f"alpaca_{args.rows}.jsonl"
        t = time.perf_counter()
        truth = generate(src, args.rows, args.rate)
        print(
            f"generated {args.rows} rows ({src.stat().st_size / 1e6:.0f} MB), {len(truth)} injected near "
            f"duplicates, in {time.perf_counter() - t:.1f}s",
            flush=True,
        )
        out = str(d / "out.jsonl")
        res: dict[str, dict] = {}
        variants = [
            ("dataprep normalize --dedup near", NORMALIZE, {"OUT": out, "MODE": "near"}),
            ("dataprep normalize --dedup (exact)", NORMALIZE, {"OUT": out, "MODE": "exact"}),
            ("NearDup over conversations", DETECTOR, {}),
            ("(lib) rensa loop", LOOP_HEAD + RENSA_LOOP, {}),
        ]
        if importlib.util.find_spec("datasketch") is None and not args.no_datasketch:
            print("datasketch is not installed (pip install datasketch): its loop is skipped", flush=True)
            args.no_datasketch = True
        if not args.no_datasketch:
            variants.append(("(lib) datasketch loop", LOOP_HEAD + DATASKETCH_LOOP, {}))
        for name, body, params in variants:
            res[name] = m = run_variant(body, IN=str(src), **params)
            if name != "dataprep normalize --dedup (exact)":
                m.update(score(m["found"], truth, args.rows))
            print(f"{name}: {m['wall']:.1f}s, peak RSS {m['rss_mb']:.0f} MB", flush=True)
    exact = res["dataprep normalize --dedup (exact)"]["wall"]
    print(f"\n{args.rows} rows, {len(truth)} injected ({args.rate:.0%}), {os.cpu_count()} CPUs\n")
    print("| variant | wall | rows/s | vs exact dedup | peak RSS | recall | precision | false positives |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, m in res.items():
        q = (
            f"{m['recall']:.2%} | {m['precision']:.2%} | {m['false']} ({m['fp_rate']:.3%})"
            if "recall" in m
            else "- | - | -"
        )
        print(
            f"| {name} | {m['wall']:.1f} s | {args.rows / m['wall']:,.0f} | {m['wall'] / exact:.2f}x | "
            f"{m['rss_mb']:.0f} MB | {q} |"
        )
    if "(lib) datasketch loop" in res:
        r, s = res["(lib) rensa loop"], res["(lib) datasketch loop"]
        print(
            f"\nrensa vs datasketch (same loop): {s['wall'] / r['wall']:.1f}x faster, "
            f"peak RSS {r['rss_mb']:.0f} MB vs {s['rss_mb']:.0f} MB"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
