"""An AutoModel recipe, read the way AutoModel 0.7.0 reads it, checked, and written back complete.

AutoModel loads a recipe with ``yaml.safe_load`` and wraps it in ``ConfigNode``, which passes every scalar
through ``translate_value`` (``none``/``true``/``false``, then ``ast.literal_eval``, else the text; strings over
1000 characters are left alone) except ``_target_`` and ``*_fn`` keys, and resolves ``${VAR}`` / ``${VAR,default}``
/ ``$VAR`` from the environment. Command-line overrides follow ``parse_cli_argv``: ``--a.b v``, ``--a.b=v``, a
bare ``--flag`` is ``True``, tokens without ``--`` are skipped; ``set_by_dotted`` creates missing sections and a
value that reads as a dict replaces the whole node. That is the only way AutoModel's grammar removes a key, so
the command line this module composes passes a section whose keys must go as one dict literal (and says when
such a literal would pass 1000 characters, where AutoModel stops parsing it).

``write_recipe`` keeps the user's file (its comments and layout, through ruamel.yaml's round trip) and changes
only the nodes whose value must change; it re-reads what it wrote the way AutoModel will and falls back to a
plain dump when the two differ.
"""

from __future__ import annotations

import ast
import copy
import io
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import DataprepError, UsageError
from .findings import Finding, finding
from .overrides import CHAT_DATASET_KEYS, CHAT_DATASET_TARGET, DATASET_SECTIONS, PEFT_TARGET, literal

LITERAL_LIMIT = 1000  # translate_value leaves longer strings unparsed
CHAT_DATASET_TARGETS = frozenset({CHAT_DATASET_TARGET, "nemo_automodel.components.datasets.llm.ChatDataset"})
# keys the recipe pops from a dataset section before the dataset config sees them
DATASET_RUNTIME_KEYS = frozenset({"tokenizer"})
# where a dataset section names its data
PATH_KEYS = ("path_or_dataset_id", "data_files", "path", "dataset_name")
# model.torch_dtype spellings AutoModel accepts -> the torch dtype they name
TORCH_DTYPES = {
    alias: dtype
    for dtype, aliases in {
        "bfloat16": ("bf16", "bfloat16", "torch.bfloat16"),
        "float32": ("fp32", "float32", "torch.float32", "float"),
        "float16": ("fp16", "float16", "torch.float16", "half"),
    }.items()
    for alias in aliases
}
PARAM_DTYPE_OF = {"bfloat16": "bf16", "float32": "fp32"}


# -- AutoModel's reading ---------------------------------------------------------------------------------------


_SPECIAL = {"none": None, "None": None, "true": True, "True": True, "false": False, "False": False}


def translate_value(v: Any) -> Any:
    """AutoModel's ``translate_value``: special words, then a Python literal, else the text unchanged."""
    if not isinstance(v, str):
        return v
    if v in _SPECIAL:
        return _SPECIAL[v]
    if len(v) > LITERAL_LIMIT:
        return v
    try:
        return ast.literal_eval(v)
    except Exception:  # noqa: BLE001 - AutoModel falls back to the text on any failure
        return v


_BRACED = re.compile(r"\$\{([^}]+)\}")
_DOLLAR = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)")


def _resolve_env(value: str, where: str) -> str:
    def get(name: str, default: str | None, token: str) -> str:
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        raise UsageError(
            f"{where}: environment variable {name!r} is not set (the recipe reads {token})",
            hint=f"export {name}=... before running, as AutoModel needs it too",
        )

    def braced(m: re.Match[str]) -> str:
        expr = m.group(1).strip()
        if expr.startswith("oc.env:"):
            expr = expr[len("oc.env:") :].strip()
        name, default = (p.strip() for p in expr.split(",", 1)) if "," in expr else (expr, None)
        return get(name, default, m.group(0))

    value = _BRACED.sub(braced, value)
    return _DOLLAR.sub(lambda m: get(m.group(1), None, m.group(0)), value)


