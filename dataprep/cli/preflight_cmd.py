"""``dataprep preflight`` and ``dataprep verify-manifest``: the click layer over dataprep.preflight / .manifest."""

from __future__ import annotations

import sys
from typing import Any

import click

from ._common import Outcome, output_options, run
from ._options import (
    WORKERS_HELP,
    ConvertFlags,
    Workers,
    convert_options,
    length_options,
    parse_int_list,
    plan_options,
)


@click.command("preflight")
@click.option(
    "--recipe",
    "recipe",
    default=None,
    type=click.Path(dir_okay=False),
    help="An AutoModel recipe YAML: read (with the overrides after --), checked, and written back complete as "
    "OUT/recipe.yaml. Model, dataset and training settings come from it unless a flag says otherwise.",
)
@click.option(
    "--model", default=None, help="Model folder or Hugging Face id (local cache). Required without --recipe."
)
@click.option(
    "--dataset",
    default=None,
    help="Any input normalize reads, or messages JSONL. Required without --recipe (or when its dataset is not "
    "a local ChatDataset file).",
)
@click.option(
    "--method",
    type=click.Choice(["sft", "lora"]),
    default=None,
    help="Full fine-tuning or LoRA. Default: the recipe's (a peft section is LoRA), else sft.",
)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option(
    "--val-fraction", type=float, default=0.02, show_default=True, help="Share kept for validation."
)
@convert_options
@click.option(
    "--allow-download", is_flag=True, help="Fetch the tokenizer and config.json from the Hub when not cached."
)
@click.option("--chat-template", default=None, help="Template override: a Jinja string, .jinja or JSON file.")
@length_options(defaults=False)
@click.option(
    "--max-tokens",
    type=int,
    default=None,
    metavar="N",
    help="Rows longer than N tokens go to rejects.jsonl as too_long (so do rows the chosen seq_length would "
    "leave without a supervised token, with or without this flag).",
)
@click.option(
    "--dedup",
    type=click.Choice(["exact", "near"]),
    default=None,
    help="Send duplicates to rejects: exact copies, or near copies too (estimated Jaccard >= 0.7 of word "
    "3-grams). Without it they are kept, each near-duplicate cluster on one side of the split.",
)
@click.option(
    "--no-near-dup",
    "no_near_dup",
    is_flag=True,
    help="Skip near-duplicate detection (3.4-5 KB of index per kept row, capped at 250,000 rows).",
)
@click.option(
    "--eval",
    "eval_paths",
    multiple=True,
    metavar="PATH",
    help="An eval set (any input normalize reads, or a folder of them; repeatable): training rows sharing a "
    "normalised 13-gram with an eval item are eval_contamination.",
)
@click.option("--drop-contaminated", is_flag=True, help="Send --eval-contaminated rows to rejects.")
@click.option(
    "--validation",
    default=None,
    metavar="PATH",
    help="Your own validation set (any input normalize reads) instead of splitting --dataset; rows with a copy "
    "or near copy in train are near_duplicate_leakage.",
)
@click.option("--sample", type=int, default=None, help="Measure a random sample of N rows, not all.")
@click.option(
    "--workers", type=Workers(), default="auto", show_default=True, metavar="N|auto", help=WORKERS_HELP
)
@plan_options(defaults=False)
@click.option(
    "--recipe-name",
    "recipe_config",
    default="RECIPE.yaml",
    show_default=True,
    help="Without --recipe: the recipe file named in the printed command line.",
)
@output_options
@click.argument("recipe_args", nargs=-1, type=click.UNPROCESSED, metavar="[-- --a.b VALUE ...]")
def preflight_cmd(
    recipe: str | None,
    recipe_args: tuple[str, ...],
    model: str | None,
    dataset: str | None,
    method: str | None,
    gpus: int,
    gpu: str | None,
    gpu_memory: str | None,
    gpu_tflops: float | None,
    mfu: float | None,
    epochs: int | None,
    max_steps: int | None,
    gpu_hour_price: float | None,
    out_dir: str,
    val_fraction: float,
    convert: ConvertFlags,
    allow_download: bool,
    chat_template: str | None,
    seq_length: int | None,
    seq_lengths: str | None,
    batch_sizes: str | None,
    max_tokens: int | None,
    dedup: str | None,
    no_near_dup: bool,
    eval_paths: tuple[str, ...],
    drop_contaminated: bool,
    validation: str | None,
    sample: int | None,
    workers: int | str,
    global_batch_size: int | None,
    lora_rank: int | None,
    lora_alpha: int | None,
    lora_targets: str | None,
    activation_checkpointing: str | None,
    loss: str | None,
    param_dtype: str | None,
    packing: bool | None,
    margin: float | None,
    recipe_config: str,
    as_json: bool,
    quiet: bool,
    strict: bool,
) -> None:
    """Run every check as one pipeline pre-step: recipe, inspect, normalize, validate, check-template, stats, plan.

    With --recipe, the AutoModel recipe is read as AutoModel reads it (overrides after `--` in AutoModel's own
    grammar: --a.b v, --a.b=v, a bare --flag is true), checked, and its settings (LoRA, batch, activation
    checkpointing, loss, parallel sizes, dtype, seq_length, chat_template) drive the plan; flags given here win
    and are reported as changes.

    The input is read once: each row is converted, validated, split and measured in the same pass.

    Rows the chosen seq_length would leave with no supervised token (or longer than --max-tokens) go to rejects
    as too_long. Near-duplicate clusters stay on one side of the split (--dedup exact|near sends copies to
    rejects); --validation uses your own validation set, checked for leakage; --eval reports training rows that
    share a 13-gram with an eval set.

    Writes to OUT: train.jsonl, validation.jsonl (a deterministic split by conversation hash), rejects.jsonl,
    report.json, report.html, and, when nothing stopped the run, manifest.json for `verify-manifest` and:
    with --recipe, recipe.yaml (the recipe with what preflight decided; run `automodel OUT/recipe.yaml`) and
    overrides.yaml (the same changes over the original recipe); without, overrides.yaml to merge into a recipe.
    Stops at the first step with an error; exit 0 ready, 1 an error finding (--strict: or a warning), 2
    unreadable input, bad recipe or model not found.

    Examples:

    \b
        dataprep preflight --recipe llama3_2_1b_peft.yaml --dataset chats.jsonl --gpus 8 --out prep/
        dataprep preflight --recipe r.yaml --dataset d.csv --out prep/ -- --step_scheduler.max_steps 500
        dataprep preflight --model ./Llama-3.2-1B --dataset data.csv --method lora --gpus 8 --gpu-memory 80GiB --out prep/
    """

    def body() -> Outcome:
        from pathlib import Path

        from ..plan import resolve_gpu_memory
        from ..preflight import PreflightOptions, run_preflight

        opts = PreflightOptions(
            model=model,
            dataset=dataset,
            out_dir=Path(out_dir),
            method=method,  # type: ignore[arg-type]
            gpus=gpus,
            gpu_memory_bytes=resolve_gpu_memory(gpu_memory, gpu)[0],  # --gpu-memory, else --gpu's, else 80GiB
            val_fraction=val_fraction,
            convert=convert.spec(),
            chat_template=chat_template,
            allow_download=allow_download,
            seq_length=seq_length,
            max_tokens=max_tokens,
            dedup=dedup,
            near_dup=not no_near_dup,
            eval_paths=tuple(eval_paths),
            drop_contaminated=drop_contaminated,
            validation=validation,
            **{
                k: v
                for k, v in (
                    ("seq_lengths", parse_int_list(seq_lengths, "--seq-lengths")),
                    ("batch_sizes", parse_int_list(batch_sizes, "--batch-sizes")),
                )
                if v is not None
            },
            sample=sample,
            workers=workers,
            plan_options={
                "global_batch_size": global_batch_size,
                "lora_rank": lora_rank,
                "lora_alpha": lora_alpha,
                "lora_targets": lora_targets,
                "activation_checkpointing": activation_checkpointing,
                "loss": loss,
                "param_dtype": param_dtype,
                "packing": packing,
                "margin": margin,
                "gpu": gpu,
                "gpu_tflops": gpu_tflops,
                "mfu": mfu,
                "epochs": epochs,
                "max_steps": max_steps,
                "gpu_hour_price": gpu_hour_price,
            },
            strict=strict,
            recipe_config=recipe_config,
            recipe=recipe,
            recipe_args=tuple(recipe_args),
        )
        if recipe_args and recipe is None:
            from ..errors import UsageError

            raise UsageError(
                f"overrides after -- ({' '.join(recipe_args[:3])}...) need --recipe",
                hint="dataprep preflight --recipe RECIPE.yaml ... -- --a.b value",
            )
        progress = None
        if not quiet and sys.stderr.isatty():

            def progress(step: str) -> None:
                click.echo(f"preflight: {step}...", err=True)

        result = run_preflight(opts, progress=progress)
        if as_json and not quiet:
            click.echo(result.verdict_line(), err=True)

        def render(con: Any) -> None:
            _render(con, result)

        return Outcome(
            payload=dict(result.report),
            findings=list(result.findings),
            render=render,
            exit_code=result.exit_code,
        )

    run(body, as_json=as_json, quiet=quiet, strict=strict)


