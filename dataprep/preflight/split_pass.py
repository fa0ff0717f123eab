"""The one streaming pass: normalize -> validate -> split, the rows measured as they stream (``SplitPass``).

The pass reads the input once; the rows it keeps go to train.jsonl / validation.jsonl, the others to
rejects.jsonl with their reason. What it learns on the way (the split, the rows' input numbers, the measured
counts, the quality lint, what the kept rows carry, the first rows for check-template) is read by the run
afterwards, which never reads the written files back unless nothing was measured (``read_back``).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ..atomic import atomic_write
from ..errors import DataprepError, OutputNotWritable
from ..findings import Finding, finding
from ..safejson import loads as safe_loads
from .options import TEMPLATE_SAMPLE, PreflightOptions
from .records import _promote, _Rejects


def row_checks(opts: PreflightOptions) -> Any:
    """The duplicate, near-duplicate, contamination and leakage checks the options ask for
    (``dataprep.dedup.RowChecks``, which reads the eval sets now), or None."""
    if opts.dedup or opts.near_dup or opts.eval_paths or opts.validation:
        from ..dedup import RowChecks

        return RowChecks(
            dedup=opts.dedup,
            near=opts.near_dup,
            eval_paths=opts.eval_paths,
            drop_contaminated=opts.drop_contaminated,
            own_validation=bool(opts.validation),
        )
    return None


class SplitPass:
    """normalize -> validate -> split in one streaming pass over the input, rejects written as they come.

    Built with what inspect found (``source``, ``read_path``: stdin's spool file or the dataset,
    ``messages_jsonl``), the row checks (``row_checks``) and the tokenizer (None when it did not load: then
    nothing is measured and check-template reports why). ``run`` makes the pass; then ``split``,
    ``counts_pass``, ``lint``, ``traits`` and ``first_rows`` hold what it found, ``normalize_report`` and
    ``validate_report`` the two steps' findings and figures.
    """

    def __init__(
        self,
        opts: PreflightOptions,
        paths: Mapping[str, Path],
        *,
        source: Any,
        read_path: str | None,
        messages_jsonl: bool,
        checks: Any,
        loaded: Any,
        mask_generation_prompt: bool,
    ):
        from ..template_lint import DataTraits

        self.o = opts
        self.paths = paths
        self.source = source
        self.read_path = read_path
        self.messages_jsonl = messages_jsonl
        self.checks = checks  # dataprep.dedup.RowChecks: duplicates, near duplicates, contamination, or None
        # what the kept rows carry (reasoning, tools, system), counted as they pass
        self.traits = DataTraits()
        self.notes: Any = None  # the converter's notes (converters.Notes), once the converters ran
        self.detection: dict[str, Any] | None = None
        self.counters: Counter = Counter()
        self.rejects: _Rejects | None = None
        self.split: Any = None  # dataprep.split.SplitResult
        self.row_index: dict[str, Any] = {}  # train / validation: each line's input row number
        # measured as the split streams (``_measured``): the counts, the quality lint and check-template's rows
        self.measuring: Any = None
        self.lint: Any = None
        self.counts_pass: Any = None
        self.first_rows: list[tuple[int, dict]] = []
        self._start_measuring(loaded, mask_generation_prompt)

    def run(self) -> None:
        """The pass. A whole-input problem (unknown schema, preference data...) raises once rejects.jsonl is
        written; an output that cannot be written raises inside its block, so that it goes too."""
        from ..split import split_conversations

        error: DataprepError | None = None
        with atomic_write(self.paths["rejects"]) as rfh:
            rejects = self.rejects = _Rejects(rfh)
            try:
                convs = self._conversations(rejects, self.counters)
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
            raise error

    def normalize_report(self) -> tuple[list[Finding], dict[str, Any]]:
        """The normalize step's findings (its rejects, the converter's notes) and figures."""
        from ..pipeline import note_findings

        assert self.rejects is not None
        n_in = self.counters["rows_in"]
        n_ok = self.counters["converted"]
        norm_findings = self.rejects.findings("normalize", self.paths["rejects"])
        if self.notes is not None:  # what the converter noticed on rows it kept (pandas literals, ...)
            norm_findings += note_findings(self.notes)
        if n_in and not n_ok:
            norm_findings = [_promote(f) for f in norm_findings]
        return norm_findings, {
            "rows_in": n_in,
            "converted": n_ok,
            "rejected": self.rejects.count("normalize"),
            "detection": self.detection,
        }

    def validate_report(self, dataset_name: str | None) -> tuple[list[Finding], dict[str, Any]]:
        """The validate step's findings (its rejects, the row checks, exact duplicates kept) and figures."""
        assert self.rejects is not None
        kept = self.split.rows
        v_findings = self.rejects.findings("validate", self.paths["rejects"])
        if kept == 0:
            v_findings = [_promote(f) for f in v_findings]
            if not v_findings:
                v_findings.append(finding("unreadable_input", f"{dataset_name}: the dataset has no rows"))
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
        return v_findings, {
            "rows_in": self.counters["rows_in"],
            "valid": kept,
            "rejected": self.rejects.count(),
            "split": self.split.to_dict(),
            **(self.checks.figures() if self.checks is not None else {}),
        }

    def read_back(self, keys: tuple[str, ...] = ("train", "validation")) -> Iterator[tuple[int, dict]]:
        """train then validation (or ``keys``), each conversation with its input row number."""
        for key in keys:
            rows = self.row_index.get(key)
            with open(self.paths[key], encoding="utf-8") as fh:
                for i, line in enumerate(fh):
                    yield (int(rows[i]) if rows is not None and i < len(rows) else i + 1), safe_loads(line)

    def move_to_rejects(self, rows: list[int], step: str, code: str, message: str) -> None:
        """Input ``rows`` out of train.jsonl / validation.jsonl into rejects.jsonl (``code``, ``message``); the
        split and the row index follow."""
        import shutil

        from ..split import drop_rows

        old = self.paths["rejects"]
        with open(old, encoding="utf-8") as before, atomic_write(old) as rfh:
            shutil.copyfileobj(before, rfh)  # rewritten whole, atomically, with the new rows at the end
            rejects = _Rejects(rfh)
            self.split = drop_rows(
                self.split,
                rows,
                self.row_index,
                lambda row, conv: rejects.add(step, row, code, message, conv),
            )

    def _own_validation(self, rejects: _Rejects) -> None:
        """``--validation PATH``: the user's validation set, converted and validated like the input (its rejects
        tagged with the file), written as validation.jsonl, and checked for copies of train rows (leakage)."""
        import dataclasses
        from array import array

        from ..pipeline import conversations
        from ..split import _HashingWriter

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
        from ..pipeline import as_written, open_input

        if self.messages_jsonl:
            step, items = "validate", as_written(self.source, self.o.convert.encoding)
        else:
            opened = open_input(self.read_path, self.o.convert)
            self.detection = opened.detection.to_dict()
            self.notes = opened.pipeline.notes
            step, items = "normalize", opened.pipeline.items(opened.batches)

        def gen() -> Iterator[tuple[int, dict]]:
            for item in items:
                counters["rows_in"] += 1
                if isinstance(item, tuple):
                    counters["converted"] += 1
                    yield item
                else:
                    rejects.add(step, item.row, item.code, item.message, item.record)

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

    def _start_measuring(self, loaded: Any, mask_generation_prompt: bool) -> None:
        """Measure the rows as they stream into the split (one read of the input; the written files are not
        read back). Without a tokenizer (it did not load: check-template's finding) nothing is measured."""
        if loaded is None:
            return
        if loaded.template is None or self.o.sample is not None:
            return  # no template: check-template stops the run; --sample: stats draws its sample afterwards
        from ..measure import Measuring
        from ..quality import QualityLint

        try:
            self.measuring = Measuring(
                loaded, mask_generation_prompt=mask_generation_prompt, workers=self.o.workers
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
