"""Benchmark `dataprep stats` measuring (dataprep.measure) against the ways people count tokens today.

    .venv/bin/python bench/bench_stats.py [--rows 20000] [--rounds 3] [--only TEXT] [--before OLD_MEASURE.py] [--out FILE.md]

On generated conversations (alpaca-sized single turns, and multi-turn chats sharing one system prompt), with
the real Phi-3 and Qwen2 tokenizers from ../shared/real/tokenizers (skipped with a message when absent), in one run:

    (a) loop     a Python loop of tokenizer.apply_chat_template(messages, tools=..., tokenize=True)
    (b) datasets datasets.Dataset.from_list(...).map(batched=True, num_proc=2) doing the same
    (c) limit    texts rendered beforehand (not timed) through tokenizer.backend_tokenizer.encode_batch alone
    ours         dataprep.measure.measure_conversations: total AND supervised tokens (and turns), workers=1 / 2

(a)-(c) count total tokens only; ours also computes the supervised counts. ``--before`` adds one more method:
dataprep workers=1 with another copy of dataprep/measure.py (keep the committed one aside before changing it),
so before and after are measured in the same interleaved rounds; their supervised sums must agree too. Every method runs in its own
subprocess (clean memory figures), in interleaved rounds (the fastest round counts): time per conversation and peak extra memory (RSS of the process and its
children, sampled, above what it held before the method started). Per-row totals are compared across (a),
(b) and ours: the run fails if they differ. Ratios within one run are what count; the machine is shared.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REAL = HERE.parent.parent / "shared" / "real" / "tokenizers"

# A ChatML template with {% generation %} tags, written for this benchmark (for the generation_tags path).
CHATML_GEN = (
    "{% for m in messages %}{% if m.role == 'assistant' %}<|im_start|>assistant\n"
    "{% generation %}{{ m.content }}<|im_end|>{% endgeneration %}\n"
    "{% else %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

CONFIGS = [
    # (label, tokenizer folder, template override, data kind)
    ("Phi-3 alpaca", "Phi-3-mini-4k-instruct", None, "alpaca"),
    ("Phi-3 multi-turn", "Phi-3-mini-4k-instruct", None, "multi"),
    ("Qwen2 alpaca", "Qwen2-Boundless", None, "alpaca"),
    ("Qwen2 multi-turn", "Qwen2-Boundless", None, "multi"),
    ("Qwen2 + gen tags, alpaca", "Qwen2-Boundless", CHATML_GEN, "alpaca"),
    ("Qwen2 + gen tags, alpaca + shared system prompt", "Qwen2-Boundless", CHATML_GEN, "sysalpaca"),
]
METHODS = ["a", "b", "c", "ours1", "ours2"]
METHOD_NAMES = {
    "a": "(a) apply_chat_template loop",
    "b": "(b) datasets map num_proc=2",
    "c": "(c) encode_batch of pre-rendered",
    "ours1": "dataprep workers=1",
    "ours2": "dataprep workers=2",
    "before": "dataprep workers=1, measure.py given by --before",
}

WORDS = (
    "the of and to in is was for on that with as by at from his an were are which this be or has had not but first "
    "one their its new after who they have her she two been other when there all during into school time may years "
    "more most only over city some world would where later up such used many can state about national out known "
    "university united then made year three team including area American number people system between under "
    "well also each how what explain describe why write list give example data model answer question, step. "
    "function returns value: 42 3.14 (see below) — naïve café 数据 Paris"
).split()


def _text(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def make_data(kind: str, rows: int, seed: int = 0) -> list[dict]:
    return list(iter_data(kind, rows, seed))


def iter_data(kind: str, rows: int, seed: int = 0):
    """The rows of ``make_data``, one at a time (the scale run never holds a million conversations)."""
    rng = random.Random(seed)
    system = "You are a helpful assistant. " + _text(
        random.Random(99), 40, 40
    )  # one prompt shared by all rows
    long_system = _text(random.Random(98), 600, 600)  # a long prompt shared by all rows (sysalpaca)
    for _ in range(rows):
        if kind in ("alpaca", "sysalpaca"):
            user = _text(rng, 8, 60)
            if rng.random() < 0.4:
                user += "\n\n" + _text(rng, 5, 80)
            msgs = [{"role": "user", "content": user}, {"role": "assistant", "content": _text(rng, 20, 250)}]
            if kind == "sysalpaca":
                msgs.insert(0, {"role": "system", "content": long_system})
        else:
            msgs = [{"role": "system", "content": system}]
            for _turn in range(rng.randint(2, 4)):
                msgs.append({"role": "user", "content": _text(rng, 10, 80)})
                msgs.append({"role": "assistant", "content": _text(rng, 10, 120)})
        yield {"messages": msgs}


# -- one method in a child process -----------------------------------------------------------------------------
class PeakRSS:
    """Samples RSS of this process plus its children; ``extra`` = peak minus the level at start, in MiB."""

    def __init__(self, interval: float = 0.02):
        import psutil

        self.proc = psutil.Process()
        self.interval = interval
        self.base = self._rss()
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> int:
        total = self.proc.memory_info().rss
        for c in self.proc.children(recursive=True):
            try:
                total += c.memory_info().rss
            except Exception:
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def extra_mib(self) -> float:
        return (self.peak - self.base) / 2**20


def run_method(method: str, tok, loaded, convs: list[dict], texts: list[str] | None):
    """(per-row totals, supervised sum or None, mask source or None) by one method."""
    if method == "a":
        totals = [
            len(tok.apply_chat_template(c["messages"], tools=c.get("tools"), tokenize=True)["input_ids"])
            for c in convs
        ]
        return totals, None, None
    if method == "b":
        import datasets

        datasets.disable_progress_bars()

        def fn(batch):
            ids = tok.apply_chat_template(batch["messages"], tokenize=True)["input_ids"]
            return {"n": [len(x) for x in ids]}

        ds = datasets.Dataset.from_list(convs).map(
            fn, batched=True, num_proc=2, remove_columns=["messages"], load_from_cache_file=False
        )
        return list(ds["n"]), None, None
    if method == "c":
        encs = tok.backend_tokenizer.encode_batch(texts, add_special_tokens=False)
        return [len(e) for e in encs], None, None
    if method == "before":
        measure_conversations = _load_module(os.environ["BENCH_STATS_BEFORE"]).measure_conversations
    else:
        from dataprep.measure import measure_conversations

    counts = measure_conversations(enumerate(convs, 1), loaded, workers=2 if method == "ours2" else 1)
    return counts.total.tolist(), int(counts.supervised.sum()), counts.mask_source


def _load_module(path: str):
    """A measure.py from elsewhere (the committed one, kept aside) as module ``measure_before``."""
    import importlib.util

    name = "dataprep._measure_before"  # inside the package: its relative imports resolve
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def scale_child(method: str, folder: str, kind: str, rows: int) -> dict:
    """One scale run: ``rows`` generated rows streamed through measure_conversations (never held as a list)."""
    from dataprep.measure import measure_conversations  # "before-": PYTHONPATH puts --before-tree first
    from dataprep.tokenizer import load_tokenizer

    workers = method.rsplit("-w", 1)[1]
    loaded = load_tokenizer(str(REAL / folder))
    with PeakRSS() as mem:
        start = time.perf_counter()
        counts = measure_conversations(
            enumerate(iter_data(kind, rows), 1),
            loaded,
            workers=workers if workers == "auto" else int(workers),
        )
        wall = time.perf_counter() - start
    import hashlib

    return {
        "rows_per_s": rows / wall,
        "wall": wall,
        "peak_mib": mem.peak / 2**20,
        "totals_sha1": hashlib.sha1(counts.total.tobytes()).hexdigest(),
        "supervised_sha1": hashlib.sha1(counts.supervised.tobytes()).hexdigest(),
    }


def child(method: str, folder: str, template: str | None, kind: str, rows: int) -> dict:
    import numpy as np

    from dataprep.tokenizer import load_tokenizer

    loaded = load_tokenizer(str(REAL / folder), chat_template=template)
    tok = loaded.tokenizer
    convs = make_data(kind, rows)
    texts = None
    if method == "c":
        texts = [tok.apply_chat_template(c["messages"], tokenize=False) for c in convs]
    # warm up the template cache and the tokenizer
    tok.apply_chat_template(convs[0]["messages"], tokenize=True)
    with PeakRSS() as mem:
        start = time.perf_counter()
        totals, sup_sum, mask_source = run_method(method, tok, loaded, convs, texts)
        best = time.perf_counter() - start
    arr = np.asarray(totals, dtype=np.int32)
    return {
        "us_per_conv": best / rows * 1e6,
        "extra_mib": mem.extra_mib,
        "totals_sha1": hashlib.sha1(arr.tobytes()).hexdigest(),
        "tokens": int(arr.sum()),
        "supervised": sup_sum,
        "mask_source": mask_source,
    }


# -- the parent: run everything, compare, print markdown ---------------------------------------------------------
def run_child(method: str, cfg: tuple, rows: int, env: dict) -> dict:
    label, folder, template, kind = cfg
    args = [
        sys.executable,
        __file__,
        "--child",
        method,
        "--folder",
        folder,
        "--kind",
        kind,
        "--rows",
        str(rows),
    ]
    if template:
        args += ["--template", template]
    out = subprocess.run(args, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"{label} / {method} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; each method keeps its fastest")
    ap.add_argument("--out", help="also write the markdown to this file")
    ap.add_argument("--only", help="run configs whose label contains this text")
    ap.add_argument(
        "--before",
        help="another dataprep/measure.py (e.g. the committed one, copied aside) run as one more method, "
        "workers=1, interleaved with the others: before/after in the same run",
    )
    ap.add_argument(
        "--scale",
        help="comma-separated row counts (e.g. 200000,1000000): stream that many Qwen2 alpaca rows through "
        "dataprep w=1 and w=2 (and the --before-tree checkout's at the first count): rows/s and peak RSS",
    )
    ap.add_argument(
        "--preflight",
        type=int,
        help="N: write N alpaca rows as JSONL and time `dataprep stats` against `dataprep preflight` (CLI, "
        "fixtures/demo model) on them; with --before-tree, the same commands of another checkout",
    )
    ap.add_argument(
        "--before-tree",
        help="another dataprep checkout (a git worktree): the before of --scale and --preflight",
    )
    ap.add_argument("--child")
    ap.add_argument("--folder")
    ap.add_argument("--template")
    ap.add_argument("--kind")
    a = ap.parse_args(argv)
    if a.child:
        if a.child.startswith(("scale", "before-scale")):
            print(json.dumps(scale_child(a.child, a.folder, a.kind, a.rows)))
        else:
            print(json.dumps(child(a.child, a.folder, a.template, a.kind, a.rows)))
        return 0
    if not REAL.is_dir():
        print(
            f"bench_stats: {REAL} is absent; the benchmark needs the real Phi-3 and Qwen2 tokenizers. Skipped."
        )
        return 0
    tmp = tempfile.mkdtemp(prefix="bench_stats_")
    env = {
        **os.environ,
        "HF_HOME": tmp,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TRANSFORMERS_VERBOSITY": "error",
        "PYTHONPATH": str(HERE.parent) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    if a.scale or a.preflight:
        out = []
        if a.scale:
            out.append(run_scale([int(x) for x in a.scale.split(",")], env, a.before_tree, a.rounds))
        if a.preflight:
            out.append(run_preflight_vs_stats(a.preflight, env, a.before_tree, a.rounds, tmp))
        md = "\n\n".join(out) + "\n"
        print(md)
        if a.out:
            Path(a.out).write_text(md, encoding="utf-8")
        return 1 if "differ" in md else 0
    methods = METHODS + (["before"] if a.before else [])
    if a.before:
        env["BENCH_STATS_BEFORE"] = str(Path(a.before).resolve())
    lines = [
        f"`bench/bench_stats.py --rows {a.rows} --rounds {a.rounds}` ({os.cpu_count()} cores, shared; load "
        f"average at start {os.getloadavg()[0]:.1f}); us per conversation (fastest of the interleaved rounds), "
        "lower is better; peak extra memory in MiB (process + children). (a)-(c) count total tokens only; "
        "dataprep also counts supervised tokens. `vs` columns use the faster dataprep setting.",
        "",
        "| data / tokenizer | mask source | (a) loop | (b) datasets | (c) limit | dataprep w=1 | dataprep w=2 "
        "| vs (a) | vs (b) | vs (c) | memory (a) / (b) / (c) / w=1 / w=2 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    if a.before:
        lines[0] += f" `before`: dataprep w=1 with the measure.py given by `--before` ({a.before}), same run."
        lines[2] += " before w=1 | w=1 speedup over before | before vs (c) |"
        lines[3] += "---|---|---|"
    configs = [c for c in CONFIGS if not a.only or a.only in c[0]]
    for cfg in list(configs):
        if not (REAL / cfg[1]).is_dir():
            print(f"bench_stats: {REAL / cfg[1]} is absent, {cfg[0]} skipped")
            configs.remove(cfg)
    # Rounds interleave the methods, and each method keeps its fastest round: on a shared machine the load
    # changes by the minute, and the minimum is the least disturbed figure.
    results: dict[tuple[str, str], list[dict]] = {}
    for rnd in range(a.rounds):
        for cfg in configs:
            for m in methods:
                results.setdefault((cfg[0], m), []).append(run_child(m, cfg, a.rows, env))
            print(
                f"round {rnd + 1}/{a.rounds}: {cfg[0]} done (load {os.getloadavg()[0]:.1f})", file=sys.stderr
            )
    failed = False
    for cfg in configs:
        label = cfg[0]
        res = {m: min(results[(label, m)], key=lambda r: r["us_per_conv"]) for m in methods}
        hashes = {r["totals_sha1"] for m in methods if m != "c" for r in results[(label, m)]}
        sups = {
            r["supervised"] for m in methods if m.startswith(("ours", "before")) for r in results[(label, m)]
        }
        same = len(hashes) == 1 and len(sups) == 1  # supervised sums too, across dataprep runs and versions
        failed |= not same
        best = min(res["ours1"]["us_per_conv"], res["ours2"]["us_per_conv"])
        us = {m: r["us_per_conv"] for m, r in res.items()}
        lines.append(
            f"| {label} | {res['ours1']['mask_source']} | {us['a']:.0f} | {us['b']:.0f} | {us['c']:.0f} "
            f"| {us['ours1']:.0f} | {us['ours2']:.0f} | {us['a'] / best:.2f}x faster | {us['b'] / best:.2f}x faster "
            f"| {best / us['c']:.2f}x of (c) | "
            + " / ".join(f"{res[m]['extra_mib']:.0f}" for m in METHODS)
            + (
                f" | {us['before']:.0f} | {us['before'] / us['ours1']:.2f}x | {us['before'] / us['c']:.2f}x of (c) |"
                if a.before
                else " |"
            )
            + ("" if same else " **per-row totals or supervised sums differ** |")
        )
    md = "\n".join(lines) + "\n"
    print()
    print(md)
    if a.out:
        Path(a.out).write_text(md, encoding="utf-8")
    return 1 if failed else 0


def run_scale(sizes: list[int], env: dict, before_tree: str | None, rounds: int) -> str:
    """Rows/s and peak RSS of long streams (Qwen2 alpaca rows): w=1, w=2, and the --before-tree checkout's at
    the first size. Per-row totals and supervised counts must be identical across every method."""
    before = before_tree is not None
    folder, kind = "Qwen2-Boundless", "alpaca"
    data = Path(tempfile.mkdtemp(prefix="bench_scale_")) / "rows.jsonl"
    with open(data, "w", encoding="utf-8") as fh:
        for conv in iter_data(kind, max(sizes)):
            fh.write(json.dumps(conv, ensure_ascii=False) + "\n")
    env = {**env, "BENCH_STATS_SCALE_DATA": str(data)}
    env_before = {
        **env,
        "PYTHONPATH": str(Path(before_tree or ".").resolve()) + os.pathsep + env["PYTHONPATH"],
    }
    lines = [
        f"Scale: {kind} rows read from a JSONL file (one json.loads a line), Qwen2 tokenizer, streamed through "
        "measure_conversations "
        f"({os.cpu_count()} cores, load at start {os.getloadavg()[0]:.1f}; best of {rounds}). Peak RSS: the "
        "process and its children (worker processes included).",
        "",
        "| rows | method | rows/s | wall (s) | peak RSS (MiB) | vs w=1 |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for i, n in enumerate(sizes):
        methods = ["scale-w1", "scale-w2"] + (
            ["before-scale-w1", "before-scale-w2"] if before and i == 0 else []
        )
        res: dict[str, dict] = {}
        for _ in range(rounds):
            for m in methods:
                r = run_child(
                    m, ("scale", folder, None, kind), n, env_before if m.startswith("before") else env
                )
                if m not in res or r["rows_per_s"] > res[m]["rows_per_s"]:
                    res[m] = r
                print(f"scale {n} {m}: {r['rows_per_s']:.0f} rows/s", file=sys.stderr)
        same = len({(r["totals_sha1"], r["supervised_sha1"]) for r in res.values()}) == 1
        base = res["scale-w1"]["rows_per_s"]
        for m in methods:
            r = res[m]
            lines.append(
                f"| {n:,} | {m.replace('scale-', '').replace('w', 'w=')} | {r['rows_per_s']:,.0f} | {r['wall']:.1f} "
                f"| {r['peak_mib']:.0f} | {r['rows_per_s'] / base:.2f}x |"
            )
        if not same:
            lines.append(f"| {n:,} | **per-row counts differ between methods** | | | | |")
    return "\n".join(lines)


def run_preflight_vs_stats(rows: int, env: dict, before_tree: str | None, rounds: int, tmp: str) -> str:
    """`dataprep stats` and `dataprep preflight` (defaults, and --no-near-dup) on the same N alpaca rows,
    through the CLI as a user runs them; the fixture demo model (Llama-3.2-1B shape, ChatML template)."""
    data = Path(tmp) / "alpaca.jsonl"
    rng = random.Random(5)
    with open(data, "w", encoding="utf-8") as fh:
        for _ in range(rows):
            fh.write(
                json.dumps(
                    {"instruction": _text(rng, 8, 60), "input": "", "output": _text(rng, 20, 250)},
                    ensure_ascii=False,
                )
                + "\n"
            )
    model = HERE.parent / "fixtures" / "demo" / "llama-3.2-1b-chatml"
    trees = {"after": HERE.parent}
    if before_tree:
        trees["before"] = Path(before_tree).resolve()
    commands = {
        "stats": ["stats", str(data), "--model", str(model), "--json"],
        "preflight": ["preflight", "--dataset", str(data), "--model", str(model), "--gpus", "1", "--gpu", "h100"],
        "preflight --no-near-dup": [
            "preflight", "--dataset", str(data), "--model", str(model), "--gpus", "1", "--gpu", "h100",
            "--no-near-dup",
        ],
    }  # fmt: skip
    best: dict[tuple[str, str], float] = {}
    for _ in range(rounds):
        for tree_name, tree in trees.items():
            for name, args in commands.items():
                out = Path(tmp) / f"pf-{tree_name}-{name.replace(' ', '')}"
                extra = ["--out", str(out)] if args[0] == "preflight" else []
                e = {**env, "PYTHONPATH": str(tree) + os.pathsep + env.get("PYTHONPATH", "")}
                start = time.perf_counter()
                p = subprocess.run(
                    [sys.executable, "-c", "from dataprep.cli import main; main()", *args, *extra],
                    env=e,
                    capture_output=True,
                    text=True,
                    cwd=tree,
                )
                wall = time.perf_counter() - start
                if p.returncode not in (0, 1):
                    raise SystemExit(f"{tree_name} {name} failed ({p.returncode}):\n{p.stderr[-3000:]}")
                key = (tree_name, name)
                best[key] = min(best.get(key, wall), wall)
                print(f"{tree_name} {name}: {wall:.1f}s", file=sys.stderr)
    lines = [
        f"preflight vs stats: {rows:,} alpaca rows (JSONL), `fixtures/demo/llama-3.2-1b-chatml`, CLI wall time "
        f"(best of {rounds}; {os.cpu_count()} cores, load at start {os.getloadavg()[0]:.1f}); default --workers.",
        "",
        "| code | stats (s) | preflight (s) | preflight / stats | preflight --no-near-dup (s) | / stats |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for tree_name in trees:
        st = best[(tree_name, "stats")]
        pf = best[(tree_name, "preflight")]
        pn = best[(tree_name, "preflight --no-near-dup")]
        lines.append(f"| {tree_name} | {st:.1f} | {pf:.1f} | {pf / st:.2f}x | {pn:.1f} | {pn / st:.2f}x |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
