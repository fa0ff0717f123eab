"""``preflight``: every check as one pipeline pre-step, with a report, AutoModel overrides and a manifest.

    inspect -> normalize (unless already messages JSONL) -> validate -> check-template -> stats -> plan

Each step's findings go into one report; the run stops at the first step with an error-level finding
(``--strict``: a warning) and the report names it (``stopped_at``). Rows that cannot be converted or do not
validate go to rejects.jsonl with their reason and count as warnings (all rows rejected: an error), so one
bad row does not block a run but nothing is dropped silently.

Outputs in the output folder, each written atomically: train.jsonl, validation.jsonl, rejects.jsonl,
report.json, report.html, and, only when no step stopped the run, overrides.yaml and manifest.json (stale
ones from an earlier run are removed, so a pipeline never trains on a config this run did not approve).

The steps' modules load lazily, inside the step that needs them.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from .atomic import atomic_write
from .defaults import DEFAULT_BATCH_SIZES, DEFAULT_SEQ_LENGTHS
from .errors import (
    DataprepError,
    MissingDependency,
    ModelNotFound,
    OutputNotWritable,
    UnreadableInput,
    UsageError,
)
from .findings import EXIT_FINDINGS, EXIT_OK, EXIT_USAGE, Finding, Severity, apply_strict, finding
from .pipeline import ConvertSpec
from .safejson import loads as safe_loads

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

# ---------------------------------------------------------------------------------------------------
# Options, steps, result
# ---------------------------------------------------------------------------------------------------


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
        from .split import check_fraction

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
            "chat_template": self.chat_template,
            "seq_length": self.seq_length,
            "strict": self.strict,
            **{k: v for k, v in self.plan_options.items() if v is not None},
        }


@dataclass
class StepRecord:
    """One step's outcome: its findings (tagged with the step) and its figures."""

    name: str
    status: StepStatus = "not_run"
    findings: list[Finding] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name,
            "status": self.status,
            "findings": [f.to_dict() for f in self.findings],
            "figures": self.figures,
        }
        if self.note:
            d["note"] = self.note
        return d


@dataclass(frozen=True)
class PreflightResult:
    """The report document, every finding, the step that stopped the run (or None) and the exit code."""

    report: dict[str, Any]
    findings: list[Finding]
    stopped_at: str | None
    exit_code: int
    out_dir: Path

    @property
    def verdict(self) -> str:
        return self.report["verdict"]

    def to_dict(self) -> dict[str, Any]:
        return self.report

    def verdict_line(self) -> str:
        """One line for stderr: the verdict, why, and where the report is."""
        counts = Counter(f.severity.value for f in self.findings)
        tally = ", ".join(
            f"{counts[s]} {s}{'s' if counts[s] != 1 and s != 'info' else ''}"
            for s in ("error", "warning")
            if counts[s]
        )
        html = self.out_dir / OUTPUT_NAMES["report_html"]
        if self.stopped_at:
            first = next((f for f in self.findings if f.severity is Severity.ERROR), None)
            why = f" [{first.code}]" if first else ""
            return f"preflight: FAIL at {self.stopped_at}{why} ({tally}); report: {html}"
        label = "PASS" if not counts["warning"] else "PASS with warnings"
        if self.report.get("recipe"):
            out = f"recipe: {self.out_dir / OUTPUT_NAMES['recipe']}"
        else:
            out = f"overrides: {self.out_dir / OUTPUT_NAMES['overrides']}"
        return f"preflight: {label}{f' ({tally})' if tally else ''}; {out}; report: {html}"


class _Stop(Exception):  # noqa: N818 - control flow: a step ended the run
    def __init__(self, exit_code: int = EXIT_FINDINGS):
        super().__init__()
        self.exit_code = exit_code


_EXIT2 = (UsageError, UnreadableInput, ModelNotFound, MissingDependency, OutputNotWritable)


def _tag(f: Finding, step: str) -> Finding:
    return Finding(f.code, f.severity, f.message, f.hint, f.rows, {**dict(f.data), "step": step})


def _as_finding(obj: Any) -> Finding:
    """A Finding, or a finding-like object/dict (code, message, severity?, hint?, rows?) as one."""
    if isinstance(obj, Finding):
        return obj
    if isinstance(obj, Mapping):
        code, message = obj.get("code"), obj.get("message", "")
        extra = {k: v for k, v in obj.items() if k not in ("code", "message", "hint", "severity", "rows")}
        return finding(
            code, message, hint=obj.get("hint"), severity=obj.get("severity"), rows=obj.get("rows"), **extra
        )
    code = obj.code
    return finding(
        code,
        getattr(obj, "message", str(obj)),
        hint=getattr(obj, "hint", None),
        severity=getattr(obj, "severity", None),
        rows=getattr(obj, "rows", None),
    )


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


# ---------------------------------------------------------------------------------------------------
# Rejects
# ---------------------------------------------------------------------------------------------------


class _Rejects:
    """Rejected rows, streamed to rejects.jsonl as they come, counted by (step, code)."""

    def __init__(self, fh):
        self.fh = fh
        self.by_step: dict[str, Counter] = {}
        self.rows: dict[tuple[str, str], list[int]] = {}
        self.examples: dict[tuple[str, str], str] = {}

    def add(self, step: str, row: int | None, code: str, message: str, record: Any = None) -> None:
        line = {"row": row, "code": code, "message": message, "step": step}
        if record is not None:
            line["record"] = record
        self.fh.write(json.dumps(line, ensure_ascii=False, default=str) + "\n")
        self.by_step.setdefault(step, Counter())[code] += 1
        rows = self.rows.setdefault((step, code), [])
        if row is not None and len(rows) < MAX_ROWS_LISTED:
            rows.append(int(row))
        self.examples.setdefault((step, code), message)

    def count(self, step: str | None = None) -> int:
        if step is None:
            return sum(sum(c.values()) for c in self.by_step.values())
        return sum(self.by_step.get(step, Counter()).values())

    def findings(self, step: str, rejects_path: Path) -> list[Finding]:
        """One warning per code: how many rows, the first row numbers, an example message."""
        out = []
        for code, n in sorted(self.by_step.get(step, Counter()).items(), key=lambda kv: -kv[1]):
            example = self.examples[(step, code)]
            out.append(
                finding(
                    code,
                    f"{n} row{'s' if n != 1 else ''} rejected ({example}); kept in {rejects_path.name}",
                    severity="warning",
                    rows=self.rows[(step, code)],
                    count=n,
                )
            )
        return out


