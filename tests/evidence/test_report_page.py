"""The evidence report as an abuse desk receives it (issue 13 item 5): one self-contained HTML
page, summary and findings first, the plot inside, plain words, the time before for contrast."""

from __future__ import annotations

import html.parser
import json
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from netmon.cli import main
from tests.evidence.incident import RUNAWAY, write_incident_pcap

WINDOW = (1280, 800)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict[str, Path]:
    """30 calm minutes, then 20 minutes of a runaway host ignoring KoD; replayed; its report written."""
    tmp = tmp_path_factory.mktemp("page")
    pcap = tmp / "secret-capture-dir" / "edge.pcap"
    pcap.parent.mkdir()
    write_incident_pcap(pcap, calm_before=1800)
    db = tmp / "store.db"
    run = CliRunner().invoke(main, ["replay", str(pcap), "--internal", "10.0.0.0/8", "--db", str(db)], catch_exceptions=False)
    assert run.exit_code == 0, run.output
    out = tmp / "report"
    made = CliRunner().invoke(main, ["evidence", RUNAWAY, "--db", str(db), "--out", str(out)], catch_exceptions=False)
    assert made.exit_code == 0, made.output
    return {"tmp": tmp, "pcap": pcap, "db": db, "out": out, "html": out / "report.html", "md": out / "report.md"}


class Page(html.parser.HTMLParser):
    """Text outside and inside <details>, and every URL the page would load or link."""

    def __init__(self) -> None:
        super().__init__()
        self.depth = 0
        self.visible: list[str] = []
        self.hidden: list[str] = []
        self.urls: list[tuple[str, str]] = []

    def handle_starttag(self, tag, attrs):
        self.depth += tag == "details"
        self.urls += [(tag, v) for k, v in attrs if k in ("src", "href") and v]

    def handle_endtag(self, tag):
        self.depth -= tag == "details"

    def handle_data(self, data):
        (self.hidden if self.depth else self.visible).append(data)


def parse(text: str) -> Page:
    page = Page()
    page.feed(text)
    return page


def test_item5_html_is_one_self_contained_file_with_findings_first(report):
    text = report["html"].read_text()
    page = parse(text)
    loads = [(tag, url) for tag, url in page.urls if not url.startswith("data:image/png;base64,")]
    assert loads == [("a", "excerpt.pcap")], f"the page refers to something outside itself: {loads}"
    order = [text.index(mark) for mark in ('id="summary"', 'id="findings"', "Key figures", 'id="plot"',
                                           "Kiss-o'-Death replies", "Technical details")]
    assert order == sorted(order), "summary, findings, figures, plot, KoD, technical detail: out of order"
    assert str(report["pcap"].parent) not in text and "secret-capture-dir" not in text, "a local path leaked"
    assert "secret-capture-dir" not in report["md"].read_text(), "a local path leaked into the Markdown"


def test_item5_time_before_the_anomaly_is_shown_for_contrast(report):
    visible = " ".join(parse(report["html"].read_text()).visible)
    assert "no earlier traffic recorded" not in visible, "30 calm minutes before were left out"
    before = re.search(r"Before that\s*([\d.]+) requests an hour", visible)
    assert before and 40 < float(before.group(1)) < 80, f"the calm rate (~56/h) is missing: {visible[:600]}"
    assert re.search(r"Before 2023-11-14 22:13:00 UTC it sent", visible), "the summary does not contrast before/after"


def test_item5_kod_table_is_summarised_and_collapsed(report):
    page = parse(report["html"].read_text())
    visible = " ".join(page.visible)
    assert "800 Kiss-o'-Death packets received (800 RATE (slow down))" in visible
    assert visible.index("What netmon found") < visible.index("Kiss-o'-Death packets received")
    rows = report["html"].read_text().split("Per hour")[1].split("</details>")[0].count("<tr>") - 1
    assert 1 <= rows <= 48, f"per-hour KoD table has {rows} rows"


