"""The HTML report rendered in a real browser: Debian's headless chromium."""

import html
import shutil
import struct
import subprocess

import pytest

from nandoctor.report import html as html_report
from tests.conftest import REPO, sample

CHROMIUM = shutil.which("chromium")
WINDOW = (1000, 1800)

pytestmark = pytest.mark.skipif(CHROMIUM is None,
                                reason="chromium is not installed (Debian: apt-get install chromium)")


@pytest.fixture(scope="module")
def report_file(tf, tmp_path_factory):
    """Scan a forward-overflow sample and a training-replay sample, and write their HTML page."""
    from nandoctor.scanner import scan

    reports = [
        scan(sample("exp_overflow"), sample("exp_overflow", ".npz")),
        scan(sample("lr_divergence"), sample("lr_divergence", ".npz"), fit_steps=20, batch_size=32),
    ]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(REPO)
        page = html_report.render(reports)
    path = tmp_path_factory.mktemp("html") / "report.html"
    path.write_text(page, encoding="utf-8")
    return reports, path


def run_chromium(tmp_path, *arguments):
    """Run headless chromium with a fresh profile and its background networking turned off."""
    profile = tmp_path / "profile"
    profile.mkdir(exist_ok=True)
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", *arguments,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def test_chromium_dom_has_charts_and_findings(report_file, tmp_path):
    reports, path = report_file
    result = run_chromium(tmp_path, "--dump-dom", path.as_uri())
    dom = result.stdout
    assert result.returncode == 0, result.stderr[-2000:]
    for chart in ("magnitude-1", "magnitude-2", "training-2"):
        assert f'<svg class="chart" id="{chart}"' in dom
    assert "<polyline" in dom
    assert "sharp_exp" in dom
    for report in reports:
        finding = report.findings[0]
        # Chromium serializes text nodes with &, < and > escaped.
        assert html.escape(finding.evidence.sentence, quote=False) in dom
        assert html.escape(finding.fix, quote=False).split("`")[0] in dom


def test_chromium_screenshot(report_file, tmp_path):
    _, path = report_file
    screenshot = tmp_path / "report.png"
    result = run_chromium(tmp_path, f"--window-size={WINDOW[0]},{WINDOW[1]}", f"--screenshot={screenshot}",
                          "--hide-scrollbars", path.as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    data = screenshot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == WINDOW
    # A blank screenshot of this size is about 9 kB, so a much larger one has text and charts drawn.
    assert len(data) > 50_000
