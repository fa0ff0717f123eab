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

The package, lowest first: ``options`` (PreflightOptions, the steps and outputs, a recipe's options),
``records`` (a step's record, the result, rejects, findings), ``split_pass`` (the one streaming pass:
normalize, validate, split, measured as it streams), ``outputs`` (overrides / recipe.yaml, manifest, report
files), ``run`` (the steps in order, ``run_preflight``).
"""

from __future__ import annotations

from ..defaults import DEFAULT_BATCH_SIZES, DEFAULT_SEQ_LENGTHS
from .options import (
    APPROVED_OUTPUTS,
    MAX_ROWS_LISTED,
    OUTPUT_NAMES,
    REPORT_VERSION,
    STDIN_NAME,
    STEPS,
    TEMPLATE_SAMPLE,
    Method,
    PreflightOptions,
    StepStatus,
    resolve_with_recipe,
)
from .records import PreflightResult, StepRecord
from .run import run_preflight

__all__ = [
    "APPROVED_OUTPUTS",
    "DEFAULT_BATCH_SIZES",
    "DEFAULT_SEQ_LENGTHS",
    "MAX_ROWS_LISTED",
    "OUTPUT_NAMES",
    "REPORT_VERSION",
    "STDIN_NAME",
    "STEPS",
    "TEMPLATE_SAMPLE",
    "Method",
    "PreflightOptions",
    "PreflightResult",
    "StepRecord",
    "StepStatus",
    "resolve_with_recipe",
    "run_preflight",
]