def wrap(key: str, value: Any, where: str = "") -> Any:
    """A YAML value as ``ConfigNode`` holds it (``_target_`` and ``*_fn`` stay dotted-path strings here)."""
    here = f"{where}.{key}" if where and key else key or where
    if isinstance(value, dict):
        return {str(k): wrap(str(k), v, here) for k, v in value.items()}
    if isinstance(value, list):
        return [wrap("", v, here) for v in value]
    if key == "_target_" or key.endswith("_fn"):
        return value
    if isinstance(value, str) and "$" in value:
        return translate_value(_resolve_env(value, here))
    return translate_value(value)


def parse_overrides(argv: Sequence[str]) -> list[tuple[str, Any]]:
    """``parse_cli_argv``'s grammar: ``(dotted.key, value)`` pairs, values through ``translate_value``."""
    out: list[tuple[str, Any]] = []
    i = 0
    while i < len(argv):
        tok = argv[i]
        if tok in ("--config", "-c"):
            raise UsageError(
                f"{tok} in the recipe overrides: the recipe file is the $[recipe] option",
                hint="dataprep preflight --recipe RECIPE.yaml ... -- --a.b value",
            )
        if tok.startswith("--"):
            key = tok.lstrip("-")
            if "=" in key:
                key, val = key.split("=", 1)
                i += 1
            elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                val = argv[i + 1]
                i += 2
            else:
                val = "True"
                i += 1
            if not key or any(not part for part in key.split(".")):
                raise DataprepError(
                    finding("recipe_invalid", f"override {tok!r}: not a --dotted.key", severity="error")
                )
            out.append((key, translate_value(val)))
            continue
        i += 1  # AutoModel skips anything else
    return out


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """``ConfigNode.set_by_dotted``: missing or non-mapping parents become empty sections."""
    parts = dotted.split(".")
    node = tree
    for p in parts[:-1]:
        if not isinstance(node.get(p), dict):
            node[p] = {}
        node = node[p]
    node[parts[-1]] = wrap(parts[-1], value, ".".join(parts[:-1]))


def get_dotted(tree: Mapping[str, Any], dotted: str, default: Any = None) -> Any:
    node: Any = tree
    for p in dotted.split("."):
        if isinstance(node, Mapping) and p in node:
            node = node[p]
        elif isinstance(node, list) and p.isdigit() and int(p) < len(node):
            node = node[int(p)]
        else:
            return default
    return node


# -- the recipe ---------------------------------------------------------------------------------------------------


