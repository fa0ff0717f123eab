"""overrides.yaml for an AutoModel recipe, and the same overrides as a command line.

The dataset part (``dataset`` / ``validation_dataset`` pointing ChatDataset at the files preflight wrote) is
built here; the shape of training (``step_scheduler``, ``peft``, ``loss_fn``, ``distributed``...) comes
from the plan (``PlanResult.overrides()``) and is merged in. AutoModel's dataset sections reject unknown
keys, so only ChatDataset's own constructor arguments are ever written there.
"""

from __future__ import annotations

import ast
import os
import shlex
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

CHAT_DATASET_TARGET = "nemo_automodel.components.datasets.llm.chat_dataset.ChatDataset"
# ChatDatasetConfig of nemo-automodel 0.7.0 (it raises TypeError on any other key); the recipe supplies the
# tokenizer.
CHAT_DATASET_KEYS = frozenset(
    {
        "_target_",
        "path_or_dataset_id",
        "split",
        "name",
        "seq_length",
        "padding",
        "truncation",
        "start_of_turn_token",
        "chat_template",
        "shuffle_seed",
        "mask_reasoning_content",
        "mask_history",
        "unshifted",
        "skip_invalid_samples",
        "mask_generation_prompt",
    }
)
DATASET_SECTIONS = ("dataset", "validation_dataset")
PEFT_TARGET = "nemo_automodel.components._peft.lora.PeftConfig"
RECIPES = {"sft": "sft/automodel", "lora": "peft/automodel"}

Method = Literal["sft", "lora"]


def chat_dataset_section(
    path: str | os.PathLike,
    *,
    seq_length: int | None,
    chat_template: str | os.PathLike | None = None,
    padding: str | bool = "do_not_pad",
    truncation: str | bool = True,
    mask_generation_prompt: bool = False,
) -> dict[str, Any]:
    """A ``dataset:`` section for ChatDataset reading ``path`` (made absolute).

    ``mask_generation_prompt: true`` for templates without ``{% generation %}`` tags: AutoModel's prefix masking
    otherwise trains every assistant turn's header (``dataprep.trainer``).

    ChatDataset treats a path that contains ``/`` and does not exist locally as a Hub id, so the path is
    always absolute. ``truncation: true`` makes ``seq_length`` take effect (it does nothing without
    truncation or padding); ``padding: do_not_pad`` because the collator pads each batch to its longest row, and
    ``max_length`` would pad every row to ``seq_length`` (with packing: packs full of pads).
    """
    section: dict[str, Any] = {
        "_target_": CHAT_DATASET_TARGET,
        "path_or_dataset_id": str(Path(path).expanduser().resolve()),
    }
    if seq_length is not None:
        section["seq_length"] = int(seq_length)
        section["truncation"] = truncation
        section["padding"] = padding
    if chat_template is not None:
        section["chat_template"] = _template_value(chat_template)
    if mask_generation_prompt:
        section["mask_generation_prompt"] = True
    return section


def _template_value(chat_template: str | os.PathLike) -> str:
    """A template file becomes its absolute path (ChatDataset reads .jinja / .json paths); text stays text."""
    text = str(chat_template)
    if "\n" not in text and "{" not in text:
        p = Path(text).expanduser()
        if p.exists():
            return str(p.resolve())
    return text


