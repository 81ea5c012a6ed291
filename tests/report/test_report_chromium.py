"""report.html in real headless Chromium (Debian's `chromium`): DOM, console, screenshot, print."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from headless import CHROMIUM, chromium
from report_fixtures import ACTIONS, FINDINGS

from collector import report
from collector.bundle import Bundle

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (install.sh installs it; CI has it)"
)


def console_lines(stderr: str) -> list[str]:
    """Chromium's log lines for the page's console (messages, uncaught exceptions)."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


@pytest.fixture
def rendered(make_bundle: Callable[..., Path]) -> Path:
    path = make_bundle(n_web=2)
    bundle = Bundle.open(path)
    bundle.write_json("actions.json", ACTIONS)
    bundle.seal()
    report.render_reports(path, ["html"])
    return path / "report.html"


def test_console_check_catches_a_broken_page(tmp_path: Path) -> None:
    """The console check below can fail: a page with a script error is caught."""
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><p>x</p><script>nosuchfunction();</script></body></html>")
    result = chromium(bad.as_uri(), tmp_path, "--dump-dom")
    assert result.returncode == 0, result.stderr[-2000:]
    assert any("Uncaught ReferenceError" in line for line in console_lines(result.stderr))


def test_dom_has_severity_findings_and_hosts_without_console_errors(rendered: Path, tmp_path: Path) -> None:
    result = chromium(rendered.as_uri(), tmp_path, "--dump-dom")
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    assert console_lines(result.stderr) == []
    assert re.search(r'<span class="badge sev-p1" id="severity">P1</span>', dom)
    for finding in FINDINGS["findings"]:
        assert html.escape(finding["title"], quote=False) in dom, finding["title"]
    for host in ("app1", "db1", "redis1", "web01", "web02"):
        assert f"<th>{host}</th>" in dom, host
    assert "<svg" in dom and "spark-line" in dom  # the sparklines were parsed as SVG
    assert "<script" not in dom.lower()  # the <script> in a finding title stayed text


def test_screenshot_is_not_blank(rendered: Path, tmp_path: Path) -> None:
    from PIL import Image

    shot = tmp_path / "report.png"
    result = chromium(
        rendered.as_uri(), tmp_path, f"--screenshot={shot}", "--window-size=1280,1400", "--hide-scrollbars"
    )
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    with Image.open(shot) as image:
        rgb = image.convert("RGB")
        assert rgb.size == (1280, 1400)
        colours = rgb.getcolors(maxcolors=1 << 20) or []
    assert len(colours) > 50  # text, badges, tables: a blank page has one or two
    white = sum(n for n, c in colours if c == (255, 255, 255))
    assert white < 0.97 * 1280 * 1400
    assert any(c == (0xD9, 0x48, 0x0F) for _, c in colours)  # the P1 badge's colour: the CSS applied


def test_prints_to_pdf(rendered: Path, tmp_path: Path) -> None:
    pdf = tmp_path / "report.pdf"
    result = chromium(rendered.as_uri(), tmp_path, f"--print-to-pdf={pdf}", "--no-pdf-header-footer")
    assert result.returncode == 0 and pdf.is_file(), result.stderr[-2000:]
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF-")
    pages = len(re.findall(rb"/Type\s*/Page[^s]", data))
    assert 1 <= pages <= 12
