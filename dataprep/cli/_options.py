"""Option groups shared by several commands, and the parsers for their values.

Each flag is defined once here, so every command spells it, documents it and parses it the same way:

- ``convert_options``: how records become conversations (normalize, stats, preflight); the command receives
  them as one ``convert: ConvertFlags``.
- ``plan_options``: the GPU budget and training setup a plan is made for (plan, preflight).
- ``length_options``: the candidate sequence lengths and micro-batch sizes measured (stats, preflight).

Values that need parsing (``TARGET=SOURCE`` pairs, comma lists) are parsed by the command body with
``parse_pairs`` / ``parse_int_list``, which raise ``UsageError`` (exit 2) naming the flag. Only click and
dataprep.errors are imported here: ``dataprep --help`` stays light.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import click

from ..defaults import DEFAULT_BATCH_SIZES, DEFAULT_SEQ_LENGTHS
from ..errors import UsageError

# The values make_plan and the stats tables use when a flag is not given (shown in --help).
PLAN_DEFAULTS: dict[str, object] = {
    "lora_rank": 8,
    "lora_alpha": 32,
    "lora_targets": "*_proj",
    "activation_checkpointing": "auto",
    "loss": "masked_ce",
    "param_dtype": "bf16",
    "margin": 0.1,
}
SEQ_LENGTHS = ",".join(
    map(str, DEFAULT_SEQ_LENGTHS)
)  # the library's defaults, written as the flag takes them
BATCH_SIZES = ",".join(map(str, DEFAULT_BATCH_SIZES))

_PAIR_EXAMPLE = {"--role-map": "gpt=assistant", "--map": "instruction=question"}


def _default(value: object, help: str, *, use: bool) -> dict[str, object]:
    """click kwargs for a flag whose default is ``value``; with ``use=False`` the flag stays None when not
    given (so only what the user set is passed on) but --help still shows ``[default: value]``."""
    if use:
        return {"default": value, "show_default": True, "help": help}
    return {"default": None, "help": f"{help}  [default: {value}]"}


def _apply(f: Callable, options: list[Callable]) -> Callable:
    """Apply click option decorators so that --help lists them in the order given."""
    for option in reversed(options):
        f = option(f)
    return f


@dataclass(frozen=True)
class ConvertFlags:
    """The record-conversion flags as given on the command line (pairs not yet parsed)."""

    fmt: str | None
    mapping: tuple[str, ...]
    role_map: tuple[str, ...]
    system: str | None
    take: str | None
    text_only: bool
    all_paths: bool
    encoding: str | None

    def spec(self) -> Any:
        """The ``pipeline.ConvertSpec`` the flags ask for; a malformed pair is a UsageError (exit 2)."""
        from ..pipeline import ConvertSpec

        return ConvertSpec(
            fmt=self.fmt,
            mapping=parse_pairs(self.mapping, "--map"),
            role_map=parse_pairs(self.role_map, "--role-map"),
            system=self.system,
            take=self.take,
            text_only=self.text_only,
            all_paths=self.all_paths,
            encoding=self.encoding,
        )


def convert_options(f: Callable) -> Callable:
    """--format, --map, --role-map, --system, --take, --text-only, --all-paths, --encoding, passed to the
    command as one
    ``convert: ConvertFlags`` argument."""
    names = [field.name for field in fields(ConvertFlags)]

    @functools.wraps(f)
    def command(*args: Any, **kwargs: Any) -> Any:
        kwargs["convert"] = ConvertFlags(**{name: kwargs.pop(name) for name in names})
        return f(*args, **kwargs)

    return _apply(
        command,
        [
            click.option(
                "--format",
                "fmt",
                metavar="NAME",
                help="Force a record shape instead of detecting it.",
            ),
            click.option(
                "--map",
                "mapping",
                multiple=True,
                metavar="TARGET=SOURCE",
                help="Read column SOURCE as TARGET (repeatable).",
            ),
            click.option(
                "--role-map",
                "role_map",
                multiple=True,
                metavar="FROM=TO",
                help="Rename a role, e.g. gpt=assistant (repeatable).",
            ),
            click.option("--system", metavar="TEXT", help="Add this system message to rows without one."),
            click.option(
                "--take", type=click.Choice(["chosen"]), help="Preference pairs: train on the chosen answers."
            ),
            click.option(
                "--text-only", is_flag=True, help="Keep the text parts of messages with images or audio."
            ),
            click.option(
                "--all-paths", is_flag=True, help="OASST trees: every root-to-leaf path, not only the best."
            ),
            click.option(
                "--encoding", metavar="ENC", help="Text encoding of the input (default: UTF-8, BOM-aware)."
            ),
        ],
    )


def plan_options(*, defaults: bool = True) -> Callable[[Callable], Callable]:
    """--gpus, --gpu, --gpu-memory, --gpu-tflops, --mfu, --epochs, --max-steps, --gpu-hour-price, --seq-length,
    --global-batch-size, the LoRA flags, --activation-checkpointing, --loss, --param-dtype, --packing and --margin.

    ``defaults=False`` (preflight) leaves an unset flag None, so only what the user gave is passed on (and
    recorded); --help still shows the plan's default.
    """

    def default(name: str, help: str) -> dict[str, object]:
        return _default(PLAN_DEFAULTS[name], help, use=defaults)

    def decorate(f: Callable) -> Callable:
        return _apply(
            f,
            [
                click.option(
                    "--gpus", type=int, default=1, show_default=True, help="GPUs (FSDP2 data-parallel size)."
                ),
                click.option(
                    "--gpu",
                    metavar="NAME",
                    default=None,
                    help="GPU preset: memory and dense BF16 peak (H100-80GB, H200, B200, A100-80GB, A100-40GB, "
                    "L40S, L4, A10G, RTX-4090, ...; case-insensitive, aliases such as h100, h100-sxm).",
                ),
                click.option(
                    "--gpu-memory",
                    default=None,
                    help="Memory per GPU: 80GiB, 80G (binary), 80GB (decimal), 81920MiB; wins over --gpu's.  "
                    "[default: the --gpu preset's, else 80GiB]",
                ),
                click.option(
                    "--gpu-tflops",
                    type=float,
                    default=None,
                    metavar="TFLOPS",
                    help="Dense BF16 peak per GPU for the time estimate; wins over --gpu's.  [default: the --gpu "
                    "preset's, else an H100's 989, labelled as assumed]",
                ),
                click.option(
                    "--mfu",
                    type=float,
                    default=None,
                    help="Model FLOPs utilization the time estimate assumes (a fraction of the peak).  [default: "
                    "0.30, a stock AutoModel run; AutoModel's tuned benchmark stack reaches ~0.46]",
                ),
                click.option(
                    "--epochs",
                    type=int,
                    default=None,
                    help="Epochs the run trains (time and GPU-hours).  [default: 1]",
                ),
                click.option(
                    "--max-steps",
                    type=int,
                    default=None,
                    help="Optimizer steps the run stops at (step_scheduler.max_steps; with --epochs, the first reached).",
                ),
                click.option(
                    "--gpu-hour-price",
                    type=float,
                    default=None,
                    metavar="PRICE",
                    help="Price of one GPU-hour: the estimate adds the run's cost.",
                ),
                click.option(
                    "--seq-length",
                    type=int,
                    default=None,
                    help="Sequence length (default: the stats' recommended_seq_length).",
                ),
                click.option(
                    "--global-batch-size",
                    type=int,
                    default=None,
                    help="Sequences per optimizer step, all GPUs (default: 32, or the nearest size the GPUs "
                    "divide).",
                ),
                click.option("--lora-rank", type=int, **default("lora_rank", "LoRA rank (peft.dim).")),
                click.option("--lora-alpha", type=int, **default("lora_alpha", "LoRA alpha (peft.alpha).")),
                click.option(
                    "--lora-targets",
                    **default(
                        "lora_targets",
                        "LoRA target modules: a glob or a comma-separated list of module names.",
                    ),
                ),
                click.option(
                    "--activation-checkpointing",
                    type=click.Choice(["auto", "on", "off"]),
                    **default(
                        "activation_checkpointing", "auto: on only when one sequence does not fit without it."
                    ),
                ),
                click.option(
                    "--loss",
                    type=click.Choice(["masked_ce", "chunked_ce", "fused_linear_ce"]),
                    **default("loss", "Loss function (its logits buffer differs)."),
                ),
                click.option(
                    "--param-dtype",
                    type=click.Choice(["bf16", "fp32"]),
                    **default("param_dtype", "Dtype of the trained parameters and optimizer states."),
                ),
                click.option(
                    "--packing",
                    is_flag=True,
                    default=False if defaults else None,
                    help="Pack sequences to seq_length (packed_sequence.packed_sequence_size).",
                ),
                click.option(
                    "--margin", type=float, **default("margin", "Fraction of GPU memory kept free.")
                ),
            ],
        )

    return decorate


def length_options(*, defaults: bool = True) -> Callable[[Callable], Callable]:
    """--seq-lengths and --batch-sizes (comma lists; parse them with ``parse_int_list``).

    ``defaults=False`` leaves an unset flag None (the library's own default applies; --help shows it).
    """

    def default(value: str, help: str) -> dict[str, object]:
        return _default(value, help, use=defaults)

    def decorate(f: Callable) -> Callable:
        return _apply(
            f,
            [
                click.option(
                    "--seq-lengths",
                    metavar="N,N,...",
                    **default(
                        SEQ_LENGTHS,
                        "Candidate sequence lengths for the truncation, padding and packing tables.",
                    ),
                ),
                click.option(
                    "--batch-sizes",
                    metavar="N,N,...",
                    **default(BATCH_SIZES, "Candidate micro-batch sizes for the padding table."),
                ),
            ],
        )

    return decorate


class Workers(click.ParamType):
    """``--workers``: a number of processes, or ``auto`` (one process; a pool of one per core once the input
    passes 20,000 rows)."""

    name = "N|auto"

    def convert(self, value: Any, param: Any, ctx: Any) -> int | str:
        if isinstance(value, int) or value == "auto":
            return value
        try:
            n = int(value)
        except (TypeError, ValueError):
            n = 0
        if n < 1:
            self.fail(f"{value!r}: a number of processes (at least 1) or 'auto'", param, ctx)
        return n


WORKERS_HELP = (
    "Processes that measure tokens: auto (default) measures in this process and brings in one worker process per "
    "core once the input passes 20,000 rows; N: N worker processes (started while this process measures the "
    "first rows)."
)


def parse_pairs(values: tuple[str, ...], flag: str) -> dict[str, str]:
    """``("a=b", ...)`` -> ``{"a": "b"}``; anything else is a usage error naming the flag."""
    out: dict[str, str] = {}
    for v in values:
        key, sep, val = v.partition("=")
        if not sep or not key or not val:
            raise UsageError(
                f"{flag} {v!r}: expected NAME=VALUE",
                hint=f"e.g. {flag} {_PAIR_EXAMPLE.get(flag, 'name=value')}",
            )
        out[key] = val
    return out


def parse_int_list(text: str | None, flag: str) -> tuple[int, ...] | None:
    """``"512, 1024"`` -> ``(512, 1024)`` (None stays None); not positive integers is a usage error."""
    if text is None:
        return None
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise UsageError(
            f"{flag} {text!r}: expected comma-separated integers", hint=f"e.g. {flag} 1024,2048"
        ) from None
    if not values or any(v <= 0 for v in values):
        raise UsageError(f"{flag} {text!r}: expected positive integers", hint=f"e.g. {flag} 1024,2048")
    return values