def test_item5_plain_language_keeps_model_jargon_in_the_technical_section(report, tmp_path):
    db = tmp_path / "store.db"
    shutil.copy(report["db"], db)
    with sqlite3.connect(db) as conn:
        conn.execute(
            "UPDATE findings SET detector = 'model.drift', explanation = ?, evidence = ? "
            "WHERE host = ? AND detector = 'rule.origin'",
            ("host 10.1.2.3 unlike its slow reference: instance_seconds 1.5e+05s/h vs 3.6e+03s/h (cusum 14.2); "
             "forest score 0.91", json.dumps({"instance_seconds": {"value": 154800.0, "baseline": 3600.0, "cusum": 14.2}}),
             RUNAWAY))
    out = tmp_path / "report"
    made = CliRunner().invoke(main, ["evidence", RUNAWAY, "--db", str(db), "--out", str(out)], catch_exceptions=False)
    assert made.exit_code == 0, made.output
    page = parse((out / "report.html").read_text())
    visible, hidden = " ".join(page.visible).lower(), " ".join(page.hidden).lower()
    for word in ("cusum", "forest", "score", "instance_seconds", "threshold"):
        assert word not in visible, f"jargon {word!r} in the text for people"
    assert "cusum 14.2" in hidden, "the technical detail should stay, collapsed"
    assert "ntp programs running at once (estimate): 43 instead of about 1 (43 times as much)" in visible, visible


def test_item5_markdown_has_no_needless_escapes(report):
    text = report["md"].read_text()
    assert "\\:" not in text and "\\." not in text and "\\-" not in text, "Markdown escapes ordinary characters"
    assert "2023-11-14 22:13:00 UTC" in text
    assert "![requests over time](rate.png)" in text


def test_item5_requests_and_replies_lines_both_visible(report):
    import matplotlib.image

    pixels = matplotlib.image.imread(report["out"] / "rate.png")[..., :3]
    top = pixels[: pixels.shape[0] * 2 // 3]

    def count(hex_colour: str) -> int:
        rgb = np.array([int(hex_colour[i:i + 2], 16) / 255 for i in (1, 3, 5)])
        return int((np.abs(top - rgb).max(axis=2) < 0.08).sum())

    red, blue = count("#d62728"), count("#1f77b4")
    assert red > 500, f"the requests line is hidden ({red} red pixels)"
    assert blue > 300, f"the replies line is hidden ({blue} blue pixels)"


def _browser() -> list[str]:
    browser = shutil.which("chromium")
    if browser is None:
        pytest.skip("Debian's chromium is not installed (deploy/install.sh --all installs it)")
    if subprocess.run(["unshare", "--net", "true"], capture_output=True).returncode != 0:
        pytest.skip("cannot make a network namespace for the browser (needs root)")
    # The browser runs in a namespace of its own with no network at all: nothing it does leaves.
    return ["unshare", "--net", browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            f"--window-size={WINDOW[0]},{WINDOW[1]}"]


PROBE = """<script>
const f = document.getElementById('findings').nextElementSibling.getBoundingClientRect();
const img = document.getElementById('plot');
document.title = JSON.stringify({findings_bottom: f.bottom, fold: innerHeight, plot_loaded: img.complete && img.naturalWidth > 0,
  plot_inline: img.src.startsWith('data:image/png;base64,'), plot_width: img.naturalWidth});
</script>"""


def test_item5_screenshot_findings_above_the_fold_and_plot_embedded(report, tmp_path):
    browser = _browser()
    shot = tmp_path / "screenshot.png"
    done = subprocess.run([*browser, f"--screenshot={shot}", report["html"].as_uri()], capture_output=True, timeout=120)
    assert shot.exists(), f"chromium took no screenshot: {done.stderr[-500:]!r}"
    import matplotlib.image

    image = matplotlib.image.imread(shot)
    assert image.shape[:2] == (WINDOW[1], WINDOW[0]), f"screenshot is {image.shape}"
    assert (image[: WINDOW[1] // 2, :, :3] < 0.3).any(), "the top of the page is blank"
    probe = tmp_path / "probe.html"
    probe.write_text(report["html"].read_text().replace("</body>", PROBE + "</body>"))
    dom = subprocess.run([*browser, "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120).stdout
    title = re.search(r"<title>(\{.*?\})</title>", dom)
    assert title, f"the probe did not run: {dom[:300]}"
    seen = json.loads(html.unescape(title.group(1)))
    assert seen["findings_bottom"] <= seen["fold"], f"findings end below the fold: {seen}"
    assert seen["plot_inline"] and seen["plot_loaded"] and seen["plot_width"] > 400, f"plot not embedded: {seen}"


def test_item5_pdf_printed_by_headless_chromium(report, tmp_path):
    browser = _browser()
    out = tmp_path / "pdf"
    done = subprocess.run(["unshare", "--net", sys.executable, "-m", "netmon", "evidence", RUNAWAY,
                           "--db", str(report["db"]), "--out", str(out), "--pdf"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert browser and done.returncode == 0, done.stderr[-800:]
    assert (out / "report.pdf").read_bytes()[:5] == b"%PDF-", "report.pdf is not a PDF"