# ---------------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------------


class _Run:
    def __init__(
        self,
        opts: PreflightOptions,
        progress: Callable[[str], None] | None = None,
        recipe: Any = None,
        taken: Mapping[str, Any] | None = None,
        flag_changes: Iterable[Any] = (),
    ):
        self.o = opts
        self.recipe = recipe  # dataprep.recipe.Recipe, or None (flags only)
        self.taken = dict(taken or {})  # option -> recipe Setting it came from
        self.flag_changes = list(flag_changes)  # recipe values the dataprep command line overrode
        self.recipe_out: dict[str, Any] | None = None
        from .template_lint import DataTraits

        # what the kept rows carry (reasoning, tools, system), counted as they pass
        self.traits = DataTraits()
        self.notes: Any = None  # the converter's notes (converters.Notes), once normalize ran
        self.checks: Any = None  # dataprep.dedup.RowChecks: duplicates, near duplicates, contamination
        self.out = Path(opts.out_dir)
        self.paths = {k: self.out / v for k, v in OUTPUT_NAMES.items()}
        self.steps = {name: StepRecord(name) for name in STEPS}
        self.progress = progress or (lambda _msg: None)
        self.source = None
        self.read_path = opts.dataset
        self.dataset_name = STDIN_NAME if opts.dataset == "-" else opts.dataset
        self.spool: str | None = None  # stdin's temporary copy, which later steps read
        self.messages_jsonl = False
        self.split = None
        self.row_index: dict[str, Any] = {}
        self.detection: dict[str, Any] | None = None
        self.loaded = None
        self._tokenizer_error: DataprepError | None = None
        # measured as the split streams (``_measured``): the counts, the quality lint and check-template's rows
        self.measuring: Any = None
        self.lint: Any = None
        self.counts_pass: Any = None
        self.first_rows: list[tuple[int, dict]] = []
        self.stats_dict: dict[str, Any] | None = None
        self.plan = None
        self.plan_dict: dict[str, Any] | None = None
        self.seq_length: int | None = None
        self.overrides: dict[str, Any] | None = None
        self.command_line: str | None = None
        self.manifest: dict[str, Any] | None = None

    # -- helpers ---------------------------------------------------------------------------------
    def _finish_step(
        self, name: str, findings: Iterable[Any] = (), figures: Mapping[str, Any] | None = None
    ) -> None:
        rec = self.steps[name]
        fs = apply_strict([self._named(_tag(_as_finding(f), name)) for f in findings], self.o.strict)
        rec.findings.extend(fs)
        if figures:
            rec.figures.update(_renamed(figures, self.spool, STDIN_NAME) if self.spool else figures)
        sev = {f.severity for f in rec.findings}
        rec.status = "error" if Severity.ERROR in sev else "warning" if Severity.WARNING in sev else "ok"
        if rec.status == "error":
            raise _Stop(EXIT_FINDINGS)

    def _fail(self, name: str, err: DataprepError) -> None:
        """A DataprepError inside a step: its finding stops the run (exit 2 for unreadable/usage/model)."""
        rec = self.steps[name]
        rec.findings.append(self._named(_tag(err.finding, name)))
        rec.status = "error"
        raise _Stop(EXIT_USAGE if isinstance(err, _EXIT2) else EXIT_FINDINGS)

    def _named(self, f: Finding) -> Finding:
        """For stdin, the finding with ``<stdin>`` where it names the spool file (or ``-``); rows unchanged."""
        if self.o.dataset != "-":
            return f
        message, hint, data = f.message, f.hint, f.data
        if message.startswith("-:"):  # the reader names stdin "-"
            message = STDIN_NAME + message[1:]
        if self.spool:
            message = _renamed(message, self.spool, STDIN_NAME)
            hint = _renamed(hint, self.spool, STDIN_NAME)
            data = _renamed(data, self.spool, STDIN_NAME)
        return Finding(f.code, f.severity, message, hint, f.rows, data)

    def _step(self, name: str, fn: Callable[[], None]) -> None:
        self.progress(name)
        try:
            fn()
        except DataprepError as err:
            self._fail(name, err)
        except ModuleNotFoundError as err:
            # A step whose library is not in this build: say so, never skip a check silently.
            if not (err.name or "").startswith("dataprep."):
                raise
            self._fail(name, MissingDependency(f"the {name} step needs {err.name}, which this build lacks"))

    # -- steps -------------------------------------------------------------------------------------
    def recipe_step(self) -> None:
        """The recipe's own problems, before any data is read; what preflight took from it as figures."""
        rec = self.steps["recipe"]
        if self.recipe is None:
            rec.status, rec.note = "skipped", "no --recipe: the flags alone describe the run"
            return
        from .recipe import check_recipe

        r = self.recipe
        findings = check_recipe(r, gpus=self.o.gpus)
        findings += self._recipe_data_findings()
        figures = {
            "path": str(r.path.resolve()),
            "overrides": [{"key": k, "value": v} for k, v in r.overrides],
            "taken": {name: {"key": st.key, "value": st.value} for name, st in self.taken.items()},
            "flag_changes": [c.to_dict() for c in self.flag_changes],
        }
        self._finish_step("recipe", findings, figures)

    def _recipe_data_findings(self) -> list[Finding]:
        """Packed Parquet (or other packed data) behind a recipe dataset path, named by its recipe key."""
        from .sources import detect_packed, open_source

        out: list[Finding] = []
        for sec in ("dataset", "validation_dataset"):
            found = self.recipe.dataset_path(sec)
            if not found or not Path(found[1]).expanduser().exists():
                continue
            key, path = found
            is_input = (
                self.o.dataset is not None
                and Path(self.o.dataset).expanduser().resolve() == Path(path).expanduser().resolve()
            )
            try:
                src = open_source(path)
                packed = list(detect_packed(src))
            except DataprepError:
                continue  # what cannot be read here is the inspect step's (for the input) or replaced anyway
            for f in packed:
                out.append(
                    Finding(
                        f.code,
                        f.severity if is_input else Severity.WARNING,
                        f"{self.recipe.path.name}: {key}: {f.message}"
                        + (
                            ""
                            if is_input
                            else "; recipe.yaml points ChatDataset at the files preflight wrote"
                        ),
                        f.hint,
                        f.rows,
                        {**dict(f.data), "key": key},
                    )
                )
        return out

    def inspect(self) -> None:
        from .sources import detect_packed, open_source

        src = open_source(self.o.dataset, encoding=self.o.convert.encoding)
        self.source = src
        # stdin is spooled to a file by the reader: later steps read that file, not stdin again.
        files = getattr(src, "files", None) or []
        if self.o.dataset == "-" and files:
            self.spool = str(files[0])
            self.read_path = self.spool
        self.messages_jsonl = (
            src.format == "jsonl" and "messages" in (src.columns or []) and not self.o.convert.changes_rows
        )
        figures = {
            "path": self.dataset_name if self.o.dataset == "-" else str(src.path),
            "format": src.format,
            "compression": src.compression,
            "columns": list(src.columns or []),
            "num_rows": src.num_rows,
            "num_rows_exact": src.num_rows_exact,
            "messages_jsonl": self.messages_jsonl,
        }
        self._finish_step("inspect", detect_packed(src), figures)

    def convert_and_split(self) -> None:
        """normalize -> validate -> split in one streaming pass; rejects written as they come."""
        from .split import split_conversations

        rej_path = self.paths["rejects"]
        counters: Counter = Counter()
        if self.o.dedup or self.o.near_dup or self.o.eval_paths or self.o.validation:
            from .dedup import RowChecks

            self.checks = RowChecks(
                dedup=self.o.dedup,
                near=self.o.near_dup,
                eval_paths=self.o.eval_paths,
                drop_contaminated=self.o.drop_contaminated,
                own_validation=bool(self.o.validation),
            )
        error: DataprepError | None = None
        self._start_measuring()
        with atomic_write(rej_path) as rfh:
            rejects = _Rejects(rfh)
            try:
                convs = self._conversations(rejects, counters)
                valid = self._measured(self._checked(convs, rejects), keep_first=True)
                self.split = split_conversations(
                    valid,
                    self.paths["train"],
                    self.paths["validation"],
                    val_fraction=0.0 if self.o.validation else self.o.val_fraction,
                    ensure_validation=not self.o.validation,
                    row_index=self.row_index,
                    side_digest=self.checks.side_digest if self.checks is not None else None,
                    digest_of=self.checks.digest if self.checks is not None else None,
                )
                if self.o.validation:
                    self._own_validation(rejects)
                if self.measuring is not None:
                    self.counts_pass = self.measuring.result()
            except OutputNotWritable:
                raise  # inside the rejects file's block, so that it goes too: no partial outputs
            except DataprepError as err:  # a whole-input problem: unknown schema, preference data...
                error = err
            finally:
                if self.measuring is not None:
                    self.measuring.close()
        if error is not None:
            self._fail("normalize", error)
        n_in = counters["rows_in"]
        norm = self.steps["normalize"]
        if self.messages_jsonl:
            norm.status = "skipped"
            norm.note = "the input is messages JSONL already: validated as is"
        else:
            from .pipeline import note_findings

            n_ok = counters["converted"]
            norm_findings = rejects.findings("normalize", rej_path)
            if self.notes is not None:  # what the converter noticed on rows it kept (pandas literals, ...)
                norm_findings += note_findings(self.notes)
            if n_in and not n_ok:
                norm_findings = [_promote(f) for f in norm_findings]
            self._finish_step(
                "normalize",
                norm_findings,
                {
                    "rows_in": n_in,
                    "converted": n_ok,
                    "rejected": rejects.count("normalize"),
                    "detection": self.detection,
                },
            )
        kept = self.split.rows
        v_findings = rejects.findings("validate", rej_path)
        if kept == 0:
            v_findings = [_promote(f) for f in v_findings]
            if not v_findings:
                v_findings.append(
                    finding("unreadable_input", f"{self.dataset_name}: the dataset has no rows")
                )
        if self.checks is not None:
            v_findings += self.checks.findings()
        if self.split.duplicates:
            # Kept (nothing is dropped unasked), but they weight those examples up: say how many.
            v_findings.append(
                finding(
                    "duplicate_row",
                    f"{self.split.duplicates} of {kept} conversations are exact duplicates of an earlier one; "
                    "kept, each on the same side of the split as its first copy",
                    severity="info",
                    hint="drop them first with `dataprep normalize --dedup` unless the repetition is intended",
                    count=self.split.duplicates,
                )
            )
        self._finish_step(
            "validate",
            v_findings,
            {
                "rows_in": n_in,
                "valid": kept,
                "rejected": rejects.count(),
                "split": self.split.to_dict(),
                **(self.checks.figures() if self.checks is not None else {}),
            },
        )

    def _own_validation(self, rejects: _Rejects) -> None:
        """``--validation PATH``: the user's validation set, converted and validated like the input (its rejects
        tagged with the file), written as validation.jsonl, and checked for copies of train rows (leakage)."""
        import dataclasses
        from array import array

        from .pipeline import conversations
        from .split import _HashingWriter

        path = self.o.validation
        index = array("q")
        with atomic_write(self.paths["validation"]) as fh:
            w = _HashingWriter(fh, self.paths["validation"])

            def reject(r: Any) -> None:
                rejects.add("validate", r.row, r.code, f"{path} row {r.row}: {r.message}", r.record)

            for row, conv in self._measured(conversations(path, on_reject=reject)):
                self.checks.leakage(row, conv)
                w.write_line(json.dumps(conv, ensure_ascii=False))
                index.append(row)
        self.row_index["validation"] = index
        self.split = dataclasses.replace(
            self.split, validation_rows=w.rows, validation_sha256=w.sha.hexdigest(), val_fraction=0.0
        )

    def _conversations(self, rejects: _Rejects, counters: Counter) -> Iterator[tuple[int, dict]]:
        """The row pipeline's valid conversations, every reject recorded: messages JSONL as written (its
        rejects are the validate step's), anything else through the converters (the normalize step's).
        Detection errors (unknown schema, preference data) raise here, before the first row."""
        from .pipeline import as_written, open_input

        if self.messages_jsonl:
            step, items = "validate", as_written(self.source, self.o.convert.encoding)
            read = None
        else:
            opened = open_input(self.read_path, self.o.convert)
            self.detection = opened.detection.to_dict()
            self.notes = opened.pipeline.notes
            read = [0]
            step, items = "normalize", opened.pipeline.items(opened.batches, read)

        def gen() -> Iterator[tuple[int, dict]]:
            for item in items:
                counters["rows_in"] += 1
                if isinstance(item, tuple):
                    counters["converted"] += 1
                    yield item
                else:
                    rejects.add(step, item.row, item.code, item.message, item.record)
            if read is not None:
                counters["records_read"] = read[0]

        return gen()

    def _checked(self, convs: Iterable[tuple[int, dict]], rejects: _Rejects) -> Iterator[tuple[int, dict]]:
        """Valid conversations through the duplicate and contamination checks, counting what they carry."""
        for row, conv in convs:
            if self.checks is not None:
                verdict = self.checks.see(row, conv)
                if verdict is not None:
                    rejects.add("validate", row, verdict[0], verdict[1], conv)
                    continue
            self.traits.add(conv)
            yield row, conv

    def _load_tokenizer(self) -> None:
        from .tokenizer import load_tokenizer

        if self.loaded is None:
            source = self.o.tokenizer or self.o.model
            self.loaded = load_tokenizer(
                source, chat_template=self.o.chat_template, allow_download=self.o.allow_download
            )

    def _start_measuring(self) -> None:
        """Load the tokenizer before the pass, so the rows are measured as they stream into the split (one read
        of the input; the written files are not read back). A tokenizer that does not load is check-template's
        finding, reported in its step; then nothing is measured here."""
        try:
            self._load_tokenizer()
        except DataprepError as err:
            self._tokenizer_error = err
            return
        if self.loaded.template is None or self.o.sample is not None:
            return  # no template: check-template stops the run; --sample: stats draws its sample afterwards
        from .measure import Measuring
        from .quality import QualityLint

        try:
            self.measuring = Measuring(
                self.loaded, mask_generation_prompt=self.mask_generation_prompt, workers=self.o.workers
            )
        except Exception:  # noqa: BLE001 - a template that does not compile: check-template reports it, stops
            return
        self.lint = QualityLint()

    def _measured(
        self, items: Iterable[tuple[int, dict]], keep_first: bool = False
    ) -> Iterator[tuple[int, dict]]:
        """The rows, measured (and linted) on their way to the split; the first ones kept for check-template."""
        m, lint, first = self.measuring, self.lint, self.first_rows
        for row, conv in items:
            if keep_first and len(first) < TEMPLATE_SAMPLE:
                first.append((row, conv))
            if m is not None:
                lint.add(row, conv)
                m.add(row, conv)
            yield row, conv

    def check_template(self) -> None:
        if self._tokenizer_error is not None:
            raise self._tokenizer_error
        self._load_tokenizer()
        source = self.o.tokenizer or self.o.model
        if self.loaded.template is None:
            # No template: nothing to lint; ChatDataset would raise at start-up.
            given = "dataset.chat_template in the recipe" if self.recipe is not None else "--chat-template"
            missing = finding(
                "chat_template_missing",
                f"{source}: the tokenizer has no chat template and no {given} was given"
                " (AutoModel: 'ChatDataset requires a tokenizer with chat template support.')",
                hint="set dataset.chat_template in the recipe (a Jinja string or a .jinja file) or pass --chat-template"
                if self.recipe is not None
                else None,
            )
            self._finish_step("check-template", [missing], {"tokenizer": _safe_to_dict(self.loaded)})
        # the first rows of the pass, else of train.jsonl; with their input row numbers either way
        rows = self.first_rows if self.counts_pass is not None else self._split_conversations(("train",))
        findings, figures = lint_template(
            self.loaded, rows, self.paths["train"], TEMPLATE_SAMPLE, self.traits
        )
        self._finish_step("check-template", findings, figures)

    def _split_conversations(
        self, keys: tuple[str, ...] = ("train", "validation")
    ) -> Iterator[tuple[int, dict]]:
        """train then validation (or ``keys``), each conversation with its input row number."""
        for key in keys:
            rows = self.row_index.get(key)
            with open(self.paths[key], encoding="utf-8") as fh:
                for i, line in enumerate(fh):
                    yield (int(rows[i]) if rows is not None and i < len(rows) else i + 1), safe_loads(line)

    @property
    def mask_generation_prompt(self) -> bool:
        """Recommended for templates without generation tags: AutoModel's prefix masking otherwise trains
        every assistant header, which the model never generates (the template writes it)."""
        loaded = getattr(self, "loaded", None)
        return loaded is not None and loaded.template is not None and not loaded.has_generation_tags

    def stats(self) -> None:
        """Measure every row once; the rows the chosen length would train on nothing (or longer than
        --max-tokens) leave train/validation for rejects.jsonl as ``too_long``, and the figures are the kept
        rows' (recomputed from the counts, no second measurement)."""
        from .stats import compute_stats

        seq_lengths = tuple(
            sorted({*self.o.seq_lengths, *([self.o.seq_length] if self.o.seq_length else [])})
        )
        kwargs = {
            "seq_lengths": seq_lengths,
            "batch_sizes": self.o.batch_sizes,
            "sample": self.o.sample,
            # what the overrides will set: measure the masking the trainer will then do
            "mask_generation_prompt": self.mask_generation_prompt,
        }
        if self.counts_pass is not None:  # measured as the split streamed: no second read
            from .stats import stats_of_measured

            kwargs.pop("sample")  # None here: a sample is drawn from the written files (below)
            result = stats_of_measured(self.counts_pass, self.loaded, lint=self.lint, **kwargs)
        else:
            kwargs = _accepted(compute_stats, {**kwargs, "workers": self.o.workers})
            result = compute_stats(self._split_conversations(), self.loaded, **kwargs)
        self.counts_all = result.counts
        extra: list[Finding] = []
        if not result.counts.rejected:  # rows ChatDataset raises on stop the run anyway
            result, extra = self._set_aside_too_long(result, seq_lengths)
        self.stats_dict = result.to_dict()
        self._finish_step("stats", [*getattr(result, "findings", []), *extra], self.stats_dict)

    def _set_aside_too_long(self, result: Any, seq_lengths: tuple[int, ...]) -> tuple[Any, list[Finding]]:
        import dataclasses

        import numpy as np

        from .split import drop_rows
        from .stats import stats_from_counts, too_long

        counts = result.counts
        seq = self.o.seq_length or result.recommended_seq_length
        pos = too_long(counts, seq, self.o.max_tokens)
        if not pos.size:
            return result, []
        rows = counts.rows[pos]
        longest = int(counts.total[pos].max())
        why = []
        if seq is not None and ((counts.supervised > 0) & (counts.supervised_kept(int(seq)) == 0))[pos].any():
            why.append(f"at seq_length {seq} they keep no supervised token")
        if self.o.max_tokens is not None and (counts.total[pos] > self.o.max_tokens).any():
            why.append(f"longer than --max-tokens {self.o.max_tokens}")
        if self.o.sample is not None:  # only a sample was measured: name them, drop nothing
            return result, [
                finding(
                    "too_long",
                    f"{rows.size} sampled row(s) too long ({'; '.join(why)}; longest {longest} tokens): "
                    "kept, since --sample measured only a sample",
                    rows=rows[:MAX_ROWS_LISTED].tolist(),
                    count=int(rows.size),
                )
            ]
        message = f"{'; '.join(why)} (longest {longest} tokens)"
        import shutil

        old = self.paths["rejects"]
        with open(old, encoding="utf-8") as before, atomic_write(old) as rfh:
            shutil.copyfileobj(before, rfh)  # rewritten whole, atomically, with the new rows at the end
            rejects = _Rejects(rfh)
            self.split = drop_rows(
                self.split,
                rows.tolist(),
                self.row_index,
                lambda row, conv: rejects.add("stats", row, "too_long", message, conv),
            )
        keep = ~np.isin(counts.rows, rows)
        kept = stats_from_counts(
            counts.subset(keep),
            seq_lengths=seq_lengths,
            batch_sizes=self.o.batch_sizes,
            model_max_length=result.model_max_length,
            mask_generation_prompt=result.mask_generation_prompt,
        )
        from .quality import QUALITY_CODES

        kept = dataclasses.replace(
            kept,
            # the quality lint saw every row as it streamed: its findings stand (the rows set aside included)
            findings=(*kept.findings, *(f for f in result.findings if f.code in QUALITY_CODES)),
            quality=result.quality,
            recommended_seq_length=result.recommended_seq_length,
            rows_read=result.rows_read,
            rows_skipped={**result.rows_skipped, "too_long": int(rows.size)},
        )
        severity = "error" if not kept.rows else None
        return kept, [
            finding(
                "too_long",
                f"{rows.size} row(s) moved to {self.paths['rejects'].name} as too_long: {message}; "
                f"{kept.rows} rows remain",
                rows=rows[:MAX_ROWS_LISTED].tolist(),
                severity=severity,
                count=int(rows.size),
                seq_length=seq,
            )
        ]

    def plan_step(self) -> None:
        from .modelconfig import load_model_config
        from .plan import make_plan

        cfg = load_model_config(self.o.model, allow_download=self.o.allow_download)
        from .stats import StatsSummary

        kwargs = {
            "stats": StatsSummary.from_json(self.stats_dict) if self.stats_dict is not None else None,
            "seq_length": self.o.seq_length,
            "gpus": self.o.gpus,
            "gpu_memory_bytes": self.o.gpu_memory_bytes,
            "method": self.o.method,
            **{k: v for k, v in self.o.plan_options.items() if v is not None},
        }
        self.plan = make_plan(cfg, **_accepted(make_plan, kwargs))
        self.plan_dict = self.plan.to_dict()
        self.plan_dict["tradeoff"] = self._tradeoff(cfg, kwargs)
        rec = self.plan_dict.get("recommendation") or {}
        self.seq_length = (
            rec.get("seq_length")
            or self.o.seq_length
            or (self.stats_dict or {}).get("recommended_seq_length")
        )
        self._finish_step("plan", getattr(self.plan, "findings", None) or [], self.plan_dict)

    def _tradeoff(self, cfg: Any, kwargs: Mapping[str, Any]) -> list[dict[str, Any]]:
        """One row per candidate seq_length: rows kept and set aside (too_long), supervised tokens lost, and
        the plan at that length (local batch, memory per GPU, fits), over every row measured."""
        from .plan import make_plan
        from .stats import too_long

        counts = getattr(self, "counts_all", None)
        if counts is None or not len(counts):
            return []
        chosen = ((self.plan_dict or {}).get("recommendation") or {}).get("seq_length")
        lengths = sorted({*self.o.seq_lengths, *([chosen] if chosen else [])})
        sup_total = int(counts.supervised.sum()) or 1
        rows = []
        for L in lengths:
            dropped = too_long(counts, L, self.o.max_tokens)
            lost = sup_total - int(counts.supervised_kept(L).sum())
            epoch_s = None
            try:
                p = make_plan(cfg, **_accepted(make_plan, {**kwargs, "seq_length": L}))
                rec, fits, gib = p.recommendation, p.fits, round(p.estimate.total_gib, 2)
                local = rec.local_batch_size
                epoch = ((p.to_dict().get("time") or {}).get("epoch") or {}) if fits else {}
                epoch_s = epoch.get("seconds")
            except DataprepError:
                fits, gib, local = False, None, None
            rows.append(
                {
                    "seq_length": int(L),
                    "chosen": L == chosen,
                    "rows_kept": int(len(counts) - dropped.size),
                    "rows_set_aside": int(dropped.size),
                    "supervised_tokens_lost_pct": round(100 * lost / sup_total, 2),
                    "local_batch_size": local,
                    "per_gpu_gib": gib,
                    "fits": fits,
                    "epoch_seconds": epoch_s,
                }
            )
        return rows

    # -- outputs -----------------------------------------------------------------------------------
    def write_overrides(self) -> None:
        from .overrides import RECIPES, build_overrides, command_line, to_yaml

        plan_over = self.plan.overrides() if self.plan is not None and hasattr(self.plan, "overrides") else {}
        # The memory estimate assumed a loss: pin it even when it is the recipes' default.
        loss = ((self.plan_dict or {}).get("recommendation") or {}).get("loss")
        if "loss_fn" not in plan_over and loss:
            from .plan import LOSS_TARGETS

            if loss in LOSS_TARGETS:
                plan_over = {**plan_over, "loss_fn": {"_target_": LOSS_TARGETS[loss]}}
        self.overrides = build_overrides(
            model=self.o.model,
            train_path=self.paths["train"],
            validation_path=self.paths["validation"] if self.split and self.split.validation_rows else None,
            seq_length=self.seq_length,
            method=self.o.method,
            chat_template=self.o.chat_template,
            plan_overrides=plan_over,
            mask_generation_prompt=self.mask_generation_prompt,
        )
        self.command_line = command_line(self.overrides, config=self.o.recipe_config)
        header = (
            f"AutoModel overrides for {RECIPES[self.o.method]}, written by dataprep preflight {_now()}.\n"
            f"Merge into the recipe YAML, or pass on the command line:\n{self.command_line}"
        )
        with atomic_write(self.paths["overrides"]) as fh:
            fh.write(to_yaml(self.overrides, header=header))

    def write_recipe_outputs(self) -> None:
        """recipe.yaml (the user's recipe with what preflight decided), overrides.yaml and the command line
        that turn the original recipe into it, and the list of changes with why."""
        import shlex

        from .overrides import to_yaml
        from .recipe import Change, compose_overrides, nested, write_recipe
        from .recipe import command_line as recipe_command_line

        r = self.recipe
        final = self._final_recipe()
        sets, too_long = compose_overrides(r.file_config, final)
        passed = [Change(k, None, v, "the recipe override after --") for k, _v in r.overrides for v in [_v]]
        changes = _recipe_changes(r.file_config, final, [*passed, *self.flag_changes])
        recipe_path = self.paths["recipe"].resolve()
        run_line = f"automodel {shlex.quote(str(recipe_path))}"
        original = str(r.path)
        self.command_line = None if too_long else recipe_command_line(original, sets)
        header = (
            f"{r.path.name} completed by dataprep preflight {_now()}: {len(changes)} change(s), listed in\n"
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
                    header=f"Changes dataprep preflight {_now()} makes to {original}.\n{how}",
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

    def _final_recipe(self) -> dict[str, Any]:
        """The recipe as it will run: the user's (with their overrides) and the sections preflight decides."""
        import copy

        from .overrides import chat_dataset_section
        from .plan import LOSS_TARGETS
        from .recipe import TORCH_DTYPES, peft_section

        r = self.recipe
        final: dict[str, Any] = copy.deepcopy(r.config)
        rec = (self.plan_dict or {}).get("recommendation") or {}
        plan_over = self.plan.overrides() if self.plan is not None else {}
        if not isinstance(final.get("model"), dict):
            final["model"] = {}
        model = final["model"]
        if "model" not in self.taken and self.o.model:
            ref = self.o.model
            if Path(ref).expanduser().is_dir():
                ref = str(Path(ref).expanduser().resolve())
            model["pretrained_model_name_or_path"] = ref
        # the precision the memory plan assumed, explicit (an "auto" fp32 checkpoint would double it)
        param_dtype = (self.plan_dict or {}).get("budget", {}).get("param_dtype") or "bf16"
        want = TORCH_DTYPES[param_dtype]
        if TORCH_DTYPES.get(str(model.get("torch_dtype", "")).lower()) != want:
            model["torch_dtype"] = want
        if plan_over.get("model", {}).get("output_hidden_states"):
            model["output_hidden_states"] = True
        if "step_scheduler" in plan_over:
            sched = final.get("step_scheduler") if isinstance(final.get("step_scheduler"), dict) else {}
            final["step_scheduler"] = {**sched, **plan_over["step_scheduler"]}
        dist = final.get("distributed") if isinstance(final.get("distributed"), dict) else {}
        final["distributed"] = {**dist, "activation_checkpointing": bool(rec.get("activation_checkpointing"))}
        loss = rec.get("loss")
        if loss in LOSS_TARGETS:
            current = final.get("loss_fn") if isinstance(final.get("loss_fn"), dict) else {}
            if current.get("_target_") != LOSS_TARGETS[loss]:
                final["loss_fn"] = {"_target_": LOSS_TARGETS[loss]}
        if rec.get("packing"):
            ps = final.get("packed_sequence") if isinstance(final.get("packed_sequence"), dict) else {}
            final["packed_sequence"] = {**ps, "packed_sequence_size": int(rec["seq_length"])}
        if self.o.method == "sft":
            final.pop("peft", None)
            final.pop("quantization", None)
        else:
            opts = self.o.plan_options
            explicit_targets = opts.get("lora_targets") if "lora_targets" not in self.taken else None
            old_peft = final.get("peft") if isinstance(final.get("peft"), dict) else None
            chooses = old_peft and any(
                old_peft.get(k) for k in ("target_modules", "match_all_linear", "exclude_modules")
            )
            if explicit_targets is None and not chooses:
                explicit_targets = self.plan.lora_targets  # what the memory plan counted, explicit
            final["peft"] = peft_section(
                old_peft,
                rank=int(opts.get("lora_rank") or self.plan.lora_rank),
                alpha=int(opts.get("lora_alpha") or self.plan.lora_alpha),
                targets=explicit_targets,
            )
        template = self._template_for_recipe()
        seq = self.seq_length
        sections = {"dataset": self.paths["train"]}
        if self.split and self.split.validation_rows:
            sections["validation_dataset"] = self.paths["validation"]
        else:
            final.pop("validation_dataset", None)
        for name, path in sections.items():
            old = final.get(name) if isinstance(final.get(name), dict) else {}
            sec = chat_dataset_section(
                path,
                seq_length=seq,
                chat_template=template,
                mask_generation_prompt=self.mask_generation_prompt,
            )
            if old.get("_target_") in _CHAT_TARGETS:  # the user's own ChatDataset settings ride along
                sec.update({k: v for k, v in old.items() if k in _CARRIED_DATASET_KEYS})
            if isinstance(old.get("tokenizer"), dict) and "tokenizer" in self.taken:
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

    def write_manifest(self) -> None:
        from .manifest import DataFile, build_manifest, resolved_from_dir

        data = {
            key: DataFile(str(self.paths[key].resolve()), sha, rows)
            for key, sha, rows in (
                ("train", self.split.train_sha256, self.split.train_rows),
                ("validation", self.split.validation_sha256, self.split.validation_rows),
            )
        }
        loaded = self.loaded
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

    # -- the whole thing ---------------------------------------------------------------------------
    def run(self) -> PreflightResult:
        from .manifest import library_versions

        _refuse_input_overwrite(self.o.dataset, self.paths)
        self.out.mkdir(parents=True, exist_ok=True)
        stopped_at: str | None = None
        exit_code = EXIT_OK
        order: list[tuple[str, Callable[[], None]]] = [
            ("recipe", self.recipe_step),
            ("inspect", self.inspect),
            ("normalize", self.convert_and_split),  # normalize + validate + split: one pass
            ("check-template", self.check_template),
            ("stats", self.stats),
            ("plan", self.plan_step),
        ]
        try:
            for name, fn in order:
                self._step(name, fn)
        except _Stop as stop:
            stopped_at = next((s.name for s in self.steps.values() if s.status == "error"), None)
            exit_code = stop.exit_code
        self.remove_stale()
        try:
            if stopped_at is None:
                if self.recipe is not None:
                    self.write_recipe_outputs()
                else:
                    self.write_overrides()
                self.write_manifest()
            findings = [f for s in self.steps.values() for f in s.findings]
            if exit_code == EXIT_OK and any(f.severity is Severity.ERROR for f in findings):
                exit_code = EXIT_FINDINGS
            report = self.report(findings, stopped_at, exit_code, library_versions())
            with atomic_write(self.paths["report_json"]) as fh:
                fh.write(json.dumps(report, indent=2, ensure_ascii=False, default=str) + "\n")
            from .report_html import write_report_html

            write_report_html(report, self.paths["report_html"])
        except BaseException:
            # an output that cannot be written (or a signal): no overrides, recipe or manifest may point at a
            # run whose outputs are not all there
            self.remove_stale()
            raise
        _readable(self.paths.values())
        return PreflightResult(report, findings, stopped_at, exit_code, self.out)

    def report(
        self, findings: list[Finding], stopped_at: str | None, exit_code: int, versions
    ) -> dict[str, Any]:
        has_warn = any(f.severity is Severity.WARNING for f in findings)
        verdict = "fail" if exit_code != EXIT_OK else "pass_with_warnings" if has_warn else "pass"
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
            "dataprep_report": REPORT_VERSION,
            "created": _now(),
            "verdict": verdict,
            "stopped_at": stopped_at,
            "exit_code": exit_code,
            "inputs": {**self.o.to_dict(), "dataset": self.dataset_name},
            "seq_length": self.seq_length,
            "steps": [s.to_dict() for s in self.steps.values()],
            "findings": [f.to_dict() for f in findings],
            "split": self.split.to_dict() if self.split is not None else None,
            "outputs": outputs,
            "overrides": self.overrides,
            "overrides_yaml": overrides_yaml,
            "command_line": self.command_line,
            "recipe": self.recipe_out,
            "manifest": self.manifest,
            "versions": versions,
        }


