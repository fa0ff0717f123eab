"""``dataprep stats``: exact token-length statistics through the chat template."""

from __future__ import annotations

from typing import Any

import click

from ._common import Outcome, output_options, rows_progress, run
from ._engine import engine_options
from ._options import WORKERS_HELP, ConvertFlags, Workers, convert_options, length_options, parse_int_list


@click.command("stats")
@click.argument("path", type=click.Path(dir_okay=True, allow_dash=True))
@click.option(
    "--model", "-m", required=True, help="Tokenizer: a local folder or a Hugging Face id in the local cache."
)
@click.option(
    "--chat-template", help="Use this template instead of the model's (Jinja text, .jinja file, or JSON)."
)
@length_options()
@click.option(
    "--sample", type=click.IntRange(min=1), help="Measure a uniform random sample of N rows (seeded)."
)
@click.option(
    "--workers", type=Workers(), default="auto", show_default=True, metavar="N|auto", help=WORKERS_HELP
)
@click.option(
    "--mask-generation-prompt",
    is_flag=True,
    help="Measure as ChatDataset with mask_generation_prompt: true (the assistant header is not trained).",
)
@click.option(
    "--max-tokens",
    type=click.IntRange(min=1),
    metavar="N",
    help="Set rows longer than N tokens aside (too_long, with their rows) and leave them out of the figures.",
)
@click.option(
    "--eval",
    "eval_paths",
    multiple=True,
    metavar="PATH",
    help="An eval set (any input normalize reads, or a folder; repeatable): rows sharing a normalised 13-gram "
    "with an eval item are eval_contamination.",
)
@click.option(
    "--trainer-check",
    type=click.IntRange(min=1),
    metavar="N",
    help="Also read N sampled rows with the nemo-automodel installed here (its own ChatDataset) and report "
    "where it disagrees with dataprep's model of AutoModel 0.7.0.",
)
@click.option(
    "--per-row",
    "per_row",
    type=click.Path(dir_okay=False),
    help="Write row, total, supervised, turns per row to FILE (.jsonl or .parquet).",
)
@click.option("--force", is_flag=True, help="Replace an existing --per-row file.")
@convert_options
@click.option(
    "--allow-download", is_flag=True, help="Let the tokenizer be downloaded from the Hugging Face Hub."
)
@engine_options
@output_options
def stats_cmd(
    path: str,
    model: str,
    chat_template: str | None,
    seq_lengths: str,
    batch_sizes: str,
    sample: int | None,
    workers: int | str,
    mask_generation_prompt: bool,
    max_tokens: int | None,
    eval_paths: tuple[str, ...],
    trainer_check: int | None,
    per_row: str | None,
    force: bool,
    convert: ConvertFlags,
    allow_download: bool,
    engine: str,
    ray_address: str | None,
    as_json: bool,
    quiet: bool,
    strict: bool,
) -> None:
    """Token-length statistics for PATH, measured exactly as the trainer tokenizes it.

    PATH is messages JSONL or any input `normalize` reads (converted on the fly). Every row is rendered
    through MODEL's chat template and tokenized as AutoModel 0.7.0's ChatDataset does (total tokens;
    supervised tokens = the trainer's labels: {% generation %} masks, else its prefix masking, which
    trains the assistant header unless --mask-generation-prompt; assistant turns). Rows not measured are
    counted under a finding each. Prints the distribution, a
    histogram, what truncation to each --seq-lengths costs, padding efficiency per --batch-sizes (random
    and length-grouped batches), first-fit-decreasing packing efficiency, and a recommended seq_length:

    \b
    the smallest multiple of 256 that covers p99 of total tokens and keeps
    at least one supervised token of every row, capped at model_max_length.

    \b
    Example:
      dataprep stats data/train.jsonl --model Qwen/Qwen2.5-0.5B-Instruct --per-row lengths.parquet
    """

    def body() -> Outcome:
        from ..engine import stats_file

        with rows_progress("measuring", enabled=not (quiet or as_json)) as bar:
            done = stats_file(
                path,
                model,
                convert.spec(),
                engine=engine,
                ray_address=ray_address,
                chat_template=chat_template,
                allow_download=allow_download,
                per_row=per_row,
                force=force,
                trainer_check=trainer_check,
                mask_generation_prompt=mask_generation_prompt,
                seq_lengths=parse_int_list(seq_lengths, "--seq-lengths"),
                batch_sizes=parse_int_list(batch_sizes, "--batch-sizes"),
                sample=sample,
                workers=workers,
                max_tokens=max_tokens,
                **({"eval_paths": tuple(eval_paths)} if eval_paths else {}),
                progress=bar.advance if bar is not None else None,
            )
        payload = {
            "input": path,
            "model": model,
            "template_source": done.loaded.template_source,
            **done.result.to_dict(),
        }
        payload.pop("findings")
        if per_row:
            payload["per_row"] = per_row
        if done.trainer_check is not None:
            payload["trainer_check"] = done.trainer_check.to_dict()
        return Outcome(payload, done.findings, lambda con: render(con, payload))

    run(body, as_json=as_json, quiet=quiet, strict=strict)