_MARK = {
    "ok": "[green]ok[/]",
    "warning": "[yellow]warning[/]",
    "error": "[bold red]error[/]",
    "skipped": "[dim]skipped[/]",
    "not_run": "[dim]not run[/]",
}


def _render(con: Any, result: Any) -> None:
    from rich.markup import escape

    for step in result.report["steps"]:
        n = len(step["findings"])
        extra = f" ({n} finding{'s' if n != 1 else ''})" if n else ""
        note = f" [dim]{escape(step['note'])}[/]" if step.get("note") else ""
        con.print(f"  {escape(step['name']):<15} {_MARK.get(step['status'], step['status'])}{extra}{note}")
    for line in _summary(result.report):
        con.print(escape(line))
    con.print(escape(result.verdict_line()))


def _gib(v: Any) -> str:
    return f"{v:.1f}" if isinstance(v, (int, float)) else "?"


def _summary(report: dict[str, Any]) -> list[str]:
    """The figures a user reads first: rows kept, token lengths, and the shape of the plan."""
    figures = {step["name"]: step.get("figures") or {} for step in report["steps"]}
    lines: list[str] = []
    split = report.get("split") or figures.get("validate", {}).get("split")
    if split:
        # the final split (after too_long rows left it) and every row set aside on the way
        rejected = figures.get("validate", {}).get("rejected", 0) + (
            figures.get("stats", {}).get("rows_skipped", {}).get("too_long", 0)
        )
        lines.append(
            f"  data: {split['train']['rows']} train + {split['validation']['rows']} validation rows,"
            f" {rejected} rejected"
        )
    total = figures.get("stats", {}).get("tokens", {}).get("total")
    if total:
        lines.append(
            f"  tokens per row: p50 {total['p50']}, p99 {total['p99']}, max {total['max']}"
            f" (mask: {figures['stats'].get('mask_source')})"
        )
        if figures["stats"].get("mask_generation_prompt"):
            lines.append(
                "  no generation tags: overrides set dataset.mask_generation_prompt: true"
                " (else AutoModel trains every assistant header)"
            )
    plan = figures.get("plan", {})
    rec, mem = plan.get("recommendation"), plan.get("memory")
    if rec and mem and rec.get("local_batch_size") is None:  # oom: no batch fits
        budget = plan.get("budget", {})
        lines.append(
            f"  plan: does not fit at seq_length {rec['seq_length']}:"
            f" {mem['per_gpu_gib']:.1f} GiB per GPU for one sequence, {_gib(budget.get('usable_gib'))} GiB usable"
        )
    elif rec and mem:
        budget = plan.get("budget", {})
        lines.append(
            f"  plan: seq_length {rec['seq_length']}, local_batch_size {rec['local_batch_size']}"
            f" x grad_accumulation {rec['grad_accumulation']} x dp {rec['dp_size']}"
            f" = global {rec['global_batch_size']};"
            f" {mem['per_gpu_gib']:.1f} GiB per GPU of {_gib(budget.get('usable_gib'))} GiB usable"
        )
    time = plan.get("time")
    if isinstance(time, dict) and time.get("step_seconds") is not None:
        from ..throughput import summary_line

        lines.append(f"  time: {summary_line(time)}")
    recipe = report.get("recipe")
    if recipe:
        lines.append(
            f"  recipe: {len(recipe['changes'])} change(s) to {recipe['path'].rsplit('/', 1)[-1]}"
            f" in recipe.yaml; run: {recipe['run']}"
        )
    return lines


