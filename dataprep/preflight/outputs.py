"""The files a run writes besides the split, and what they said, for the report (``Outputs``): overrides.yaml
and the command line, or recipe.yaml (a recipe completed with what preflight decided); manifest.json;
report.json and report.html. The approved ones (``APPROVED_OUTPUTS``) exist only when no step stopped the
run: ``remove_stale`` removes an earlier run's first."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..atomic import atomic_write
from ..errors import DataprepError
from ..findings import finding, name_options
from ..manifest import now
from .options import APPROVED_OUTPUTS, PreflightOptions


class Outputs:
    """Writes the outputs into ``paths`` (``OUTPUT_NAMES`` in the output folder) and keeps what they said:
    ``overrides``, ``command_line``, ``recipe_out`` (recipe.yaml's changes) and ``manifest``."""

    def __init__(self, opts: PreflightOptions, paths: Mapping[str, Path]):
        self.o = opts
        self.paths = paths
        self.overrides: dict[str, Any] | None = None
        self.command_line: str | None = None
        self.recipe_out: dict[str, Any] | None = None
        self.manifest: dict[str, Any] | None = None

    def write_overrides(
        self,
        *,
        plan: Any,
        split: Any,
        seq_length: int | None,
        mask_generation_prompt: bool,
    ) -> None:
        """overrides.yaml and the command line over the recipe preflight names (no --recipe)."""
        from ..overrides import RECIPES, build_overrides, command_line, to_yaml

        plan_over = plan.overrides() if plan is not None and hasattr(plan, "overrides") else {}
        # The memory estimate assumed a loss: pin it even when it is the recipes' default.
        loss = plan.recommendation.loss if plan is not None else None
        if "loss_fn" not in plan_over and loss:
            from ..plan import LOSS_TARGETS

            if loss in LOSS_TARGETS:
                plan_over = {**plan_over, "loss_fn": {"_target_": LOSS_TARGETS[loss]}}
        self.overrides = build_overrides(
            model=self.o.model,
            train_path=self.paths["train"],
            validation_path=self.paths["validation"] if split and split.validation_rows else None,
            seq_length=seq_length,
            method=self.o.method,
            chat_template=self.o.chat_template,
            plan_overrides=plan_over,
            mask_generation_prompt=mask_generation_prompt,
        )
        self.command_line = command_line(self.overrides, config=self.o.recipe_config)
        header = (
            f"AutoModel overrides for {RECIPES[self.o.method]}, written by dataprep preflight {now()}.\n"
            f"Merge into the recipe YAML, or pass on the command line:\n{self.command_line}"
        )
        with atomic_write(self.paths["overrides"]) as fh:
            fh.write(to_yaml(self.overrides, header=header))

    def write_recipe_outputs(
        self,
        recipe: Any,
        taken: Mapping[str, Any],
        flag_changes: Iterable[Any],
        *,
        plan: Any,
        split: Any,
        seq_length: int | None,
        mask_generation_prompt: bool,
    ) -> None:
        """recipe.yaml (the user's recipe with what preflight decided), overrides.yaml and the command line
        that turn the original recipe into it, and the list of changes with why."""
        import shlex

        from ..overrides import to_yaml
        from ..recipe import Change, compose_overrides, nested, write_recipe
        from ..recipe import command_line as recipe_command_line

        r = recipe
        final = self._final_recipe(
            recipe,
            taken,
            plan=plan,
            split=split,
            seq_length=seq_length,
            mask_generation_prompt=mask_generation_prompt,
        )
        sets, too_long = compose_overrides(r.file_config, final)
        passed = [Change(k, None, v, "the recipe override after --") for k, _v in r.overrides for v in [_v]]
        changes = _recipe_changes(r.file_config, final, [*passed, *flag_changes])
        recipe_path = self.paths["recipe"].resolve()
        run_line = f"automodel {shlex.quote(str(recipe_path))}"
        original = str(r.path)
        self.command_line = None if too_long else recipe_command_line(original, sets)
        header = (
            f"{r.path.name} completed by dataprep preflight {now()}: {len(changes)} change(s), listed in\n"
            f"report.json (recipe.changes); everything else is the recipe as written.\nRun: {run_line}"
        )
        text, kept_layout = write_recipe(r, final, header)
        with atomic_write(self.paths["recipe"]) as fh:
            fh.write(text)
        self.overrides = nested(sets)
        if self.command_line:
            how = (
                f"The same changes over the original recipe, on AutoModel's command line (a mapping below replaces "
                f"the recipe's section whole: dotted overrides cannot delete a key; None removes a section):\n"
                f"{self.command_line}"
            )
        else:
            how = (
                f"These changes cannot be passed on AutoModel's command line: {', '.join(too_long)} must be "
                f"replaced whole and its value is over 1000 characters, which AutoModel does not parse. "
                f"Use {recipe_path.name}:\n{run_line}"
            )
        with atomic_write(self.paths["overrides"]) as fh:
            fh.write(
                to_yaml(
                    self.overrides,
                    header=f"Changes dataprep preflight {now()} makes to {original}.\n{how}",
                )
            )
        self.recipe_out = {
            "path": str(r.path.resolve()),
            "recipe_yaml": str(recipe_path),
            "kept_layout": kept_layout,
            "run": run_line,
            "changes": [c.to_dict() for c in changes],
            "command_line": self.command_line,
            "not_on_command_line": too_long,
            "overrides_applied": [{"key": k, "value": v} for k, v in r.overrides],
        }

    def _final_recipe(
        self,
        recipe: Any,
        taken: Mapping[str, Any],
        *,
        plan: Any,
        split: Any,
        seq_length: int | None,
        mask_generation_prompt: bool,
    ) -> dict[str, Any]:
        """The recipe as it will run: the user's (with their overrides) and the sections preflight decides."""
        import copy

        from ..overrides import chat_dataset_section
        from ..plan import LOSS_TARGETS
        from ..recipe import TORCH_DTYPES, peft_section

        r = recipe
        final: dict[str, Any] = copy.deepcopy(r.config)
        rec = plan.recommendation if plan is not None else None  # plan.PlanResult
        plan_over = plan.overrides() if plan is not None else {}
        if not isinstance(final.get("model"), dict):
            final["model"] = {}
        model = final["model"]
        if "model" not in taken and self.o.model:
            ref = self.o.model
            if Path(ref).expanduser().is_dir():
                ref = str(Path(ref).expanduser().resolve())
            model["pretrained_model_name_or_path"] = ref
        # the precision the memory plan assumed, explicit (an "auto" fp32 checkpoint would double it)
        param_dtype = plan.param_dtype if plan is not None else "bf16"
        want = TORCH_DTYPES[param_dtype]
        if TORCH_DTYPES.get(str(model.get("torch_dtype", "")).lower()) != want:
            model["torch_dtype"] = want
        if plan_over.get("model", {}).get("output_hidden_states"):
            model["output_hidden_states"] = True
        if "step_scheduler" in plan_over:
            sched = final.get("step_scheduler") if isinstance(final.get("step_scheduler"), dict) else {}
            final["step_scheduler"] = {**sched, **plan_over["step_scheduler"]}
        dist = final.get("distributed") if isinstance(final.get("distributed"), dict) else {}
        final["distributed"] = {
            **dist,
            "activation_checkpointing": bool(rec and rec.activation_checkpointing),
        }
        loss = rec.loss if rec is not None else None
        if loss in LOSS_TARGETS:
            current = final.get("loss_fn") if isinstance(final.get("loss_fn"), dict) else {}
            if current.get("_target_") != LOSS_TARGETS[loss]:
                final["loss_fn"] = {"_target_": LOSS_TARGETS[loss]}
        if rec is not None and rec.packing:
            ps = final.get("packed_sequence") if isinstance(final.get("packed_sequence"), dict) else {}
            final["packed_sequence"] = {**ps, "packed_sequence_size": int(rec.seq_length)}
        if self.o.method == "sft":
            final.pop("peft", None)
            final.pop("quantization", None)
        else:
            opts = self.o.plan_options
            explicit_targets = opts.get("lora_targets") if "lora_targets" not in taken else None
            old_peft = final.get("peft") if isinstance(final.get("peft"), dict) else None
            chooses = old_peft and any(
                old_peft.get(k) for k in ("target_modules", "match_all_linear", "exclude_modules")
            )
            if explicit_targets is None and not chooses:
                explicit_targets = plan.lora_targets  # what the memory plan counted, explicit
            final["peft"] = peft_section(
                old_peft,
                rank=int(opts.get("lora_rank") or plan.lora_rank),
                alpha=int(opts.get("lora_alpha") or plan.lora_alpha),
                targets=explicit_targets,
            )
        template = self._template_for_recipe()
        seq = seq_length
        sections = {"dataset": self.paths["train"]}
        if split and split.validation_rows:
            sections["validation_dataset"] = self.paths["validation"]
        else:
            final.pop("validation_dataset", None)
        for name, path in sections.items():
            old = final.get(name) if isinstance(final.get(name), dict) else {}
            sec = chat_dataset_section(
                path,
                seq_length=seq,
                chat_template=template,
                mask_generation_prompt=mask_generation_prompt,
            )
            if old.get("_target_") in _CHAT_TARGETS:  # the user's own ChatDataset settings ride along
                sec.update({k: v for k, v in old.items() if k in _CARRIED_DATASET_KEYS})
            if isinstance(old.get("tokenizer"), dict) and "tokenizer" in taken:
                sec["tokenizer"] = old["tokenizer"]  # (with --model, the model's tokenizer: no key)
            final[name] = sec
        return final

    def _template_for_recipe(self) -> str | None:
        """The chat template the recipe's ChatDataset should read: a file or --chat-template as given; a
        template written inline in the recipe goes to chat_template.jinja (so the dataset section stays short
        enough to pass on AutoModel's command line)."""
        t = self.o.chat_template
        if t is None:
            return None
        if _is_template_file(t):
            return t
        with atomic_write(self.paths["chat_template"]) as fh:
            fh.write(t)
        return str(self.paths["chat_template"].resolve())

    def write_manifest(self, split: Any, loaded: Any) -> None:
        from ..manifest import DataFile, build_manifest, resolved_from_dir

        data = {
            key: DataFile(str(self.paths[key].resolve()), sha, rows)
            for key, sha, rows in (
                ("train", split.train_sha256, split.train_rows),
                ("validation", split.validation_sha256, split.validation_rows),
            )
        }
        resolved = resolved_from_dir(self.o.model, loaded.model_dir) if loaded is not None else None
        tmpl_path = self.o.chat_template if _is_template_file(self.o.chat_template) else None
        m = build_manifest(
            self.o.model,
            data=data,
            chat_template=getattr(loaded, "template", None),
            template_source=getattr(loaded, "template_source", None),
            chat_template_path=tmpl_path,
            method=self.o.method,
            resolved=resolved,
        )
        self.manifest = m.to_dict()
        with atomic_write(self.paths["manifest"]) as fh:
            fh.write(json.dumps(self.manifest, indent=2, ensure_ascii=False) + "\n")

    def remove_stale(self) -> None:
        for key in APPROVED_OUTPUTS:
            self.paths[key].unlink(missing_ok=True)

    def report_fields(self) -> dict[str, Any]:
        """The report's outputs part: the files that exist, the overrides (and their YAML, without the
        comments), the command line, recipe.yaml's changes and the manifest."""
        outputs = {}
        for key, path in self.paths.items():
            if path.exists():
                outputs[key] = str(path.resolve())
        overrides_yaml = None
        if self.overrides is not None and self.paths["overrides"].exists():
            overrides_yaml = self.paths["overrides"].read_text(encoding="utf-8")
            overrides_yaml = (
                "\n".join(ln for ln in overrides_yaml.splitlines() if not ln.startswith("#")) + "\n"
            )
        return {
            "outputs": outputs,
            "overrides": self.overrides,
            "overrides_yaml": overrides_yaml,
            "command_line": self.command_line,
            "recipe": self.recipe_out,
            "manifest": self.manifest,
        }

    def write_report(self, report: Mapping[str, Any]) -> None:
        """report.json and report.html."""
        with atomic_write(self.paths["report_json"]) as fh:
            fh.write(json.dumps(report, indent=2, ensure_ascii=False, default=str) + "\n")
        from ..report_html import write_report_html

        write_report_html(report, self.paths["report_html"])


def _readable(paths: Iterable[Path]) -> None:
    """Outputs get the usual mode (0666 less the umask): temp files are created 0600, and the trainer
    may run as another user."""
    umask = os.umask(0)
    os.umask(umask)
    for p in paths:
        if p.exists():
            os.chmod(p, 0o666 & ~umask)


_CHAT_TARGETS = frozenset(
    {
        "nemo_automodel.components.datasets.llm.chat_dataset.ChatDataset",
        "nemo_automodel.components.datasets.llm.ChatDataset",
    }
)
# ChatDataset settings of the user's recipe that preflight does not decide (see recipe_setting_not_modeled)
_CARRIED_DATASET_KEYS = frozenset(
    {
        "shuffle_seed",
        "mask_reasoning_content",
        "mask_history",
        "unshifted",
        "skip_invalid_samples",
        "start_of_turn_token",
    }
)
# why recipe.yaml changes a key (the longest matching prefix wins); shown through name_options
_WHY = {
    "dataset": "ChatDataset reading the train.jsonl preflight wrote",
    "dataset.seq_length": "the plan's seq_length",
    "dataset.truncation": "truncation makes seq_length take effect",
    "dataset.padding": "ChatDataset pads in the collator; template-side padding would put pads before EOS",
    "dataset.mask_generation_prompt": "no generation tags: without it AutoModel trains every assistant header",
    "dataset.chat_template": "the recipe's template, read from chat_template.jinja",
    "validation_dataset": "ChatDataset reading the validation.jsonl preflight wrote",
    "step_scheduler": "the plan: the largest micro-batch that fits, accumulation for the global batch",
    "distributed.activation_checkpointing": "the plan's activation checkpointing, explicit",
    "peft": "the LoRA settings the memory plan used (one way of choosing modules)",
    "quantization": "$[method] sft: no quantized base",
    "loss_fn": "the loss the memory plan assumed",
    "model.torch_dtype": "the precision the memory plan assumed, explicit",
    "model.output_hidden_states": "FusedLinearCrossEntropy takes the hidden states",
    "model.pretrained_model_name_or_path": "$[model] on the dataprep command line",
    "packed_sequence": "the plan's packing",
}


def _recipe_changes(old: Mapping[str, Any], new: Mapping[str, Any], flag_changes: Iterable[Any]) -> list[Any]:
    """Every key recipe.yaml changes, with why; a dataset section that changes target or loses keys is one
    change (it is replaced whole)."""
    from ..recipe import Change, diff

    by_flag = {c.key: c.why for c in flag_changes}
    out: list[Change] = []
    whole = set()
    for name in ("dataset", "validation_dataset"):
        a, b = old.get(name), new.get(name)
        if isinstance(a, dict) and (
            not isinstance(b, dict) or a.get("_target_") != b.get("_target_") or set(a) - set(b)
        ):
            whole.add(name)
            out.append(Change(name, a, b, "replaced whole: " + name_options(_WHY[name])))
    for key, a, b in diff(old, new):
        if key.split(".", 1)[0] in whole:
            continue
        why = next((by_flag[k] for k in by_flag if key == k or key.startswith(k + ".")), None)
        if why is None:
            parts = key.split(".")
            why = next(
                (_WHY[".".join(parts[:i])] for i in range(len(parts), 0, -1) if ".".join(parts[:i]) in _WHY),
                "",
            )
        out.append(Change(key, a, b, name_options(why)))
    return out


def _is_template_file(t: str | None) -> bool:
    """Whether ``--chat-template`` / ``dataset.chat_template`` names a file (template text never does; a long
    text would not even stat: ENAMETOOLONG)."""
    if not t or "\n" in t or "{" in t:
        return False
    try:
        return Path(t).expanduser().is_file()
    except OSError:
        return False


def _refuse_input_overwrite(dataset: str, paths: Mapping[str, Path]) -> None:
    from ..atomic import overwrites_input

    if dataset == "-":
        return
    for path in paths.values():
        if overwrites_input(path, dataset):
            raise DataprepError(
                finding(
                    "output_would_overwrite_input",
                    f"{path}: an output of preflight would overwrite the input {dataset}",
                    hint="choose another $[out_dir] folder",
                )
            )