# -- human output ----------------------------------------------------------------------------------------------
def render(con: Any, p: dict[str, Any]) -> None:
    from rich.table import Table

    t, s = p["tokens"]["total"], p["tokens"]["supervised"]
    sampled = f" (a sample of {p['rows_read']} rows read)" if p.get("sampled") else ""
    skipped = sum(p.get("rows_skipped", {}).values())
    not_measured = f", {skipped} of {p['rows_read']} read not measured (see findings)" if skipped else ""
    con.print(
        f"[bold]{p['input']}[/]: {p['rows']} rows measured{sampled}{not_measured} with {p['model']} "
        f"(template: {p.get('template_source')}, supervised tokens from {p['mask_source']}, "
        f"as {p.get('trainer_model')})"
    )
    dist = Table(title="tokens per row", title_justify="left")
    for col in ("", "mean", "min", "p50", "p90", "p95", "p99", "max", "sum"):
        dist.add_column(col, justify="right")
    for name, d in (("total", t), ("supervised", s), ("turns", p["turns"])):
        dist.add_row(
            name, *(_fmt(d.get(k)) for k in ("mean", "min", "p50", "p90", "p95", "p99", "max", "sum"))
        )
    con.print(dist)
    tc = p.get("trainer_check")
    if tc:
        con.print(
            f"trainer check: nemo-automodel {tc['automodel_version']} agrees on {tc['agree']} of "
            f"{tc['rows_checked']} sampled rows (dataprep models {tc['modelled_version']})"
        )
    _render_histogram(con, p["histogram"])

    tr = Table(title="right truncation to seq_length", title_justify="left")
    for col in ("seq_length", "rows cut", "tokens lost", "supervised lost", "rows losing all supervision"):
        tr.add_column(col, justify="right")
    for r in p["truncation"]:
        tr.add_row(
            str(r["seq_length"]),
            str(r["rows_truncated"]),
            f"{r['tokens_lost']} ({r['tokens_lost_pct']:.2f}%)",
            f"{r['supervised_tokens_lost']} ({r['supervised_tokens_lost_pct']:.2f}%)",
            str(r["rows_losing_all_supervision"]),
        )
    con.print(tr)

    pad = Table(title="padding (real / padded tokens), no truncation", title_justify="left")
    for col in ("micro-batch", "random batches", "length-grouped", "expected longest (random)"):
        pad.add_column(col, justify="right")
    for r in p["padding"]:
        pad.add_row(
            str(r["batch_size"]),
            f"{r['random_efficiency']:.1%}",
            f"{r['grouped_efficiency']:.1%}",
            f"{r['expected_max_len_random']:.0f}",
        )
    con.print(pad)

    pk = Table(title="packing (first-fit decreasing)", title_justify="left")
    for col in ("seq_length", "packs", "efficiency", "rows cut"):
        pk.add_column(col, justify="right")
    for r in p["packing"]:
        pk.add_row(str(r["seq_length"]), str(r["packs"]), f"{r['efficiency']:.1%}", str(r["rows_truncated"]))
    con.print(pk)

    rec = p["recommended_seq_length"]
    if rec is not None:
        con.print(f"[bold green]recommended seq_length: {rec}[/]  ({p['recommended_seq_length_rule']})")
    if p.get("per_row"):
        con.print(f"per-row counts written to {p['per_row']}")


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.1f}"
    return str(v)


def _render_histogram(con: Any, h: dict[str, Any], width: int = 40) -> None:
    counts = h["counts"]
    edges = h["edges"]
    if not counts or not any(counts):
        return
    # Trim empty bins at the top and merge neighbours so the terminal view stays short.
    last = max(i for i, c in enumerate(counts) if c)
    counts, edges = counts[: last + 1], edges[: last + 2]
    group = max(1, -(-len(counts) // 20))
    rows = []
    for i in range(0, len(counts), group):
        rows.append((edges[i], edges[min(i + group, len(edges) - 1)], sum(counts[i : i + group])))
    top = max(c for _, _, c in rows)
    con.print("[bold]total tokens per row[/]")
    lw = len(str(rows[-1][1]))
    for lo, hi, c in rows:
        bar = "█" * (round(width * c / top) if top else 0)
        con.print(f"  {lo:>{lw}}-{hi:<{lw}} {bar} {c}")