@click.command("verify-manifest")
@click.argument("manifest", type=click.Path(dir_okay=False))
@click.option(
    "--model", required=True, help="The base model to check: folder or Hugging Face id (local cache)."
)
@output_options
def verify_manifest_cmd(manifest: str, model: str, as_json: bool, quiet: bool, strict: bool) -> None:
    """Check that MODEL's tokenizer files and checkpoint match a preflight manifest (before merge_lora).

    Exit 0 when every file matches; 1 with `error[manifest_mismatch]` naming each differing file.

    Example:

    \b
        dataprep verify-manifest prep/manifest.json --model ./Llama-3.2-1B
    """

    def body() -> Outcome:
        from ..manifest import check_manifest, mismatch_findings

        check = check_manifest(manifest, model)

        def render(con: Any) -> None:
            from rich.markup import escape

            if check.ok:
                con.print(f"{escape(model)} matches {escape(manifest)}: base model and tokenizer unchanged")
            else:
                con.print(f"{escape(model)} differs from {escape(manifest)}:")
                for name in check.differing:
                    kind = (
                        "changed" if name in check.changed else "missing" if name in check.missing else "new"
                    )
                    con.print(f"  {kind:<8} {escape(name)}")

        return Outcome(payload=check.to_dict(), findings=mismatch_findings(check), render=render)

    run(body, as_json=as_json, quiet=quiet, strict=strict)
