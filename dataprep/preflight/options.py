"""What ``dataprep preflight`` was asked to do: the options, the steps and outputs they name, and the options
a recipe fills in (``resolve_with_recipe``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from ..defaults import DEFAULT_BATCH_SIZES, DEFAULT_SEQ_LENGTHS
from ..errors import UsageError
from ..findings import name_options
from ..pipeline import ConvertSpec

STDIN_NAME = "<stdin>"  # how messages and the report name `--dataset -` (never the reader's spool file)
STEPS: tuple[str, ...] = ("recipe", "inspect", "normalize", "validate", "check-template", "stats", "plan")
OUTPUT_NAMES = {
    "train": "train.jsonl",
    "validation": "validation.jsonl",
    "rejects": "rejects.jsonl",
    "report_json": "report.json",
    "report_html": "report.html",
    "overrides": "overrides.yaml",
    "manifest": "manifest.json",
    "recipe": "recipe.yaml",
    "chat_template": "chat_template.jinja",
}
# outputs that exist only when the run approved them (removed when a later run stops)
APPROVED_OUTPUTS = ("overrides", "manifest", "recipe", "chat_template")
REPORT_VERSION = 1
MAX_ROWS_LISTED = 100
TEMPLATE_SAMPLE = 32  # conversations check-template renders from the dataset

Method = Literal["sft", "lora", "qlora"]
StepStatus = Literal["ok", "warning", "error", "skipped", "not_run"]


@dataclass(frozen=True)
class PreflightOptions:
    """Everything ``dataprep preflight`` was asked to do, as values (the CLI flags)."""

    model: str | None
    dataset: str | None
    out_dir: Path
    method: Method | None = "sft"  # None: the recipe's (peft section: lora), else sft
    gpus: int = 1
    gpu_memory_bytes: int = 80 * 1024**3
    val_fraction: float = 0.02
    convert: ConvertSpec = field(default_factory=ConvertSpec)  # how records become conversations
    # template / stats
    chat_template: str | None = None
    allow_download: bool = False
    seq_lengths: tuple[int, ...] = DEFAULT_SEQ_LENGTHS
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES
    sample: int | None = None
    workers: int | str = "auto"  # measure_conversations' workers: a number, or auto
    # plan (passed to make_plan by name when it accepts them)
    seq_length: int | None = None
    max_tokens: int | None = None  # rows longer go to rejects as too_long
    dedup: str | None = None  # "exact" | "near": duplicates go to rejects (dataprep.dedup)
    near_dup: bool = True  # keep near-duplicate clusters on one side of the split
    eval_paths: tuple[str, ...] = ()  # eval sets to check training rows against (13-gram contamination)
    validation: str | None = None  # a validation set of the user's instead of a split (checked for leakage)
    drop_contaminated: bool = False
    plan_options: Mapping[str, Any] = field(default_factory=dict)
    strict: bool = False
    recipe_config: str = "RECIPE.yaml"  # the recipe name in the printed command line (no --recipe)
    recipe: str | None = None  # an AutoModel recipe YAML to read, check and complete
    recipe_args: tuple[str, ...] = ()  # AutoModel-style overrides for it: --a.b value ...
    tokenizer: str | None = (
        None  # where the trainer's tokenizer comes from, when not the model (the recipe's)
    )

    def validate(self) -> None:
        from ..split import check_fraction

        if self.recipe is None:
            for name, value in (("model", self.model), ("dataset", self.dataset)):
                if not value:
                    raise UsageError(
                        f"$[{name}] is required without $[recipe]",
                        hint="dataprep preflight --model M --dataset D --out OUT, or --recipe RECIPE.yaml --out OUT",
                    )
        if self.method not in ("sft", "lora", "qlora", None) or (self.method == "qlora" and not self.recipe):
            raise UsageError(f"$[method] {self.method!r}: choose sft or lora")
        if self.gpus < 1:
            raise UsageError(f"$[gpus] {self.gpus}: at least one GPU", hint="e.g. $[gpus] 8")
        if self.gpu_memory_bytes <= 0:
            raise UsageError("$[gpu_memory] must be positive", hint="e.g. $[gpu_memory] 80GiB")
        if self.seq_length is not None and self.seq_length <= 0:
            raise UsageError(f"$[seq_length] {self.seq_length}: must be positive")
        if self.dedup not in (None, "exact", "near"):
            raise UsageError(f"$[dedup] {self.dedup!r}: choose exact or near")
        if self.validation is not None and self.validation == self.dataset:
            raise UsageError("$[validation] is the $[dataset] itself", hint="give a separate validation file")
        if self.drop_contaminated and not self.eval_paths:
            raise UsageError(
                "$[drop_contaminated] needs $[eval_paths]", hint="e.g. $[eval_paths] mmlu_test.jsonl"
            )
        if self.max_tokens is not None and self.max_tokens <= 0:
            raise UsageError(
                f"$[max_tokens] {self.max_tokens}: must be positive", hint="e.g. $[max_tokens] 8192"
            )
        if self.sample is not None and self.sample <= 0:
            raise UsageError(f"$[sample] {self.sample}: must be positive", hint="e.g. $[sample] 10000")
        if self.workers != "auto" and (not isinstance(self.workers, int) or self.workers < 1):
            raise UsageError(f"$[workers] {self.workers}: at least one, or auto", hint="e.g. $[workers] 4")
        if any(v <= 0 for v in (*self.seq_lengths, *self.batch_sizes)):
            raise UsageError("$[seq_lengths] and $[batch_sizes] take positive integers")
        check_fraction(self.val_fraction)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "dataset": self.dataset,
            "method": self.method,
            "gpus": self.gpus,
            "gpu_memory_gib": round(self.gpu_memory_bytes / 1024**3, 2),
            "val_fraction": self.val_fraction,
            "format": self.convert.fmt,
            "convert": self.convert.to_dict(),  # every conversion option (--all-paths changes train.jsonl too)
            "chat_template": self.chat_template,
            "seq_length": self.seq_length,
            "strict": self.strict,
            **{k: v for k, v in self.plan_options.items() if v is not None},
        }


# option -> the dataprep option that sets it, as $[param] (for "the command line wins" in the report)
_FLAGS = {
    "model": "$[model]",
    "dataset": "$[dataset]",
    "tokenizer": "$[model]",
    "method": "$[method]",
    "seq_length": "$[seq_length]",
    "chat_template": "$[chat_template]",
    "global_batch_size": "$[global_batch_size]",
    "lora_rank": "$[lora_rank]",
    "lora_alpha": "$[lora_alpha]",
    "lora_targets": "$[lora_targets]",
    "activation_checkpointing": "$[activation_checkpointing]",
    "loss": "$[loss]",
    "param_dtype": "$[param_dtype]",
    "packing": "$[packing]",
    "epochs": "$[epochs]",
    "max_steps": "$[max_steps]",
}
_TOP_LEVEL = ("model", "dataset", "tokenizer", "method", "seq_length", "chat_template")


def resolve_with_recipe(
    opts: PreflightOptions, recipe: Any
) -> tuple[PreflightOptions, dict[str, Any], list[Any]]:
    """The options with every one the user left unset taken from the recipe; the recipe values a dataprep flag
    replaced, as changes. Raises UsageError when neither names the model or a dataset preflight can read."""
    from ..recipe import Change, recipe_settings

    settings = recipe_settings(recipe)
    top: dict[str, Any] = {}
    plan = dict(opts.plan_options)
    taken: dict[str, Any] = {}
    changes: list[Change] = []
    for name, st in settings.items():
        given = getattr(opts, name) if name in _TOP_LEVEL else plan.get(name)
        if name == "tokenizer" and opts.model:
            given = opts.model  # --model names the tokenizer too
        if given is None:
            taken[name] = st
            if name in _TOP_LEVEL:
                top[name] = st.value
            else:
                plan[name] = st.value
        elif given != st.value and name in _FLAGS and name != "dataset":
            why = name_options(f"{_FLAGS[name]} on the dataprep command line")
            changes.append(Change(st.key, st.value, given, why))
    if opts.model and "tokenizer" in settings:
        top["tokenizer"] = None
    resolved = replace(opts, **top, plan_options=plan)
    if resolved.method is None:
        resolved = replace(resolved, method="sft")
    if not resolved.model:
        raise UsageError(
            f"{recipe.path}: no model.pretrained_model_name_or_path, and no $[model]",
            hint="pass $[model] (a folder or Hugging Face id)",
        )
    if not resolved.dataset:
        found = recipe.dataset_path()
        what = f"{recipe.dataset_target() or 'no dataset section'}" + (
            f" reading {found[1]}" if found else ""
        )
        raise UsageError(
            f"{recipe.path}: the recipe's dataset is {what}, which preflight cannot read as chat data; pass $[dataset]",
            hint="$[dataset] PATH: any input normalize reads; recipe.yaml then points ChatDataset at the result",
        )
    return resolved, taken, changes
