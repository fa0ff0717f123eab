"""report.html in a real browser: headless Chromium renders it; the verdict, findings and histogram show.

Chromium is the Debian package `chromium` (.ci/run installs it); without it these tests skip, saying so.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from dataprep.report_html import write_report_html

CHROMIUM = next(
    (p for p in ("/usr/bin/chromium", shutil.which("chromium") or "") if p and Path(p).is_file()), None
)
ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install chromium; CI's .ci/run does)"
)


def chromium(tmp_path: Path, url: str, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / "profile"
    cmd = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", f"--user-data-dir={profile}", *args, url,
    ]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def decode_png(data: bytes) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of RGB(A) bytes) for an 8-bit non-interlaced PNG: zlib + struct, nothing else."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and interlace == 0 and color in (2, 6), (depth, color, interlace)
            bpp = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows, prev, i = [], bytearray(stride), 0
    for _ in range(height):
        ftype, line = raw[i], bytearray(raw[i + 1 : i + 1 + stride])
        i += 1 + stride
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b = prev[x]
            c = prev[x - bpp] if x >= bpp else 0
            if ftype == 1:
                line[x] = (line[x] + a) & 255
            elif ftype == 2:
                line[x] = (line[x] + b) & 255
            elif ftype == 3:
                line[x] = (line[x] + (a + b) // 2) & 255
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return width, height, [bytes(r[j] for j in range(len(r)) if j % bpp < 3) for r in rows]


@pytest.fixture(scope="module")
def report_page(tmp_path_factory) -> tuple[Path, dict]:
    """A report from a real preflight run on fixtures; a hand-built one if a step's module is missing."""
    tmp = tmp_path_factory.mktemp("browser")
    modules = ("dataprep.normalize", "dataprep.template_lint", "dataprep.stats", "dataprep.plan")
    model = ROOT / "fixtures" / "models" / "chatml-gen"
    if all(importlib.util.find_spec(m) for m in modules) and (model / "tokenizer.json").is_file():
        from dataprep.preflight import PreflightOptions, run_preflight

        data = tmp / "records.csv"
        rows = ["instruction,input,output"]
        rows += [
            f'"Explain item {i} {"in detail " * (i % 7)}",,"Item {i} is {"fine " * (i % 11)}"'
            for i in range(60)
        ]
        rows += [",,"]  # one rejected row: a warning to show
        data.write_text("\n".join(rows) + "\n")
        result = run_preflight(
            PreflightOptions(
                model=str(model),
                dataset=str(data),
                out_dir=tmp / "out",
                method="lora",
                gpus=2,
                gpu_memory_bytes=24 * 1024**3,
                val_fraction=0.1,
            )  # fmt: skip
        )
        assert result.exit_code == 0, result.report["findings"]
        return tmp / "out" / "report.html", result.report
    spec = importlib.util.spec_from_file_location(
        "_report_fixture", Path(__file__).with_name("test_report_html.py")
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    doc = mod.report()  # the hand-built report of test_report_html
    return write_report_html(doc, tmp / "report.html"), doc


def test_screenshot_is_not_blank(report_page, tmp_path):
    page, _ = report_page
    shot = tmp_path / "report.png"
    proc = chromium(tmp_path, page.as_uri(), f"--screenshot={shot}", "--window-size=1280,2000")
    assert shot.is_file(), proc.stderr[-2000:]
    width, height, rows = decode_png(shot.read_bytes())
    assert (width, height) == (1280, 2000)
    # Not blank: many distinct colours, and the top (header + verdict) is not one flat colour.
    sample = [r[x : x + 3] for r in rows[::20] for x in range(0, len(r), 60)]
    assert len(set(sample)) > 20
    top = [r[x : x + 3] for r in rows[:300:5] for x in range(0, len(r), 30)]
    assert len(set(top)) > 5
    # Keep the last screenshot for a human to look at.
    keep = ROOT / ".pytest_cache" / "report_screenshot.png"
    keep.parent.mkdir(exist_ok=True)
    shutil.copy(shot, keep)


def test_rendered_dom_shows_verdict_findings_and_histogram(report_page, tmp_path):
    page, doc = report_page
    proc = chromium(tmp_path, page.as_uri(), "--dump-dom", "--window-size=1280,2000")
    dom = proc.stdout
    assert "</html>" in dom, proc.stderr[-2000:]
    assert re.search(r'<div id="verdict" class="verdict (pass|pass_with_warnings|fail)"', dom)
    assert "Ready to train" in dom
    findings = re.search(r'<section class="card" id="findings">(.*?)</section>', dom, re.S).group(1)
    assert findings.count('class="finding ') == len(doc["findings"]) >= 1
    for f in doc["findings"]:
        assert f["code"] in findings
    hist = re.search(r'<svg id="histogram"(.*?)</svg>', dom, re.S)
    assert hist, "the histogram SVG is in the rendered DOM"
    heights = [float(h) for h in re.findall(r'<rect class="bar"[^>]*height="([0-9.]+)"', hist.group(1))]
    assert heights and max(heights) > 50  # bars drawn with a visible size
    assert 'id="memory-bars"' in dom and 'class="seg"' in dom


def test_layout_gives_the_sections_real_size(report_page, tmp_path):
    """Chromium's own layout: print each section's box with a tiny inline probe page (no network)."""
    page, _ = report_page
    probe = tmp_path / "probe.html"
    # Load the report in an iframe and write the sections' rendered sizes into the probe's DOM.
    probe.write_text(
        "<!DOCTYPE html><html><body><iframe id=f src='" + page.as_uri() + "' width=1280 height=2000></iframe>"
        "<pre id=out></pre><script>"
        "document.getElementById('f').onload=function(){var d=this.contentDocument,o={};"
        "['verdict','findings','histogram','memory-bars'].forEach(function(i){var e=d.getElementById(i);"
        "var r=e?e.getBoundingClientRect():null;o[i]=r?[r.width,r.height]:null;});"
        "document.getElementById('out').textContent=JSON.stringify(o);};"
        "</script></body></html>"
    )
    proc = chromium(
        tmp_path, probe.as_uri(), "--dump-dom", "--allow-file-access-from-files", "--virtual-time-budget=5000"
    )
    m = re.search(r'<pre id="out">(.*?)</pre>', proc.stdout, re.S)
    assert m and m.group(1), proc.stderr[-2000:]
    sizes = json.loads(m.group(1).replace("&quot;", '"'))
    assert set(sizes) == {"verdict", "findings", "histogram", "memory-bars"}, sizes
    assert None not in sizes.values(), sizes
    for ident, (w, h) in sizes.items():
        assert w > 300 and h > 20, (ident, w, h)