def deep_merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``extra`` over ``base``, recursively for nested mappings; neither input is changed."""
    out: dict[str, Any] = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in base.items()}
    for k, v in extra.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = dict(v) if isinstance(v, Mapping) else v
    return out


def _filter_dataset(section: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    kept = {k: v for k, v in section.items() if k in CHAT_DATASET_KEYS}
    return kept, sorted(k for k in section if k not in CHAT_DATASET_KEYS)


def build_overrides(
    *,
    model: str,
    train_path: str | os.PathLike,
    validation_path: str | os.PathLike | None,
    seq_length: int | None,
    method: Method = "sft",
    chat_template: str | os.PathLike | None = None,
    plan_overrides: Mapping[str, Any] | None = None,
    mask_generation_prompt: bool = False,
) -> dict[str, Any]:
    """The nested overrides for the chosen recipe: the plan's sections plus the dataset sections.

    The model is written as given when it is a Hub id, absolute when it is a local folder. Keys the plan
    sets inside the dataset sections are kept only when ChatDataset accepts them.
    """
    plan = dict(plan_overrides or {})
    model_ref = model
    if Path(model).expanduser().is_dir():
        model_ref = str(Path(model).expanduser().resolve())
    out: dict[str, Any] = {"model": {"pretrained_model_name_or_path": model_ref}}
    out = deep_merge(out, {k: v for k, v in plan.items() if k not in DATASET_SECTIONS})
    # The plan may hold its own idea of seq_length (it is what it sized memory for).
    plan_seq = _plan_seq_length(plan)
    seq = seq_length if seq_length is not None else plan_seq
    sections = {"dataset": train_path}
    if validation_path is not None:
        sections["validation_dataset"] = validation_path
    for name, path in sections.items():
        base = chat_dataset_section(
            path, seq_length=seq, chat_template=chat_template, mask_generation_prompt=mask_generation_prompt
        )
        extra, _dropped = _filter_dataset(plan.get(name) or {})
        extra.pop("path_or_dataset_id", None)
        extra.pop("_target_", None)
        out[name] = {**base, **extra}
    if method == "lora":
        out.setdefault("peft", {"_target_": PEFT_TARGET, "target_modules": "*_proj", "dim": 16, "alpha": 32})
    else:
        out.pop("peft", None)
    # The model section: the plan must not point the recipe at another checkpoint.
    out["model"]["pretrained_model_name_or_path"] = model_ref
    return out


def _plan_seq_length(plan: Mapping[str, Any]) -> int | None:
    for key in ("dataset", "validation_dataset"):
        sec = plan.get(key)
        if isinstance(sec, Mapping) and isinstance(sec.get("seq_length"), int):
            return sec["seq_length"]
    v = plan.get("seq_length")
    return v if isinstance(v, int) else None


def dotted_items(overrides: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Leaves as (``a.b.c``, value); lists are leaves."""
    for k, v in overrides.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            yield from dotted_items(v, key + ".")
        else:
            yield key, v


_SPECIAL = {"none": None, "None": None, "true": True, "True": True, "false": False, "False": False}


def read_cli_value(text: str) -> Any:
    """How AutoModel reads an override value: none/true/false, else a Python literal, else the text."""
    if text in _SPECIAL:
        return _SPECIAL[text]
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def literal(v: Any) -> str:
    """A Python literal ``ast.literal_eval`` reads back as ``v``, strings in double quotes (so the shell's single
    quotes wrap it cleanly)."""
    import json

    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{literal(str(k))}: {literal(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(literal(x) for x in v) + "]"
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    return repr(v)


def _cli_value(v: Any) -> str:
    """A value written so that AutoModel's reader gives it back unchanged."""
    if v is None:
        return "None"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple, Mapping)):
        return literal(v)
    text = str(v)
    # A string that would read back as something else ("8", "True", "[1]") goes quoted.
    return text if read_cli_value(text) == text and type(read_cli_value(text)) is str else literal(text)


def command_line(
    overrides: Mapping[str, Any],
    *,
    config: str = "RECIPE.yaml",
    program: str = "automodel",
) -> str:
    """``automodel RECIPE.yaml --dotted.key value ...``, quoted for a POSIX shell.

    A value that starts with ``-`` or spans lines is written ``--key=value``, since AutoModel's parser
    would otherwise take it for the next flag.
    """
    return " ".join([program, shlex.quote(config), *cli_arguments(dotted_items(overrides))])


def cli_arguments(items: Iterable[tuple[str, Any]]) -> list[str]:
    """``--dotted.key value`` per (key, value), shell-quoted: the one writer of AutoModel overrides (plan,
    preflight and recipe.yaml's command line all print through it). A value that starts with ``-``, spans lines
    or is empty is written ``--key=value``, since AutoModel's parser would otherwise take it for the next flag."""
    out = []
    for key, value in items:
        text = _cli_value(value)
        if text.startswith("-") or "\n" in text or text == "":
            out.append(shlex.quote(f"--{key}={text}"))
        else:
            out.append(f"--{key} {shlex.quote(text)}")
    return out


def to_yaml(overrides: Mapping[str, Any], *, header: str | None = None) -> str:
    """Block-style YAML in insertion order; multi-line strings (a template text) as literal blocks."""
    import yaml

    class _Dumper(yaml.SafeDumper):
        pass

    def _str(dumper: yaml.SafeDumper, data: str):
        style = "|" if "\n" in data else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)

    _Dumper.add_representer(str, _str)
    body = yaml.dump(
        _plain(overrides),
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=100,
    )
    if header:
        body = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines()) + body
    return body


def _plain(v: Any) -> Any:
    """Mappings and tuples to dicts and lists, so the safe dumper takes them."""
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v