def run_preflight(
    opts: PreflightOptions, *, progress: Callable[[str], None] | None = None
) -> PreflightResult:
    """Run every step, write the outputs, and return the report with the exit code it implies.

    Raises UsageError for bad options (before anything is written); every other problem is a finding in
    the report, and exit code 2 marks the ones DESIGN.md gives 2 (unreadable input, model not found).
    """
    opts.validate()
    if opts.recipe is None:
        if opts.method is None:
            opts = replace(opts, method="sft")
        return _Run(opts, progress).run()
    from .recipe import load_recipe

    recipe = load_recipe(opts.recipe, opts.recipe_args)
    opts, taken, flag_changes = resolve_with_recipe(opts, recipe)
    return _Run(opts, progress, recipe=recipe, taken=taken, flag_changes=flag_changes).run()


# option -> the dataprep flag that sets it (for "the command line wins" in the report)
_FLAGS = {
    "model": "--model",
    "dataset": "--dataset",
    "tokenizer": "--model",
    "method": "--method",
    "seq_length": "--seq-length",
    "chat_template": "--chat-template",
    "global_batch_size": "--global-batch-size",
    "lora_rank": "--lora-rank",
    "lora_alpha": "--lora-alpha",
    "lora_targets": "--lora-targets",
    "activation_checkpointing": "--activation-checkpointing",
    "loss": "--loss",
    "param_dtype": "--param-dtype",
    "packing": "--packing",
    "epochs": "--epochs",
    "max_steps": "--max-steps",
}
_TOP_LEVEL = ("model", "dataset", "tokenizer", "method", "seq_length", "chat_template")


