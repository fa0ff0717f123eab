"""The run: recipe -> inspect -> the split pass (normalize, validate) -> check-template -> stats -> plan, then
the outputs; each step's findings recorded, the run stopped at the first step with an error (``_Run``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import (
    DataprepError,
    MissingDependency,
    ModelNotFound,
    OutputNotWritable,
    UnreadableInput,
    UsageError,
)
from ..findings import (
    EXIT_FINDINGS,
    EXIT_OK,
    EXIT_USAGE,
    Finding,
    Severity,
    apply_strict,
    finding,
    name_options,
)
from ..manifest import now
from .options import (
    MAX_ROWS_LISTED,
    OUTPUT_NAMES,
    REPORT_VERSION,
    STDIN_NAME,
    STEPS,
    TEMPLATE_SAMPLE,
    PreflightOptions,
    resolve_with_recipe,
)
from .outputs import Outputs, _readable, _refuse_input_overwrite
from .records import PreflightResult, StepRecord, _as_finding, _renamed, _safe_to_dict, _tag
from .split_pass import SplitPass, row_checks


class _Stop(Exception):  # noqa: N818 - control flow: a step ended the run
    def __init__(self, exit_code: int = EXIT_FINDINGS):
        super().__init__()
        self.exit_code = exit_code


_EXIT2 = (UsageError, UnreadableInput, ModelNotFound, MissingDependency, OutputNotWritable)


class _Run:
    """One preflight: the steps in order (``run``), each one's findings and figures in ``steps``. The state has
    owners: the pass over the rows is a ``SplitPass``, the approved outputs an ``Outputs``; the run keeps what
    inspect found, the tokenizer, and what stats and plan decided."""

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
        self.out = Path(opts.out_dir)
        self.paths = {k: self.out / v for k, v in OUTPUT_NAMES.items()}
        self.steps = {name: StepRecord(name) for name in STEPS}
        self.progress = progress or (lambda _msg: None)
        # what inspect found
        self.source = None
        self.read_path = opts.dataset
        self.dataset_name = STDIN_NAME if opts.dataset == "-" else opts.dataset
        self.spool: str | None = None  # stdin's temporary copy, which later steps read
        self.messages_jsonl = False
        # the tokenizer, loaded before the pass (a load error is check-template's finding)
        self.loaded = None
        self._tokenizer_error: DataprepError | None = None
        self.split_pass: SplitPass | None = None  # normalize + validate + split, and what the pass measured
        # what stats and plan decided
        self.counts_all: Any = None  # every row's counts, as stats measured them (the tradeoff table's)
        self.stats_result: Any = None  # stats.StatsResult of the kept rows
        self.plan = None
        self.seq_length: int | None = None
        self.outputs = Outputs(opts, self.paths)  # what overrides / recipe.yaml / the manifest said

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
            rec.status, rec.note = "skipped", name_options("no $[recipe]: the options alone describe the run")
            return
        from ..recipe import check_recipe

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
        from ..sources import detect_packed, open_source

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
        from ..sources import detect_packed, open_source

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
        """normalize -> validate -> split in one streaming pass (``SplitPass``); rejects written as they come."""
        checks = row_checks(self.o)  # reads the eval sets, if any (a problem there is normalize's)
        self._load_tokenizer_before_pass()
        sp = self.split_pass = SplitPass(
            self.o,
            self.paths,
            source=self.source,
            read_path=self.read_path,
            messages_jsonl=self.messages_jsonl,
            checks=checks,
            loaded=self.loaded,  # None when it did not load: nothing is measured
            mask_generation_prompt=self.mask_generation_prompt,
        )
        sp.run()  # a whole-input problem (unknown schema, preference data...) raises: normalize's finding
        norm = self.steps["normalize"]
        if self.messages_jsonl:
            norm.status = "skipped"
            norm.note = "the input is messages JSONL already: validated as is"
        else:
            self._finish_step("normalize", *sp.normalize_report())
        self._finish_step("validate", *sp.validate_report(self.dataset_name))

    @property
    def split(self) -> Any:
        """The split (dataprep.split.SplitResult) once the pass made it, else None."""
        return self.split_pass.split if self.split_pass is not None else None

    def _load_tokenizer(self) -> None:
        from ..tokenizer import load_tokenizer

        if self.loaded is None:
            source = self.o.tokenizer or self.o.model
            self.loaded = load_tokenizer(
                source, chat_template=self.o.chat_template, allow_download=self.o.allow_download
            )

    def _load_tokenizer_before_pass(self) -> None:
        """Load the tokenizer before the pass, so the rows are measured as they stream into the split (one read
        of the input; the written files are not read back). A tokenizer that does not load is check-template's
        finding, reported in its step; then nothing is measured in the pass."""
        try:
            self._load_tokenizer()
        except DataprepError as err:
            self._tokenizer_error = err

    def check_template(self) -> None:
        if self._tokenizer_error is not None:
            raise self._tokenizer_error
        self._load_tokenizer()
        source = self.o.tokenizer or self.o.model
        if self.loaded.template is None:
            # No template: nothing to lint; ChatDataset would raise at start-up.
            given = "dataset.chat_template in the recipe" if self.recipe is not None else "$[chat_template]"
            missing = finding(
                "chat_template_missing",
                f"{source}: the tokenizer has no chat template and no {given} was given"
                " (AutoModel: 'ChatDataset requires a tokenizer with chat template support.')",
                hint="set dataset.chat_template in the recipe (a Jinja string or a .jinja file) or pass $[chat_template]"
                if self.recipe is not None
                else None,
            )
            self._finish_step("check-template", [missing], {"tokenizer": _safe_to_dict(self.loaded)})
        # the first rows of the pass, else of train.jsonl; with their input row numbers either way
        sp = self.split_pass
        rows = sp.first_rows if sp.counts_pass is not None else sp.read_back(("train",))
        findings, figures = lint_template(self.loaded, rows, self.paths["train"], TEMPLATE_SAMPLE, sp.traits)
        self._finish_step("check-template", findings, figures)

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
        from ..stats import compute_stats

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
        sp = self.split_pass
        if sp.counts_pass is not None:  # measured as the split streamed: no second read
            from ..stats import stats_of_measured

            kwargs.pop("sample")  # None here: a sample is drawn from the written files (below)
            result = stats_of_measured(sp.counts_pass, self.loaded, lint=sp.lint, **kwargs)
        else:
            kwargs = _accepted(compute_stats, {**kwargs, "workers": self.o.workers})
            result = compute_stats(sp.read_back(), self.loaded, **kwargs)
        self.counts_all = result.counts
        extra: list[Finding] = []
        if not result.counts.rejected:  # rows ChatDataset raises on stop the run anyway
            result, extra = self._set_aside_too_long(result, seq_lengths)
        self.stats_result = result
        self._finish_step("stats", [*getattr(result, "findings", []), *extra], result.to_dict())

    def _set_aside_too_long(self, result: Any, seq_lengths: tuple[int, ...]) -> tuple[Any, list[Finding]]:
        import dataclasses

        import numpy as np

        from ..stats import stats_from_counts, too_long

        counts = result.counts
        seq = self.o.seq_length or result.recommended_seq_length
        pos = too_long(counts, seq, self.o.max_tokens)
        if not pos.size:
            return result, []
        rows = counts.rows[pos]
        longest = int(counts.total[pos].max())
        why: list[str] = []  # for a finding, which names the option
        why_rejected: list[str] = []  # for the rejects file, which is not rendered: no option named
        if seq is not None and ((counts.supervised > 0) & (counts.supervised_kept(int(seq)) == 0))[pos].any():
            why.append(f"at seq_length {seq} they keep no supervised token")
            why_rejected.append(why[-1])
        if self.o.max_tokens is not None and (counts.total[pos] > self.o.max_tokens).any():
            why.append(f"longer than $[max_tokens] {self.o.max_tokens}")
            why_rejected.append(f"longer than the token limit of {self.o.max_tokens}")
        if self.o.sample is not None:  # only a sample was measured: name them, drop nothing
            return result, [
                finding(
                    "too_long",
                    f"{rows.size} sampled row(s) too long ({'; '.join(why)}; longest {longest} tokens): "
                    "kept, since $[sample] measured only a sample",
                    rows=rows[:MAX_ROWS_LISTED].tolist(),
                    count=int(rows.size),
                )
            ]
        message = f"{'; '.join(why_rejected)} (longest {longest} tokens)"
        self.split_pass.move_to_rejects(rows.tolist(), "stats", "too_long", message)
        keep = ~np.isin(counts.rows, rows)
        kept = stats_from_counts(
            counts.subset(keep),
            seq_lengths=seq_lengths,
            batch_sizes=self.o.batch_sizes,
            model_max_length=result.model_max_length,
            mask_generation_prompt=result.mask_generation_prompt,
        )
        from ..quality import QUALITY_CODES

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
                f"{rows.size} row(s) moved to {self.paths['rejects'].name} as too_long: {'; '.join(why)} "
                f"(longest {longest} tokens); "
                f"{kept.rows} rows remain",
                rows=rows[:MAX_ROWS_LISTED].tolist(),
                severity=severity,
                count=int(rows.size),
                seq_length=seq,
            )
        ]

    def plan_step(self) -> None:
        from ..modelconfig import load_model_config
        from ..plan import make_plan

        cfg = load_model_config(self.o.model, allow_download=self.o.allow_download)
        kwargs = {
            "stats": self.stats_result.summary() if self.stats_result is not None else None,
            "seq_length": self.o.seq_length,
            "gpus": self.o.gpus,
            "gpu_memory_bytes": self.o.gpu_memory_bytes,
            "method": self.o.method,
            **{k: v for k, v in self.o.plan_options.items() if v is not None},
        }
        self.plan = make_plan(cfg, **_accepted(make_plan, kwargs))
        figures = {**self.plan.to_dict(), "tradeoff": self._tradeoff(cfg, kwargs)}
        self.seq_length = self.plan.recommendation.seq_length or self.o.seq_length
        self._finish_step("plan", getattr(self.plan, "findings", None) or [], figures)

    def _tradeoff(self, cfg: Any, kwargs: Mapping[str, Any]) -> list[dict[str, Any]]:
        """One row per candidate seq_length: rows kept and set aside (too_long), supervised tokens lost, and
        the plan at that length (local batch, memory per GPU, fits), over every row measured."""
        from ..plan import make_plan
        from ..stats import too_long

        counts = self.counts_all
        if counts is None or not len(counts):
            return []
        chosen = self.plan.recommendation.seq_length if self.plan is not None else None
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

    # -- the whole thing ---------------------------------------------------------------------------
    def run(self) -> PreflightResult:
        from ..manifest import library_versions

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
        self.outputs.remove_stale()
        try:
            if stopped_at is None:
                decided = {
                    "plan": self.plan,
                    "split": self.split,
                    "seq_length": self.seq_length,
                    "mask_generation_prompt": self.mask_generation_prompt,
                }
                if self.recipe is not None:
                    self.outputs.write_recipe_outputs(self.recipe, self.taken, self.flag_changes, **decided)
                else:
                    self.outputs.write_overrides(**decided)
                self.outputs.write_manifest(self.split, self.loaded)
            findings = [f for s in self.steps.values() for f in s.findings]
            if exit_code == EXIT_OK and any(f.severity is Severity.ERROR for f in findings):
                exit_code = EXIT_FINDINGS
            report = self.report(findings, stopped_at, exit_code, library_versions())
            self.outputs.write_report(report)
        except BaseException:
            # an output that cannot be written (or a signal): no overrides, recipe or manifest may point at a
            # run whose outputs are not all there
            self.outputs.remove_stale()
            raise
        _readable(self.paths.values())
        return PreflightResult(report, findings, stopped_at, exit_code, self.out)

    def report(
        self, findings: list[Finding], stopped_at: str | None, exit_code: int, versions
    ) -> dict[str, Any]:
        has_warn = any(f.severity is Severity.WARNING for f in findings)
        verdict = "fail" if exit_code != EXIT_OK else "pass_with_warnings" if has_warn else "pass"
        outputs = self.outputs.report_fields()  # read before the report's time, as always
        return {
            "dataprep_report": REPORT_VERSION,
            "created": now(),
            "verdict": verdict,
            "stopped_at": stopped_at,
            "exit_code": exit_code,
            "inputs": {**self.o.to_dict(), "dataset": self.dataset_name},
            "seq_length": self.seq_length,
            "steps": [s.to_dict() for s in self.steps.values()],
            "findings": [f.to_dict() for f in findings],
            "split": self.split.to_dict() if self.split is not None else None,
            **outputs,  # outputs, overrides, overrides_yaml, command_line, recipe, manifest
            "versions": versions,
        }


def run_preflight(
    opts: PreflightOptions, *, progress: Callable[[str], None] | None = None
) -> PreflightResult:
    """Run every step, write the outputs, and return the report with the exit code it implies.

    Raises UsageError for bad options (before anything is written); every other problem is a finding in
    the report, and exit code 2 marks unreadable input and a model not found (``findings.EXIT_USAGE``).
    """
    opts.validate()
    if opts.recipe is None:
        if opts.method is None:
            opts = replace(opts, method="sft")
        return _Run(opts, progress).run()
    from ..recipe import load_recipe

    recipe = load_recipe(opts.recipe, opts.recipe_args)
    opts, taken, flag_changes = resolve_with_recipe(opts, recipe)
    return _Run(opts, progress, recipe=recipe, taken=taken, flag_changes=flag_changes).run()


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


def lint_template(
    loaded: Any, rows: Iterable[tuple[int, dict]], dataset: Path, samples: int, traits: Any = None
) -> tuple[list[Finding], dict[str, Any]]:
    """The template engineer's lint, with the first ``samples`` of the kept ``rows`` (input row numbers) of
    ``dataset`` rendered and the findings weighed by ``traits`` (what every kept row carries)."""
    from .. import template_lint as T  # noqa: N812

    report = T.lint_template(
        loaded, rows, dataset=str(dataset), reader="preflight", samples=samples, traits=traits
    )
    figures = _safe_to_dict(report)
    figures.pop("findings", None)
    return [_as_finding(f) for f in report.findings], figures