@dataclass
class Recipe:
    """A recipe file plus its command-line overrides, as AutoModel will see it (``config``)."""

    path: Path
    text: str
    file_config: dict[str, Any]  # the file alone, translated
    overrides: list[tuple[str, Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)  # file + overrides

    def get(self, dotted: str, default: Any = None) -> Any:
        return get_dotted(self.config, dotted, default)

    def section(self, name: str) -> dict[str, Any] | None:
        v = self.config.get(name)
        return v if isinstance(v, dict) else None

    @property
    def model_name(self) -> str | None:
        name = self.get("model.pretrained_model_name_or_path")
        if name is None:
            cfg = self.get("model.config")
            name = cfg if isinstance(cfg, str) else get_dotted(cfg or {}, "pretrained_model_name_or_path")
        return str(name) if name is not None else None

    @property
    def tokenizer_name(self) -> str | None:
        """What the recipe builds the tokenizer from: ``dataset.tokenizer`` when given, else the model."""
        tok = self.get("dataset.tokenizer")
        if isinstance(tok, dict) and tok.get("pretrained_model_name_or_path") is not None:
            return str(tok["pretrained_model_name_or_path"])
        return self.model_name

    def dataset_target(self, name: str = "dataset") -> str | None:
        sec = self.section(name)
        t = sec.get("_target_") if sec else None
        return str(t) if t is not None else None

    def is_chat_dataset(self, name: str = "dataset") -> bool:
        return self.dataset_target(name) in CHAT_DATASET_TARGETS

    def dataset_path(self, name: str = "dataset") -> tuple[str, str] | None:
        """``(key, value)`` of the section's data path (the first of PATH_KEYS it sets)."""
        sec = self.section(name) or {}
        for k in PATH_KEYS:
            v = sec.get(k)
            if isinstance(v, str) and v:
                return f"{name}.{k}", v
        return None

    @property
    def packed_sequence_size(self) -> int:
        v = self.get("packed_sequence.packed_sequence_size", 0)
        return v if isinstance(v, int) and not isinstance(v, bool) else 0


def load_recipe(path: str | os.PathLike, argv: Sequence[str] = ()) -> Recipe:
    """Read RECIPE.yaml and apply ``argv`` overrides as AutoModel does; a broken file is ``recipe_invalid``."""
    import yaml

    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(
            f"$[recipe] {path}: no such file", hint="the AutoModel recipe YAML to start from"
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataprepError(
            finding("recipe_invalid", f"{path}: cannot be read ({err})", severity="error")
        ) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise DataprepError(
            finding("recipe_invalid", f"{path}:{where} not YAML ({problem})", severity="error")
        ) from None
    if not isinstance(raw, dict):
        raise DataprepError(
            finding(
                "recipe_invalid",
                f"{path}: a recipe is a mapping of sections, got {type(raw).__name__}",
                severity="error",
            )
        )
    file_config = wrap("", raw)
    overrides = parse_overrides(argv)
    config = copy.deepcopy(file_config)
    for key, value in overrides:
        set_dotted(config, key, value)
    return Recipe(p, text, file_config, overrides, config)


# -- what the plan takes from it --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """A value preflight takes from the recipe, with the key it came from."""

    key: str
    value: Any


def recipe_settings(recipe: Recipe) -> dict[str, Setting]:
    """The recipe's answers to preflight's options (field name -> Setting); only what the recipe sets."""
    from .plan import LOSS_TARGETS

    out: dict[str, Setting] = {}

    def put(name: str, key: str, value: Any) -> None:
        if value is not None:
            out[name] = Setting(key, value)

    put("model", "model.pretrained_model_name_or_path", recipe.model_name)
    if recipe.tokenizer_name and recipe.tokenizer_name != recipe.model_name:
        put("tokenizer", "dataset.tokenizer.pretrained_model_name_or_path", recipe.tokenizer_name)
    found = recipe.dataset_path()
    if found and recipe.is_chat_dataset():
        put("dataset", found[0], found[1])
    seq = recipe.get("dataset.seq_length")
    if isinstance(seq, int) and not isinstance(seq, bool) and seq > 0:
        put("seq_length", "dataset.seq_length", seq)
    tmpl = recipe.get("dataset.chat_template")
    if isinstance(tmpl, str) and tmpl:
        put("chat_template", "dataset.chat_template", tmpl)
    peft = recipe.section("peft")
    put("method", "peft", ("qlora" if recipe.section("quantization") else "lora") if peft else "sft")
    if peft:
        put("lora_rank", "peft.dim", _int_or_none(peft.get("dim")))
        put("lora_alpha", "peft.alpha", _int_or_none(peft.get("alpha")))
        targets = peft.get("target_modules")
        if peft.get("match_all_linear") is True and not targets:
            put("lora_targets", "peft.match_all_linear", "all-linear")
        elif not targets and peft.get("exclude_modules"):
            put(
                "lora_targets", "peft.exclude_modules", "all-linear"
            )  # every Linear but a few: the upper bound
        elif isinstance(targets, (str, list)) and targets:
            put(
                "lora_targets",
                "peft.target_modules",
                ",".join(targets) if isinstance(targets, list) else targets,
            )
    # the run's length, for the time estimate (AutoModel stops at whichever comes first)
    put("epochs", "step_scheduler.num_epochs", _int_or_none(recipe.get("step_scheduler.num_epochs")))
    put("max_steps", "step_scheduler.max_steps", _int_or_none(recipe.get("step_scheduler.max_steps")))
    gbs = _int_or_none(recipe.get("step_scheduler.global_batch_size"))
    put("global_batch_size", "step_scheduler.global_batch_size", gbs)
    ac = recipe.get("distributed.activation_checkpointing")
    if isinstance(ac, bool):
        put("activation_checkpointing", "distributed.activation_checkpointing", "on" if ac else "off")
    target = recipe.get("loss_fn._target_")
    by_target = {v: k for k, v in LOSS_TARGETS.items()}
    if isinstance(target, str) and target in by_target:
        put("loss", "loss_fn._target_", by_target[target])
    dtype = TORCH_DTYPES.get(str(recipe.get("model.torch_dtype", "")).lower())
    if dtype in PARAM_DTYPE_OF:
        put("param_dtype", "model.torch_dtype", PARAM_DTYPE_OF[dtype])
    if recipe.packed_sequence_size > 0:
        put("packing", "packed_sequence.packed_sequence_size", True)
    for name in ("tp_size", "cp_size"):
        v = _int_or_none(recipe.get(f"distributed.{name}"))
        if v and v > 1:
            put(name, f"distributed.{name}", v)
    return out


def _int_or_none(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


# -- checks ----------------------------------------------------------------------------------------------------


def check_recipe(recipe: Recipe, *, gpus: int) -> list[Finding]:
    """What the recipe would do wrong or does not say, each with the key it is about (preflight replaces the
    dataset sections in recipe.yaml: their checks say what the user's recipe does)."""
    out: list[Finding] = []
    name = recipe.path.name
    for sec_name in DATASET_SECTIONS:
        sec = recipe.section(sec_name)
        if sec is None:
            continue
        target = recipe.dataset_target(sec_name)
        if target not in CHAT_DATASET_TARGETS:
            stale = sorted(k for k in sec if k not in CHAT_DATASET_KEYS and k not in DATASET_RUNTIME_KEYS)
            out.append(
                finding(
                    "recipe_dataset_not_chat",
                    f"{name}: {sec_name}._target_ is {target or '(missing)'}, not ChatDataset; recipe.yaml reads the "
                    f"files preflight wrote with ChatDataset"
                    + (f", without the old keys {', '.join(stale)}" if stale else ""),
                    key=f"{sec_name}._target_",
                    target=target,
                    stale_keys=stale,
                )
            )
        else:
            stale = sorted(k for k in sec if k not in CHAT_DATASET_KEYS and k not in DATASET_RUNTIME_KEYS)
            if stale:
                out.append(
                    finding(
                        "recipe_dataset_unknown_keys",
                        f"{name}: {sec_name} has {', '.join(stale)}, which ChatDataset does not take: AutoModel "
                        f"0.7.0 stops with 'ChatDatasetConfig got unexpected dataset config field(s)'",
                        keys=[f"{sec_name}.{k}" for k in stale],
                    )
                )
        seq = sec.get("seq_length")
        trunc = sec.get("truncation", "do_not_truncate")
        pad = sec.get("padding", "do_not_pad")
        truncates = trunc not in (False, None, "do_not_truncate")
        if isinstance(seq, int) and not truncates and pad != "max_length":
            out.append(
                finding(
                    "seq_length_without_truncation",
                    f"{name}: {sec_name}.seq_length is {seq} but truncation is {trunc!r}: ChatDataset cuts "
                    f"nothing, so the longest row decides the memory (an OOM waiting for its row)",
                    key=f"{sec_name}.seq_length",
                )
            )
        pss = recipe.packed_sequence_size
        if pss > 0:
            if pad == "max_length":
                out.append(
                    finding(
                        "packing_padding_conflict",
                        f"{name}: packed_sequence.packed_sequence_size {pss} with {sec_name}.padding max_length: "
                        f"every row is padded to seq_length before packing, so each pack holds pads",
                        key=f"{sec_name}.padding",
                    )
                )
            elif isinstance(seq, int) and seq > pss:
                split = recipe.get("packed_sequence.split_across_pack", False)
                if not split:
                    out.append(
                        finding(
                            "packing_padding_conflict",
                            f"{name}: {sec_name}.seq_length {seq} is longer than packed_sequence_size {pss}: a row "
                            f"longer than the pack stops packing ('Dataset sample is too long')",
                            key=f"{sec_name}.seq_length",
                        )
                    )
    for sec_name in DATASET_SECTIONS:
        sec = recipe.section(sec_name) or {}
        if recipe.dataset_target(sec_name) not in CHAT_DATASET_TARGETS:
            continue
        for key in ("mask_reasoning_content", "mask_history", "unshifted", "start_of_turn_token"):
            if sec.get(key) not in (None, False):
                out.append(
                    finding(
                        "recipe_setting_not_modeled",
                        f"{name}: {sec_name}.{key} is {sec[key]!r}: recipe.yaml keeps it, but dataprep's token and "
                        f"supervised-token counts model ChatDataset's default for it",
                        key=f"{sec_name}.{key}",
                    )
                )
    out += _check_peft(recipe, name)
    out += _check_batch(recipe, name, gpus)
    if TORCH_DTYPES.get(str(recipe.get("model.torch_dtype", "")).lower()) is None:
        have = recipe.get("model.torch_dtype")
        out.append(
            finding(
                "precision_not_explicit",
                f"{name}: model.torch_dtype is {'not set' if have is None else repr(have)}: the checkpoint's own "
                f"dtype decides the precision "
                f"(an fp32 checkpoint trains in fp32: twice the memory the plan assumes)",
                hint="recipe.yaml sets model.torch_dtype to the dtype the memory plan assumed",
                key="model.torch_dtype",
            )
        )
    for key in ("step_scheduler.local_batch_size", "step_scheduler.global_batch_size"):
        if recipe.get(key) is None:
            out.append(
                finding(
                    "precision_not_explicit",
                    f"{name}: {key} is not set: AutoModel's default applies",
                    hint="recipe.yaml writes the plan's value",
                    key=key,
                )
            )
    pp = _int_or_none(recipe.get("distributed.pp_size")) or 1
    if pp > 1:
        out.append(
            finding(
                "recipe_setting_not_modeled",
                f"{name}: distributed.pp_size {pp}: the memory plan does not model pipeline parallelism "
                f"(it assumes every GPU holds every layer's activations)",
                key="distributed.pp_size",
            )
        )
    target = recipe.get("loss_fn._target_")
    if isinstance(target, str):
        from .plan import LOSS_TARGETS

        if target not in LOSS_TARGETS.values():
            out.append(
                finding(
                    "recipe_setting_not_modeled",
                    f"{name}: loss_fn {target}: the memory plan knows MaskedCrossEntropy, ChunkedCrossEntropy and "
                    f"FusedLinearCrossEntropy, and assumes MaskedCrossEntropy's logits buffer",
                    key="loss_fn._target_",
                )
            )
    return out


def _check_peft(recipe: Recipe, name: str) -> list[Finding]:
    peft = recipe.section("peft")
    if not peft:
        return []
    targets = peft.get("target_modules") or []
    excludes = peft.get("exclude_modules") or []
    if peft.get("match_all_linear") is True and (targets or excludes):
        which = "target_modules" if targets else "exclude_modules"
        return [
            finding(
                "peft_target_conflict",
                f"{name}: peft.match_all_linear is true and peft.{which} is set: AutoModel's module matcher stops "
                f"with 'Expected target_modules/exclude_modules to be empty when match_all_linear is true'",
                hint="recipe.yaml keeps target_modules and drops match_all_linear"
                if targets
                else "recipe.yaml keeps match_all_linear and drops exclude_modules",
                key="peft.match_all_linear",
            )
        ]
    if targets and excludes:
        return [
            finding(
                "peft_target_conflict",
                f"{name}: peft.target_modules and peft.exclude_modules are both set: AutoModel stops with "
                f"'target_modules and exclude_modules are mutually exclusive'",
                hint="recipe.yaml keeps target_modules",
                key="peft.exclude_modules",
            )
        ]
    return []


def parallel_sizes(recipe: Recipe | None, gpus: int) -> dict[str, int | None]:
    """tp, cp, pp from the recipe (1 when unset) and the dp they leave on ``gpus`` (None: does not divide)."""
    sizes = {
        k: (_int_or_none(recipe.get(f"distributed.{k}")) if recipe else None) or 1
        for k in ("tp_size", "cp_size", "pp_size")
    }
    other = sizes["tp_size"] * sizes["cp_size"] * sizes["pp_size"]
    dp = gpus // other if gpus % other == 0 else None
    return {**sizes, "dp_size": dp}


def _check_batch(recipe: Recipe, name: str, gpus: int) -> list[Finding]:
    out: list[Finding] = []
    sizes = parallel_sizes(recipe, gpus)
    explicit_dp = _int_or_none(recipe.get("distributed.dp_size"))
    dp = sizes["dp_size"]
    other = sizes["tp_size"] * sizes["cp_size"] * sizes["pp_size"]
    if dp is None or (explicit_dp is not None and explicit_dp * other != gpus):
        shown = f"dp_size {explicit_dp} x " if explicit_dp is not None else ""
        out.append(
            finding(
                "recipe_parallel_mismatch",
                f"{name}: distributed {shown}tp_size {sizes['tp_size']} x cp_size {sizes['cp_size']} x pp_size "
                f"{sizes['pp_size']} does not make the {gpus} GPU(s) of $[gpus]",
                key="distributed",
            )
        )
        return out
    gbs = _int_or_none(recipe.get("step_scheduler.global_batch_size"))
    lbs = _int_or_none(recipe.get("step_scheduler.local_batch_size"))
    if gbs and lbs and gbs % (lbs * dp) != 0:
        out.append(
            finding(
                "recipe_batch_not_divisible",
                f"{name}: step_scheduler.global_batch_size {gbs} is not a multiple of local_batch_size {lbs} x "
                f"dp_size {dp}: AutoModel stops at start-up",
                key="step_scheduler.global_batch_size",
            )
        )
    return out


# -- the recipe preflight writes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """One key recipe.yaml changes, with why."""

    key: str
    old: Any
    new: Any
    why: str

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "old": _short(self.old), "new": _short(self.new), "why": self.why}


_MISSING = object()


def _short(v: Any) -> Any:
    if v is _MISSING:
        return None
    if isinstance(v, str) and len(v) > 120:
        return v[:100] + f"... ({len(v)} characters)"
    if isinstance(v, dict):
        return {k: _short(x) for k, x in v.items()}
    return v


def diff(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any, Any]]:
    """``(dotted key, old, new)`` for every leaf that differs (``_MISSING`` for an absent side)."""
    for k in list(old) + [k for k in new if k not in old]:
        key = f"{prefix}{k}"
        a, b = old.get(k, _MISSING), new.get(k, _MISSING)
        if isinstance(a, dict) and isinstance(b, dict):
            yield from diff(a, b, key + ".")
        elif a != b or type(a) is not type(b):
            yield key, a, b


def compose_overrides(
    old: Mapping[str, Any], new: Mapping[str, Any]
) -> tuple[list[tuple[str, Any]], list[str]]:
    """Dotted overrides that turn ``old`` into ``new`` through ``set_by_dotted``, and the sections they cannot.

    A section that loses a key is passed whole as one dict literal; a removed top-level section as ``None``
    (AutoModel tests ``cfg.get(name) is not None``). A literal over LITERAL_LIMIT characters is one AutoModel
    would keep as text: such sections are returned in the second list.
    """
    sets: list[tuple[str, Any]] = []
    too_long: list[str] = []

    def walk(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str) -> None:
        for k in list(a) + [k for k in b if k not in a]:
            key = f"{prefix}{k}"
            x, y = a.get(k, _MISSING), b.get(k, _MISSING)
            if y is _MISSING:
                sets.append((key, None))
            elif isinstance(x, dict) and isinstance(y, dict):
                if any(kk not in y for kk in x):  # a key must go: the whole section as one value
                    if len(literal(y)) > LITERAL_LIMIT:
                        too_long.append(key)
                    sets.append((key, y))
                else:
                    walk(x, y, key + ".")
            elif x != y or type(x) is not type(y):
                if isinstance(y, dict):
                    if len(literal(y)) > LITERAL_LIMIT:
                        too_long.append(key)
                    sets.append((key, y))
                else:
                    sets.append((key, y))

    walk(old, new, "")
    return sets, too_long


def command_line(recipe_path: str, sets: Sequence[tuple[str, Any]], *, program: str = "automodel") -> str:
    """``automodel RECIPE --key value ...`` for a POSIX shell; dict values as Python literals."""
    import shlex

    from .overrides import cli_arguments

    return " ".join([program, shlex.quote(recipe_path), *cli_arguments(sets)])


def nested(sets: Sequence[tuple[str, Any]]) -> dict[str, Any]:
    """The dotted overrides as one nested mapping (overrides.yaml)."""
    out: dict[str, Any] = {}
    for key, value in sets:
        parts = key.split(".")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


def write_recipe(recipe: Recipe, final: Mapping[str, Any], header: str) -> tuple[str, bool]:
    """recipe.yaml's text: the user's file with only the nodes that change rewritten, comments kept.

    Returns ``(text, kept_layout)``; when the round trip would not read back as ``final`` the way AutoModel
    reads it, the text is a plain dump of ``final`` (comments lost) and ``kept_layout`` is False.
    """
    import yaml
    from ruamel.yaml import YAML

    rt = YAML(typ="rt")
    rt.preserve_quotes = True
    rt.width = 4096
    rt.indent(mapping=2, sequence=4, offset=2)
    prefix = "".join(f"# {ln}\n" if ln else "#\n" for ln in header.splitlines())
    try:
        doc = rt.load(recipe.text)
        _sync(doc, recipe.file_config, final)
        buf = io.StringIO()
        rt.dump(doc, buf)
        text = buf.getvalue()
        if wrap("", yaml.safe_load(text)) == final:
            return prefix + text, True
    except Exception:  # noqa: BLE001 - any trouble in the layout-keeping path: the plain dump below
        pass
    from .overrides import to_yaml

    return to_yaml(final, header=header), False


def _sync(node: Any, seen: Mapping[str, Any], want: Mapping[str, Any]) -> None:
    """Make the round-trip mapping ``node`` (read by AutoModel as ``seen``) hold ``want``, touching only what
    differs."""
    for k in [k for k in list(node) if str(k) not in want]:
        del node[k]
    for k, v in want.items():
        old = seen.get(k, _MISSING) if isinstance(seen, Mapping) else _MISSING
        if old is not _MISSING and old == v and type(old) is type(v):
            continue
        if isinstance(v, dict) and k in node and isinstance(old, dict) and hasattr(node[k], "items"):
            _sync(node[k], old, v)
        else:
            node[k] = _rt_value(v)


def _rt_value(v: Any) -> Any:
    """A new value for the round-trip document, styled so PyYAML reads it back the same."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq
    from ruamel.yaml.scalarstring import DoubleQuotedScalarString, LiteralScalarString

    if isinstance(v, dict):
        m = CommentedMap()
        for k, x in v.items():
            m[k] = _rt_value(x)
        return m
    if isinstance(v, (list, tuple)):
        return CommentedSeq([_rt_value(x) for x in v])
    if isinstance(v, str):
        if "\n" in v:
            return LiteralScalarString(v)
        if _plain_is_str(v):
            return v
        return DoubleQuotedScalarString(v)
    return v


def _plain_is_str(text: str) -> bool:
    """Whether PyYAML reads ``text`` written plain as this same string."""
    import yaml

    try:
        return yaml.safe_load(f"k: {text}\n") == {"k": text}
    except yaml.YAMLError:
        return False


def peft_section(
    existing: Mapping[str, Any] | None, *, rank: int, alpha: int, targets: str | None = None
) -> dict[str, Any]:
    """The recipe's peft section with the plan's rank and alpha, choosing modules one way only.

    ``targets`` (--lora-targets) replaces the recipe's choice; otherwise the recipe's is kept, and a conflict
    AutoModel refuses (``peft_target_conflict``) is resolved in favour of target_modules (then
    match_all_linear over exclude_modules).
    """
    from .modelconfig import parse_targets

    sec = dict(existing or {})
    sec.setdefault("_target_", PEFT_TARGET)
    sec["dim"] = rank
    sec["alpha"] = alpha
    if targets == "all-linear":
        sec["match_all_linear"] = True
        sec.pop("target_modules", None)
        sec.pop("exclude_modules", None)
    elif targets is not None:
        pats = parse_targets(targets)
        current = sec.get("target_modules")
        if not (current == pats or (isinstance(current, str) and [current] == pats)):
            sec["target_modules"] = pats[0] if len(pats) == 1 else pats
        sec.pop("match_all_linear", None)
        sec.pop("exclude_modules", None)
    elif sec.get("target_modules"):
        sec.pop("match_all_linear", None)
        sec.pop("exclude_modules", None)
    elif sec.get("match_all_linear") is True:
        sec.pop("exclude_modules", None)
    return sec
