"""Evidence report end to end: a capture replayed into the store, then `netmon evidence HOST`."""

from __future__ import annotations

import html.parser

import numpy as np
import pytest
from click.testing import CliRunner

from netmon.batch import addr_halves
from netmon.cli import main
from netmon.decode.frames import decode_frames
from netmon.sources.pcapfile import read_frames
from tests.evidence.incident import QUIET, RUNAWAY, T0, write_incident_pcap


@pytest.fixture
def replayed(tmp_path):
    """A 20-minute capture: a runaway host ignoring KoD RATE, a quiet host polling every 64 s."""
    pcap = tmp_path / "edge.pcap"
    runaway_packets = write_incident_pcap(pcap)
    db = tmp_path / "store.db"
    result = CliRunner().invoke(main, ["replay", str(pcap), "--internal", "10.0.0.0/8", "--db", str(db)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return {"pcap": pcap, "db": db, "tmp": tmp_path, "runaway_packets": runaway_packets}


def evidence(replayed, host: str, *extra: str):
    out = replayed["tmp"] / "report"
    result = CliRunner().invoke(main, ["evidence", host, "--db", str(replayed["db"]), "--out", str(out), *extra],
                                catch_exceptions=False)
    return result, out


def test_report_has_plot_findings_kod_timeline_servers_and_pcap_excerpt(replayed):
    result, out = evidence(replayed, RUNAWAY)
    assert result.exit_code == 0, result.output
    md = (out / "report.md").read_text()
    assert (out / "rate.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", "plot is not a PNG"
    assert "![requests over time](rate.png)" in md
    assert "| 2023-11-14 22:00:00 UTC | 800 |" in md and "No Kiss-o'-Death" not in md, "KoD per hour missing"
    assert "| 192.0.2.10 | 800 |" in md, "top server missing"
    assert "NTP programs at once" in md, "instance estimate missing"
    assert "Concurrent clients to its busiest server" in md, "the hosts view's estimate (its findings' ~N clients) missing"
    assert "no findings" not in md, "the runaway host's findings are missing"
    rows = np.concatenate([decode_frames(f) for f in read_frames(out / "excerpt.pcap")])
    assert len(rows) == replayed["runaway_packets"], "excerpt should hold exactly the host's packets"
    quiet_hi, quiet_lo = addr_halves(QUIET)
    assert not np.any((rows["src_lo"] == quiet_lo) | (rows["dst_lo"] == quiet_lo)), "another host's packets leaked in"
    assert np.all(np.diff(rows["time"]) >= 0), "excerpt out of time order"


def test_since_limits_the_period_and_the_excerpt(replayed):
    result, out = evidence(replayed, RUNAWAY, "--since", "5m")
    assert result.exit_code == 0, result.output
    rows = np.concatenate([decode_frames(f) for f in read_frames(out / "excerpt.pcap")])
    assert 0 < len(rows) < replayed["runaway_packets"] / 2, f"--since 5m kept {len(rows)} packets"
    assert rows["time"].min() >= T0 + 1200 - 5 * 60 - 60


def test_html_escapes_stored_text(replayed):
    import sqlite3

    with sqlite3.connect(replayed["db"]) as db:
        db.execute("UPDATE findings SET explanation = ?, server = ? WHERE host = ?",
                   ("<script>alert(1)</script> & <img src=x onerror=alert(2)>", '"><b>x</b>', RUNAWAY))
    result, out = evidence(replayed, RUNAWAY)
    assert result.exit_code == 0, result.output
    page = (out / "report.html").read_text()
    assert "<script>" not in page and "<img src=x" not in page and "<b>x</b>" not in page, "stored text not escaped"
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page

    tags = []

    class Tags(html.parser.HTMLParser):
        def handle_starttag(self, tag, attrs):
            tags.append(tag)

    Tags().feed(page)
    assert set(tags) <= {"html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "table", "tr", "th", "td", "img",
                         "ol", "li", "b", "span", "details", "summary", "a"}
    md = (out / "report.md").read_text()
    assert "<script>" not in md


def test_unknown_host_and_missing_store_are_clear_errors(replayed, tmp_path):
    result, _ = evidence(replayed, "10.77.0.1")
    assert result.exit_code != 0 and "no intervals" in result.output
    result = CliRunner().invoke(main, ["evidence", RUNAWAY, "--db", str(tmp_path / "none.db"), "--out", str(tmp_path / "o")])
    assert result.exit_code != 0 and "no netmon store" in result.output


def test_report_without_the_capture_says_so(replayed):
    replayed["pcap"].unlink()
    result, out = evidence(replayed, RUNAWAY)
    assert result.exit_code == 0, result.output
    assert not (out / "excerpt.pcap").exists()
    assert "No packet excerpt" in (out / "report.md").read_text()


def test_since_takes_an_iso_time_or_a_duration_before_the_last_interval():
    from netmon.report.evidence import parse_since

    assert parse_since("2023-11-14T22:20:00Z", 0) == 1_700_000_400.0
    assert parse_since("2023-11-14T22:20:00", 0) == 1_700_000_400.0, "a time without zone is UTC"
    assert parse_since("90m", 10_000.0) == 10_000.0 - 5400
    with pytest.raises(ValueError):
        parse_since("yesterday-ish", 0)
