"""What a run records: each step's outcome (``StepRecord``), the result (``PreflightResult``), the rejected rows
(``_Rejects``), and the helpers that make findings of what the steps' libraries return."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..findings import Finding, Severity, finding
from .options import MAX_ROWS_LISTED, OUTPUT_NAMES, StepStatus


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


def _safe_to_dict(obj: Any) -> dict[str, Any]:
    try:
        return obj.to_dict()
    except Exception as err:  # a figure we cannot get must not stop the run
        return {"error": str(err)}


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
