"""Opt-in (``pytest -m real``): lint every real template and tokenizer in ../shared/real without a crash or a hang.

Real templates are paired with the ``mistral-like`` fixture tokenizer (it has BOS and EOS, which most templates
write), so the tokenizer-dependent codes (double_bos, eos_not_trained, pad_equals_eos, marker_not_special_token)
say little about the real model for those; the template-behaviour codes are the point. Set
``DATAPREP_REAL_FINDINGS=path.json`` to write every finding to a file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from dataprep.template_lint import lint_template
from dataprep.tokenizer import load_tokenizer

pytestmark = pytest.mark.real

MODELS = Path(__file__).resolve().parent.parent / "fixtures" / "models"
REAL = Path(__file__).resolve().parent.parent.parent / "shared" / "real"
_RESULTS: dict[str, list[dict]] = {}


def _names(sub: str, pattern: str) -> list[str]:
    folder = REAL / sub
    return sorted(p.name for p in folder.glob(pattern)) if folder.is_dir() else []


def _record(key: str, report) -> None:
    _RESULTS[key] = [
        {"code": f.code, "severity": f.severity.value, "message": f.message} for f in report.findings
    ]
    out = os.environ.get("DATAPREP_REAL_FINDINGS")
    if out:
        Path(out).write_text(json.dumps(_RESULTS, indent=1, ensure_ascii=False), encoding="utf-8")


@pytest.mark.parametrize("name", _names("templates", "*.jinja"))
def test_real_template(real_dir, name):
    lt = load_tokenizer(str(MODELS / "mistral-like"), chat_template=str(real_dir / "templates" / name))
    report = lint_template(lt)
    json.dumps(report.to_dict())
    _record(f"templates/{name}", report)
    hard_fail = [
        f for f in report.findings if f.code == "template_render_error" and f.severity.value == "error"
    ]
    if not hard_fail:
        assert report.sample is not None


@pytest.mark.parametrize("name", _names("tokenizers", "*"))
def test_real_tokenizer(real_dir, name):
    lt = load_tokenizer(str(real_dir / "tokenizers" / name))
    assert lt.template is not None
    report = lint_template(lt)
    json.dumps(report.to_dict())
    _record(f"tokenizers/{name}", report)
    assert report.sample is not None and report.sample.supervised_tokens > 0
