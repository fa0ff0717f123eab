"""``dataprep plan``: per-GPU memory estimate and the seq_length / batch / accumulation that fit the budget."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ._common import Outcome, output_options, run
from ._options import plan_options


@click.command("plan")
@click.option(
    "--model",
    "-m",
    required=True,
    help="A local folder with config.json, or a Hugging Face id in the local cache.",
)
@click.option(
    "--stats",
    "stats_path",
    type=click.Path(dir_okay=False),
    help="Token statistics JSON (`dataprep stats --json`).",
)
@click.option(
    "--dataset",
    type=click.Path(),
    help="Compute the statistics from this dataset (through MODEL's chat template).",
)
@click.option(
    "--method",
    type=click.Choice(["sft", "lora", "qlora"]),
    default="sft",
    show_default=True,
    help="Full fine-tuning, LoRA, or QLoRA (4-bit NF4 base).",
)
@plan_options()
@click.option(
    "--overrides",
    "overrides_path",
    type=click.Path(dir_okay=False),
    help="Write the AutoModel overrides YAML here.",
)
@click.option(
    "--allow-download",
    is_flag=True,
    help="Fetch config.json (and, with --dataset, the tokenizer) from the Hub when not cached.",
)
@output_options
def plan_cmd(
    model: str,
    stats_path: str | None,
    dataset: str | None,
    gpus: int,
    gpu: str | None,
    gpu_memory: str | None,
    gpu_tflops: float | None,
    mfu: float | None,
    epochs: int | None,
    max_steps: int | None,
    gpu_hour_price: float | None,
    method: str,
    lora_rank: int,
    lora_alpha: int,
    lora_targets: str,
    seq_length: int | None,
    global_batch_size: int | None,
    activation_checkpointing: str,
    loss: str,
    param_dtype: str,
    packing: bool,
    margin: float,
    overrides_path: str | None,
    allow_download: bool,
    as_json: bool,
    quiet: bool,
    strict: bool,
) -> None:
    """Estimate per-GPU memory and training time for fine-tuning MODEL and recommend what fits the budget.

    Prints the estimate by component (weights, gradients, optimizer states, LoRA, activations, logits, the
    gathered FSDP layer, CUDA context, allocator headroom), the recommendation (seq_length, local and global
    batch, gradient accumulation, activation checkpointing), the time it takes (seconds per optimizer step,
    steps and time per epoch, GPU-hours for --epochs / --max-steps, cost with --gpu-hour-price) and the
    AutoModel overrides as YAML and as command-line arguments. Nothing fits: error[oom] with remedies that do,
    each with its time consequence. Exit 1 on an error finding.

    \b
    Example:
      dataprep plan --model meta-llama/Llama-3.1-8B --stats stats.json --gpu h100 --gpus 8 \\
        --method lora --epochs 3 --overrides plan.yaml
    """

    def body() -> Outcome:
        from ..plan import plan_files

        planned = plan_files(
            model,
            stats_path=stats_path,
            dataset=dataset,
            seq_length=seq_length,
            gpu_memory=gpu_memory,
            overrides_path=overrides_path,
            allow_download=allow_download,
            gpus=gpus,
            method=method,
            lora_rank=lora_rank,
            lora_alpha=lora_alpha,
            lora_targets=lora_targets,
            global_batch_size=global_batch_size,
            activation_checkpointing=activation_checkpointing,
            loss=loss,
            param_dtype=param_dtype,
            packing=packing,
            margin=margin,
            gpu=gpu,
            gpu_tflops=gpu_tflops,
            mfu=mfu,
            epochs=epochs,
            max_steps=max_steps,
            gpu_hour_price=gpu_hour_price,
        )
        result, write = planned.plan, planned.overrides_written
        cli = result.cli_overrides()
        payload = {**result.to_dict(), "overrides": result.overrides(), "cli_overrides": cli}
        payload.pop("findings", None)
        if overrides_path:
            payload["overrides_written"] = write
            if write:
                payload["overrides_path"] = str(Path(overrides_path))
            elif as_json and not quiet:
                from ._common import console

                console().print(_not_written(overrides_path), markup=False, highlight=False)
        return Outcome(
            payload=payload,
            findings=list(result.findings),
            render=lambda con: _render(con, result, planned.overrides_yaml, cli, overrides_path, write),
        )

    run(body, as_json=as_json, quiet=quiet, strict=strict)


def _hours(h: float) -> str:
    if h < 0.1:
        return f"{h:.2g}"
    return f"{h:.2f}" if h < 10 else f"{h:,.1f}" if h < 1000 else f"{h:,.0f}"


def time_lines(d: dict[str, Any]) -> list[str]:
    """The time estimate (``PlanResult.to_dict()["time"]``) in a few lines: step, tokens, epoch, run,
    alternatives, and what was assumed."""
    from ..throughput import MFU_TUNED, duration

    tok, fl = d["tokens_per_step"], d["gflops_per_computed_token"]
    lines = [
        f"time: ~{duration(d['step_seconds'])} per optimizer step ({d['sequences_per_step']} sequences, "
        f"{tok['computed']:,} computed tokens x {fl['total']:.1f} GFLOPs) on {d['gpus']} x {d['gpu']} "
        f"({d['peak_tflops_per_gpu']:g} TFLOPS dense BF16{', assumed' if d['peak_assumed'] else ''}) at MFU "
        f"{d['mfu']:g}; {d['tokens_per_second_per_gpu']['real']:,.0f} real tokens/s per GPU"
    ]
    if d["bound"] == "communication":
        lines.append(
            f"  communication-bound: FSDP2's all-gathers need at least "
            f"{d['communication_floor_seconds_per_step']:.3g} s per step over the {d['link_gb_per_s']:g} GB/s link, "
            f"more than the {d['compute_seconds_per_step']:.3g} s of compute (fewer GPUs, longer micro-batches or "
            "NVLink GPUs help)"
        )
    if d["activation_checkpointing"]:
        lines.append(
            f"  activation checkpointing: x{d['activation_checkpointing_step_time_factor']:.2f} step time "
            "(each decoder layer's forward runs again in backward)"
        )
    e = d["epoch"]
    if e:
        how = "packs" if d["packing"] else "padding each micro-batch to its longest row"
        lines.append(
            f"  tokens per epoch: {e['real_tokens']:,} real, {e['computed_tokens']:,} computed "
            f"({e['token_efficiency']:.1%} real: {how})"
        )
        steps = f"{e['steps']:,} optimizer step{'s' if e['steps'] != 1 else ''}"
        lines.append(f"  epoch: {e['sequences']:,} sequences, {steps}, ~{duration(e['seconds'])}")
    run = d["run"]
    if run:
        if run["limited_by"] == "max_steps":
            what = f"{run['steps']:,} steps (--max-steps)"
        else:
            n = run["epochs"]
            what = f"{n:g} epoch{'s' if n != 1 else ''}" + (
                " (--epochs to change)" if run["epochs_assumed"] else ""
            )
        cost = (
            f", cost {run['cost']:,.2f} at {run['gpu_hour_price']:g} per GPU-hour"
            if run["cost"] is not None
            else ""
        )
        lines.append(
            f"  run: {what}: ~{duration(run['seconds'])} wall, {_hours(run['gpu_hours'])} GPU-hours{cost}"
        )
    for alt in d["alternatives"]:
        lines.append(f"  instead: {alt['text']}")
    assumed = []
    if d["peak_assumed"]:
        assumed.append(f"an {d['gpu']} peak (pass --gpu NAME or --gpu-tflops)")
    if d["mfu_source"] != "--mfu":
        assumed.append(
            f"MFU {d['mfu']:g} for a stock AutoModel run (--mfu to set yours; ~{MFU_TUNED:g} for AutoModel's "
            "tuned benchmark stack)"
        )
    if assumed:
        lines.append("  assumed: " + "; ".join(assumed))
    return lines


def _not_written(path: str) -> str:
    return f"overrides not written to {path}: the plan does not fit (see error[oom])"


def _render(con, result, yaml_text: str, cli: list[str], overrides_path: str | None, written: bool) -> None:
    from rich.table import Table

    d = result.to_dict()
    mem = d["memory"]
    title = (
        f"{result.model.name or result.model.model_type}: {d['parameters'] / 1e9:.2f}B parameters "
        f"({result.model.parameter_source}), {d['trainable_parameters']:,} trainable, {result.method}"
    )
    table = Table(title=title, title_justify="left")
    table.add_column("component")
    table.add_column("GiB per GPU", justify="right")
    for name, gib in mem["breakdown"].items():
        if gib:
            table.add_row(name.replace("_", " "), f"{gib:.2f}")
    budget = d["budget"]
    verdict = "[green]fits[/]" if d["fits"] else "[red]does not fit[/]"
    table.add_row("[bold]peak estimate[/]", f"[bold]{mem['per_gpu_gib']:.2f}[/]")
    table.add_row(
        f"usable ({budget['gpu_memory_gib']:.1f} GiB x {1 - budget['margin']:.2f})",
        f"{budget['usable_gib']:.2f}",
    )
    con.print(table)
    rec = d["recommendation"]
    con.print(
        f"{verdict}: {mem['tokens_per_micro_batch']:,} tokens per micro-batch "
        f"(local batch x {mem['padded_length']} padded tokens) on {budget['gpus']} GPU(s)"
    )
    expected = mem.get("expected_padded_length")
    if expected and expected < mem["padded_length"]:
        con.print(
            f"note: memory is sized for rows of {mem['padded_length']} tokens, the longest a micro-batch can hold; "
            f"the collator pads each micro-batch to its longest row, about {expected} tokens for a random one "
            "(stats: expected longest row), which the time estimate uses"
        )
    if rec["local_batch_size"] is not None:
        con.print(
            f"recommendation: seq_length {rec['seq_length']}, local_batch_size {rec['local_batch_size']}, "
            f"global_batch_size {rec['global_batch_size']} = {rec['local_batch_size']} x dp {rec['dp_size']} x "
            f"grad accumulation {rec['grad_accumulation']}, activation checkpointing "
            f"{'on' if rec['activation_checkpointing'] else 'off'}, loss {rec['loss']}"
        )
    if rec.get("note"):
        con.print(f"note: {rec['note']}", markup=False, highlight=False)
    con.print(
        f"GPU memory: {budget['gpu_memory_gib']:.1f} GiB per GPU ({budget['gpu_memory_source']})",
        markup=False,
        highlight=False,
    )
    if result.time is not None:
        for line in time_lines(d["time"]):
            con.print(line, markup=False, highlight=False)
    con.print("\n[bold]AutoModel overrides[/]" + (f" (written to {overrides_path})" if written else ""))
    con.print(yaml_text, markup=False, highlight=False)
    con.print("[bold]as command-line overrides[/]")
    con.print(" ".join(cli), markup=False, highlight=False)
    if overrides_path and not written:
        con.print(_not_written(overrides_path), markup=False, highlight=False)
