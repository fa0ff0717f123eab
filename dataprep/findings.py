"""The one catalogue of finding codes, and the exit-code policy every command uses.

A *finding* is every problem the tool reports: ``{"code", "severity", "message", "hint", "rows"?}``.
Codes are stable identifiers: extend the catalogue, never rename or remove a released code.

A message or hint names an option as ``$[param]`` (its parameter name), never as a command-line flag: the library
does not know how it was called. ``finding`` writes each as the current namer says: the parameter name by default
(``seq_length``), the running command's flag inside the CLI (``options_named(flag_of)``: ``--seq-length``).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, overload

# Not ``${...}``: recipes and shells use that for their own variables, which a message may quote.
_OPTION = re.compile(r"\$\[([a-z_][a-z0-9_]*)\]")
_NAMER: ContextVar[Callable[[str], str]] = ContextVar("dataprep_option_namer", default=str)


@overload
def name_options(text: str) -> str: ...
@overload
def name_options(text: None) -> None: ...
def name_options(text: str | None) -> str | None:
    """``text`` with each ``$[param]`` written as the current namer writes it (the parameter name by default)."""
    if text is None or "$[" not in text:
        return text
    name = _NAMER.get()
    return _OPTION.sub(lambda m: name(m.group(1)), text)


@contextlib.contextmanager
def options_named(namer: Callable[[str], str]) -> Iterator[None]:
    """Within the block, findings and usage errors name options with ``namer`` (the CLI: the running command's
    flags)."""
    token = _NAMER.set(namer)
    try:
        yield
    finally:
        _NAMER.reset(token)


class Severity(str, Enum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


@dataclass(frozen=True)
class CodeSpec:
    """A catalogue entry: the default severity and the hint shown when a finding gives none."""

    code: str
    severity: Severity
    summary: str
    hint: str


def _spec(code: str, severity: str, summary: str, hint: str) -> CodeSpec:
    return CodeSpec(code, Severity(severity), summary, hint)


_PACKED_HINT = (
    "AutoModel reads chat JSONL: point it at the source JSONL, or train packed data with sft/megatron_bridge"
)

CATALOGUE: Mapping[str, CodeSpec] = {
    s.code: s
    for s in (
        # -- input -----------------------------------------------------------------------------------
        _spec(
            "packed_parquet_used_with_automodel",
            "error",
            "packed (pre-tokenized, concatenated) data",
            _PACKED_HINT,
        ),
        _spec(
            "pretokenized_input",
            "error",
            "token ids instead of text",
            "AutoModel's ChatDataset tokenizes chat JSONL itself: give it the text records the ids were made from",
        ),
        _spec(
            "unreadable_input",
            "error",
            "the input cannot be read",
            # not every command has --encoding: readers that do name it in their own hints
            "check the path and the file's format",
        ),
        _spec(
            "unknown_schema",
            "error",
            "no record shape matches the columns",
            "force a shape with $[fmt] NAME or map columns with $[mapping] target=source",
        ),
        _spec(
            "preference_data",
            "error",
            "preference pairs (chosen/rejected) are not SFT data",
            "train them with a preference recipe, or pass $[take] chosen to fine-tune on the chosen answers",
        ),
        _spec(
            "pretraining_text",
            "error",
            "a lone text column is pretraining data, not chat",
            "SFT needs prompts and answers: map the columns with $[mapping], or use a pretraining recipe",
        ),
        _spec(
            "output_would_overwrite_input",
            "error",
            "the output path is the input path",
            "write to a new path; the input is never overwritten",
        ),
        _spec(
            "output_exists",
            "error",
            "the output file already exists",
            "pass $[force] to replace it, or choose another path",
        ),
        _spec(
            "output_not_writable",
            "error",
            "an output cannot be written (full disk, read-only filesystem, no permission, a folder in the way)",
            "choose another output path",
        ),
        _spec(
            "internal_error",
            "error",
            "a bug in dataprep: an unexpected exception",
            "please report it with the command line and the traceback",
        ),
        _spec(
            "missing_dependency",
            "error",
            "an optional dependency is not installed",
            "install the extra named in the message",
        ),
        _spec(
            "model_not_found",
            "error",
            "the model is not a local folder and not in the local Hugging Face cache",
            "pass a local folder, download it first (huggingface-cli download), or add $[allow_download]",
        ),
        _spec(
            "unsupported_architecture",
            "error",
            "the model's architecture is not one the memory estimate knows",
            "use a supported architecture or pass the numbers the estimate needs",
        ),
        _spec(
            "usage_error",
            "error",
            "the command line is not valid",
            "the help of the command lists its options",
        ),
        # -- rows (each goes to the rejects file with its row number) -----------------------------------
        _spec("invalid_json", "error", "the line is not valid JSON", "fix or remove the line"),
        _spec(
            "missing_field",
            "error",
            "a required field is missing",
            "map the column with $[mapping] target=source",
        ),
        _spec("empty_content", "error", "a message has empty content", "drop the row or fill the message"),
        _spec(
            "unknown_role",
            "error",
            "a role ChatDataset does not accept",
            "roles are system, user, assistant and tool: map others with $[role_map] name=role",
        ),
        _spec(
            "no_assistant_turn",
            "error",
            "no assistant message with content: nothing to train on",
            "every row needs at least one assistant answer",
        ),
        _spec(
            "role_order",
            "error",
            "messages are in an order the chat template cannot render",
            "system only first; tool messages answer an earlier tool call",
        ),
        _spec(
            "invalid_tool_call",
            "error",
            "a tool call is malformed",
            'tool_calls are {"id", "type": "function", "function": {"name", "arguments"}} with JSON arguments',
        ),
        _spec(
            "non_text_content",
            "error",
            "images or audio in a text-only dataset",
            "pass $[text_only] to keep the text parts, or use a vision-language recipe",
        ),
        _spec(
            "duplicate_row",
            "warning",
            "an exact duplicate of an earlier row",
            "drop duplicates with $[dedup]",
        ),
        _spec(
            "near_duplicate",
            "warning",
            "a near duplicate of an earlier row (MinHash estimate of word 3-gram Jaccard >= 0.7)",
            "the first of each cluster is kept; the others are in the rejects file with the row they duplicate",
        ),
        _spec(
            "near_duplicate_leakage",
            "warning",
            "validation rows with a near duplicate in train: the validation loss measures memorisation",
            "drop them from validation, or split by near-duplicate cluster",
        ),
        _spec(
            "eval_contamination",
            "warning",
            "training rows share a 13-word sequence with an eval item (the GPT-3 contamination rule)",
            "drop the contaminated rows before training, or report the eval as contaminated",
        ),
        # -- chat template ---------------------------------------------------------------------------
        _spec(
            "chat_template_missing",
            "error",
            "the tokenizer has no chat template",
            "use a tokenizer with chat-template support or pass $[chat_template]",
        ),
        _spec(
            "template_render_error",
            "error",
            "the chat template fails to render",
            "fix the template or pass another with $[chat_template]",
        ),
        _spec(
            "system_role_unsupported",
            "warning",
            "the template raises on a system message",
            "fold the system prompt into the first user turn, or drop system messages",
        ),
        _spec(
            "system_message_dropped",
            "warning",
            "the system prompt is missing from the rendering or attached to only some turns",
            "check that the model was trained this way, or fix the template",
        ),
        _spec(
            "default_system_prompt_injected",
            "warning",
            "the template adds a system prompt no message contains",
            "add your own system message to every row, or pass a template without the default",
        ),
        _spec(
            "strict_alternation",
            "warning",
            "the template requires user/assistant alternation",
            "merge consecutive messages of one role before training",
        ),
        _spec(
            "generation_tags_missing",
            "info",
            "no {% generation %} tags: AutoModel falls back to prefix-based assistant masking",
            "add {% generation %}...{% endgeneration %} around assistant content for exact masks",
        ),
        _spec(
            "prefix_unstable",
            "warning",
            "rendering a conversation's start is not a prefix of rendering the whole",
            "prefix-based masking mislabels tokens: use a template with {% generation %} tags",
        ),
        _spec(
            "double_bos",
            "warning",
            "BOS appears twice at the start of the token ids",
            "tokenize with apply_chat_template(tokenize=True) or add_special_tokens=False after rendering",
        ),
        _spec(
            "eos_not_trained",
            "warning",
            "the tokens closing an assistant turn are not the model's stop token",
            "make the template end assistant turns with the EOS token, or the model will not learn to stop",
        ),
        _spec(
            "pad_equals_eos",
            "warning",
            "the pad token is the stop token, so a collator masking pads masks the stop token too",
            "set a distinct pad token",
        ),
        _spec(
            "marker_not_special_token",
            "warning",
            "a role marker the template writes is split into several tokens",
            "add the marker to the tokenizer's special tokens",
        ),
        _spec(
            "date_injected",
            "info",
            "the template writes today's date into the prompt",
            "renderings change by day: pin the date variable for reproducible data",
        ),
        _spec(
            "tools_required",
            "warning",
            "the template fails or changes without a tools argument",
            "pass tools with every row, or use a template that works without",
        ),
        _spec(
            "reasoning_dropped",
            "warning",
            "assistant reasoning_content does not reach the rendering",
            "the model will not be trained on reasoning: put it in content or use a template that renders it",
        ),
        _spec(
            "mask_unbuildable",
            "error",
            "AutoModel cannot build the loss mask of these rows: the template rewrites earlier turns",
            "give the recipe a chat template with {% generation %}...{% endgeneration %} around what the "
            "assistant generates (dataset.chat_template); see README, 'Templates AutoModel cannot mask'",
        ),
        _spec(
            "tool_arguments_double_encoded",
            "warning",
            "the template applies tojson to tool-call arguments, which ChatDataset always passes as a JSON string",
            "the arguments render as an escaped JSON string inside the call: use a template that "
            "writes string arguments as they are",
        ),
        _spec(
            "trainer_model_mismatch",
            "warning",
            "the installed AutoModel reads some rows differently from dataprep's model of it",
            "dataprep models nemo-automodel 0.7.0: trust the installed trainer's numbers for these rows, and "
            "report the rows so the model can follow",
        ),
        _spec(
            "chat_dataset_cannot_read",
            "warning",
            "a file name or compression AutoModel's ChatDataset does not read",
            "ChatDataset reads .jsonl/.ndjson line by line, parses any other name as one JSON document and "
            "never decompresses: write uncompressed messages JSONL named .jsonl (dataprep normalize IN OUT.jsonl)",
        ),
        # -- length and budget -----------------------------------------------------------------------
        _spec(
            "no_supervised_tokens",
            "error",
            "rows with no supervised (assistant) tokens",
            "every row needs an assistant answer the template marks as trained",
        ),
        _spec(
            "truncation_drops_answers",
            "warning",
            "at this sequence length some rows lose every supervised token",
            "raise seq_length or drop the long rows",
        ),
        _spec(
            "exceeds_model_max_length",
            "warning",
            "rows longer than the tokenizer's model_max_length",
            "drop or split them; the model was not trained on such lengths",
        ),
        _spec(
            "seq_length_exceeds_max_position_embeddings",
            "warning",
            "seq_length is longer than the model's max_position_embeddings",
            "lower seq_length to the model's context, or use a model (or RoPE scaling) made for longer contexts",
        ),
        _spec(
            "oom",
            "error",
            "the plan does not fit in GPU memory",
            "reduce sequence length or batch size, switch to LoRA, or choose a smaller model",
        ),
        _spec(
            "global_batch_not_divisible",
            "error",
            "global_batch_size is not a multiple of local_batch_size x dp_size",
            "choose one of the nearest valid global batch sizes",
        ),
        # -- real-world inputs and data quality (issue 13) ----------------------------------------------
        _spec(
            "python_literal_cells",
            "info",
            "a column holds Python literals (pandas to_csv of lists/dicts), read with ast.literal_eval",
            "nothing to do: dataprep reads them safely; write JSON (df.to_json, json.dumps) to avoid the ambiguity",
        ),
        _spec(
            "loss_weight_ignored",
            "warning",
            "an assistant turn has loss_weight 0, but AutoModel trains every assistant turn",
            "drop the turn or the row if it must not be trained; AutoModel has no per-turn weight",
        ),
        _spec(
            "too_long",
            "warning",
            "the row is longer than the length kept (seq_length or max_tokens)",
            "kept in rejects with its row number: raise $[max_tokens] / $[seq_length] to keep it",
        ),
        _spec(
            "unfilled_placeholder",
            "warning",
            "assistant text holds an unfilled template placeholder ({{name}}, {author}, <PLACEHOLDER>)",
            "fill the placeholders before training, or the model learns to say them",
        ),
        _spec(
            "near_empty_answer",
            "warning",
            "an assistant answer is whitespace or a few characters",
            "check the source: an empty answer trains the model to stop at once",
        ),
        _spec(
            "repeated_answer",
            "warning",
            "the same assistant answer follows many different prompts",
            "a canned answer repeated this often is learned verbatim: deduplicate or vary it",
        ),
        _spec(
            "mojibake",
            "warning",
            "text with replacement characters or double-decoded UTF-8 (\ufffd, 'Ã©')",
            "re-read the source with the right $[encoding]",
        ),
        _spec(
            "ends_with_user_turn",
            "info",
            "a conversation ends with a user turn: its last message is never answered or trained",
            "drop the trailing user turn, or add the answer",
        ),
        # -- the AutoModel recipe (preflight --recipe) ---------------------------------------------------
        _spec(
            "recipe_invalid",
            "error",
            "the recipe YAML or an override cannot be read",
            "fix the YAML (it must be a mapping of sections) or the `--a.b value` override",
        ),
        _spec(
            "recipe_dataset_not_chat",
            "info",
            "the recipe's dataset section is not ChatDataset (recipe.yaml replaces it)",
            "recipe.yaml replaces the section with ChatDataset reading the files preflight wrote",
        ),
        _spec(
            "recipe_dataset_unknown_keys",
            "warning",
            "the recipe's dataset section has keys ChatDataset does not take (AutoModel raises TypeError)",
            "recipe.yaml replaces the section whole; dotted overrides cannot delete a key",
        ),
        _spec(
            "seq_length_without_truncation",
            "warning",
            "seq_length is set but neither truncation nor padding: max_length is, so it caps nothing",
            "recipe.yaml sets truncation: true so seq_length takes effect",
        ),
        _spec(
            "recipe_batch_not_divisible",
            "warning",
            "the recipe's global_batch_size is not a multiple of local_batch_size x dp_size (AutoModel raises)",
            "recipe.yaml sets the plan's local_batch_size, which divides it",
        ),
        _spec(
            "peft_target_conflict",
            "warning",
            "peft sets match_all_linear with target_modules/exclude_modules, or both lists (AutoModel raises)",
            "keep one: recipe.yaml keeps target_modules",
        ),
        _spec(
            "packing_padding_conflict",
            "warning",
            "packed_sequence_size conflicts with the dataset's padding or seq_length",
            "with packing: padding do_not_pad and seq_length no longer than packed_sequence_size",
        ),
        _spec(
            "precision_not_explicit",
            "warning",
            "the recipe leaves the dtype or a batch size the memory plan depends on implicit",
            "recipe.yaml writes it explicitly",
        ),
        _spec(
            "recipe_parallel_mismatch",
            "error",
            "the recipe's parallel sizes do not multiply to the number of GPUs",
            "set distributed.dp_size to none (AutoModel infers it) or pass the $[gpus] the job really has",
        ),
        _spec(
            "recipe_setting_not_modeled",
            "warning",
            "a recipe setting the memory estimate or the token counts do not model",
            "treat the memory plan as approximate for this setting",
        ),
        _spec(
            "manifest_mismatch",
            "error",
            "the base model or tokenizer differs from the manifest",
            "merge_lora needs the same base checkpoint and tokenizer the adapter was trained with",
        ),
    )
}


@dataclass(frozen=True)
class Finding:
    """One reported problem. ``rows`` are 1-based input row (or line) numbers when the problem is per row."""

    code: str
    severity: Severity
    message: str
    hint: str = ""
    rows: tuple[int, ...] | None = None
    data: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "code": self.code,
            "severity": self.severity.value,
            "message": self.message,
            "hint": self.hint,
        }
        if self.rows is not None:
            d["rows"] = list(self.rows)
        if self.data:
            d.update({k: v for k, v in self.data.items() if k not in d})
        return d

    def promoted(self) -> Finding:
        """The same finding as an error (``--strict``)."""
        if self.severity is Severity.WARNING:
            return Finding(self.code, Severity.ERROR, self.message, self.hint, self.rows, self.data)
        return self


def finding(
    code: str,
    message: str,
    *,
    hint: str | None = None,
    severity: Severity | str | None = None,
    rows: Iterable[int] | None = None,
    **data: Any,
) -> Finding:
    """Build a finding for a catalogued code; an unknown code is a programming error (KeyError)."""
    spec = CATALOGUE[code]
    sev = spec.severity if severity is None else Severity(severity)
    return Finding(
        code=code,
        severity=sev,
        message=name_options(message),
        hint=name_options(spec.hint if hint is None else hint),
        rows=None if rows is None else tuple(int(r) for r in rows),
        data=data,
    )


EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_USAGE = 2


def apply_strict(findings: Iterable[Finding], strict: bool) -> list[Finding]:
    return [f.promoted() for f in findings] if strict else list(findings)


def exit_code(findings: Iterable[Finding], strict: bool = False) -> int:
    """0 = no error-level finding; 1 = at least one (``strict`` counts warnings as errors)."""
    for f in findings:
        if f.severity is Severity.ERROR or (strict and f.severity is Severity.WARNING):
            return EXIT_FINDINGS
    return EXIT_OK