def resolve_with_recipe(
    opts: PreflightOptions, recipe: Any
) -> tuple[PreflightOptions, dict[str, Any], list[Any]]:
    """The options with every one the user left unset taken from the recipe; the recipe values a dataprep flag
    replaced, as changes. Raises UsageError when neither names the model or a dataset preflight can read."""
    from .recipe import Change, recipe_settings

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
            changes.append(Change(st.key, st.value, given, f"{_FLAGS[name]} on the dataprep command line"))
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


# ---------------------------------------------------------------------------------------------------
# Adapters to the other steps' libraries (kept here so a signature change touches one place)
# ---------------------------------------------------------------------------------------------------


def _accepted(fn: Callable, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments ``fn`` takes (all of them when it has ``**kwargs``), None values dropped."""
    import inspect

    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return {k: v for k, v in kwargs.items() if v is not None}
    return {k: v for k, v in kwargs.items() if k in params and v is not None}


def _safe_to_dict(obj: Any) -> dict[str, Any]:
    try:
        return obj.to_dict()
    except Exception as err:  # a figure we cannot get must not stop the run
        return {"error": str(err)}


def _readable(paths: Iterable[Path]) -> None:
    """Outputs get the usual mode (0666 less the umask): temp files are created 0600, and the trainer
    may run as another user."""
    umask = os.umask(0)
    os.umask(umask)
    for p in paths:
        if p.exists():
            os.chmod(p, 0o666 & ~umask)


def _renamed(obj: Any, old: str, new: str) -> Any:
    """``obj`` (strings, inside dicts and lists too) with ``old`` replaced by ``new``."""
    if isinstance(obj, str):
        return obj.replace(old, new)
    if isinstance(obj, Mapping):
        return {k: _renamed(v, old, new) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_renamed(v, old, new) for v in obj]
    return obj


def _promote(f: Finding) -> Finding:
    return Finding(f.code, Severity.ERROR, f.message, f.hint, f.rows, f.data)


def lint_template(
    loaded: Any, rows: Iterable[tuple[int, dict]], dataset: Path, samples: int, traits: Any = None
) -> tuple[list[Finding], dict[str, Any]]:
    """The template engineer's lint, with the first ``samples`` of the kept ``rows`` (input row numbers) of
    ``dataset`` rendered and the findings weighed by ``traits`` (what every kept row carries)."""
    from . import template_lint as T  # noqa: N812

    report = T.lint_template(
        loaded, rows, dataset=str(dataset), reader="preflight", samples=samples, traits=traits
    )
    figures = _safe_to_dict(report)
    figures.pop("findings", None)
    return [_as_finding(f) for f in report.findings], figures


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
# why recipe.yaml changes a key (the longest matching prefix wins)
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
    "quantization": "--method sft: no quantized base",
    "loss_fn": "the loss the memory plan assumed",
    "model.torch_dtype": "the precision the memory plan assumed, explicit",
    "model.output_hidden_states": "FusedLinearCrossEntropy takes the hidden states",
    "model.pretrained_model_name_or_path": "--model on the dataprep command line",
    "packed_sequence": "the plan's packing",
}


def _recipe_changes(old: Mapping[str, Any], new: Mapping[str, Any], flag_changes: Iterable[Any]) -> list[Any]:
    """Every key recipe.yaml changes, with why; a dataset section that changes target or loses keys is one
    change (it is replaced whole)."""
    from .recipe import Change, diff

    by_flag = {c.key: c.why for c in flag_changes}
    out: list[Change] = []
    whole = set()
    for name in ("dataset", "validation_dataset"):
        a, b = old.get(name), new.get(name)
        if isinstance(a, dict) and (
            not isinstance(b, dict) or a.get("_target_") != b.get("_target_") or set(a) - set(b)
        ):
            whole.add(name)
            out.append(Change(name, a, b, "replaced whole: " + _WHY[name]))
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
        out.append(Change(key, a, b, why))
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
    from .atomic import overwrites_input

    if dataset == "-":
        return
    for path in paths.values():
        if overwrites_input(path, dataset):
            raise DataprepError(
                finding(
                    "output_would_overwrite_input",
                    f"{path}: an output of preflight would overwrite the input {dataset}",
                    hint="choose another --out folder",
                )
            )
