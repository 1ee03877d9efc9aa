"""Evidence over HTTP (issue 13 item 4): the URL an alert carries serves the report, packets of
flagged hosts are kept in a bounded ring for sources without capture files, and nothing
outside the evidence directory can be reached."""

from __future__ import annotations

import html
import http.client
import os
import subprocess
import sys
import tomllib
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from click.testing import CliRunner

from netmon.cli import main
from netmon.decode.frames import decode_frames
from netmon.report.serve import EvidenceServer, Site
from netmon.sources.pcapfile import read_frames
from tests.alerts.receivers import HttpReceiver, free_port
from tests.evidence.incident import RUNAWAY, incident_rows, write_incident_minutes, write_incident_pcap
from tests.support.lab import wait_for

ROOT = Path(__file__).resolve().parents[2]


def get(url: str) -> tuple[int, bytes, dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def raw(server: EvidenceServer, method: str, path: str) -> tuple[int, bytes]:
    """A request sent exactly as written (no client-side clean-up of ``..``)."""
    host, port = server.httpd.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_item4_alert_link_serves_the_report_written_from_the_store(tmp_path):
    port = free_port()
    pcap = tmp_path / "edge.pcap"
    write_incident_pcap(pcap)
    config = tmp_path / "netmon.toml"
    receiver = HttpReceiver().start()
    config.write_text(
        '[campus]\ninternal = ["10.0.0.0/8"]\n'
        f'[[sinks]]\ntype = "store"\npath = "{tmp_path / "store.db"}"\n'
        f'[[sinks]]\ntype = "evidence"\ndir = "{tmp_path / "evidence"}"\nlisten = "127.0.0.1:{port}"\n'
        f'[[sinks]]\ntype = "alerts"\nsilences_file = ""\n'
        f'evidence_url = "http://127.0.0.1:{port}/evidence/{{host}}/report.html"\n'
        f'[[sinks.hooks]]\nkind = "webhook"\nurl = "{receiver.url}"\n')
    try:
        replayed = CliRunner().invoke(main, ["replay", str(pcap), "--config", str(config)], catch_exceptions=False)
        assert replayed.exit_code == 0, replayed.output
    finally:
        receiver.stop()
    link = next(r.json()["evidence_url"] for r in receiver.received if r.json()["event"] == "firing")
    serve = subprocess.Popen([sys.executable, "-m", "netmon", "serve", "--config", str(config)], cwd=tmp_path,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert wait_for(lambda: _answers(f"http://127.0.0.1:{port}/evidence/"), timeout=60), "netmon serve did not start"
        status, body, headers = get(link)
        assert status == 200, f"{link}: HTTP {status} {body[:200]!r}"
        assert headers["Content-Type"].startswith("text/html") and b"NTP traffic report for 10.1.2.3" in body
        assert "default-src 'none'" in headers["Content-Security-Policy"]
        status, body, _ = get(link.replace("report.html", "excerpt.pcap"))
        assert status == 200 and body[:4] == b"\xd4\xc3\xb2\xa1", "the excerpt linked from the report is not served"
        status, body, _ = get(f"http://127.0.0.1:{port}/evidence/")
        assert status == 200 and b'href="10.1.2.3/report.html"' in body, body[:300]
        assert get(f"http://127.0.0.1:{port}/evidence/10.9.9.9/report.html")[0] == 404, "a host not in the store"
    finally:
        serve.terminate()
        serve.wait(timeout=30)


def _answers(url: str) -> bool:
    try:
        return get(url)[0] == 200
    except OSError:
        return False


@pytest.fixture
def site(tmp_path):
    """An evidence directory with one report, a secret beside it and symlinks that try to leave."""
    root = tmp_path / "evidence"
    (root / "10.1.2.3").mkdir(parents=True)
    (root / "10.1.2.3" / "report.html").write_text("<p>report</p>")
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP SECRET")
    (root / "10.1.2.4").mkdir()
    (root / "10.1.2.4" / "report.html").symlink_to(secret)
    (root / "10.1.2.5").symlink_to(tmp_path, target_is_directory=True)
    (tmp_path / "report.html").write_text("TOP SECRET outside")
    server = EvidenceServer(Site(root, store=None), "127.0.0.1", 0).start()
    yield server
    server.stop()


@pytest.mark.parametrize("path", [
    "/evidence/../secret.txt",
    "/evidence/%2e%2e/secret.txt",
    "/evidence/10.1.2.3/../../secret.txt",
    "/evidence/10.1.2.3/..%2f..%2fsecret.txt",
    "/evidence/10.1.2.3%2f..%2f..%2fsecret.txt/report.html",
    "/evidence/..%2fsecret.txt/report.html",
    "/evidence/10.1.2.4/report.html",
    "/evidence/10.1.2.5/report.html",
    "/evidence/10.1.2.3/../../../../etc/passwd",
    "/evidence/10.1.2.3/report.html/../../secret.txt",
    "/secret.txt",
    "//etc/passwd",
])
def test_item4_path_traversal_is_refused(site, path):
    status, body = raw(site, "GET", path)
    assert status == 404, f"{path}: HTTP {status}"
    assert b"SECRET" not in body and b"root:" not in body


def test_item4_server_is_read_only_and_serves_only_reports(site):
    assert raw(site, "GET", "/evidence/10.1.2.3/report.html") == (200, b"<p>report</p>")
    assert raw(site, "POST", "/evidence/10.1.2.3/report.html")[0] == 405
    assert raw(site, "PUT", "/evidence/10.1.2.3/report.html")[0] == 405
    assert raw(site, "GET", "/evidence/10.1.2.3/other.txt")[0] == 404, "only the report's own files are served"


def test_the_server_address_alone_leads_to_the_reports_index(site):
    status, _ = raw(site, "GET", "/")
    assert status == 302, f"GET / answered HTTP {status}: a newcomer typing the address finds nothing"
    assert raw(site, "GET", "/evidence/")[0] == 200


def test_item4_flagged_host_packets_kept_in_a_bounded_ring_and_used_as_excerpt(tmp_path):
    minutes = write_incident_minutes(tmp_path)
    evidence = tmp_path / "evidence"
    config = tmp_path / "netmon.toml"
    config.write_text(
        '[campus]\ninternal = ["10.0.0.0/8"]\n'
        f'[[sinks]]\ntype = "store"\npath = "{tmp_path / "store.db"}"\n'
        f'[[sinks]]\ntype = "evidence"\ndir = "{evidence}"\npackets_per_host = 50\nbytes_per_host = 1000000\n')
    replayed = CliRunner().invoke(main, ["replay", *map(str, minutes), "--config", str(config)], catch_exceptions=False)
    assert replayed.exit_code == 0, replayed.output
    ring = evidence / RUNAWAY / "packets.pcap"
    rows = np.concatenate([decode_frames(f) for f in read_frames(ring)])
    assert len(rows) == 50, f"the ring kept {len(rows)} frames, not its 50"
    runaway = incident_rows()
    runaway = runaway[(runaway["src_lo"] == rows["src_lo"][0]) | (runaway["dst_lo"] == rows["src_lo"][0])]
    assert np.array_equal(np.sort(rows["time"]), runaway["time"][-50:]), "the ring should hold the latest 50 frames"
    assert not (evidence / "10.1.2.4").exists(), "a host with no finding got a ring"

    for path in minutes:  # the store's captures are gone, as for a live source: only the ring is left
        os.remove(path)
    made = CliRunner().invoke(main, ["evidence", RUNAWAY, "--config", str(config)], catch_exceptions=False)
    assert made.exit_code == 0, made.output
    page = html.unescape((evidence / RUNAWAY / "report.html").read_text())
    assert "50 packets of this host's NTP traffic" in page and "kept by the live collector" in page, page[-1500:]
    assert len(np.concatenate([decode_frames(f) for f in read_frames(evidence / RUNAWAY / "excerpt.pcap")])) == 50


def test_item4_ring_bounded_by_bytes(tmp_path):
    minutes = write_incident_minutes(tmp_path)
    config = tmp_path / "netmon.toml"
    config.write_text('[campus]\ninternal = ["10.0.0.0/8"]\n'
                      f'[[sinks]]\ntype = "evidence"\ndir = "{tmp_path / "ev"}"\npackets_per_host = 1000\n'
                      'bytes_per_host = 1000\n')
    assert CliRunner().invoke(main, ["replay", *map(str, minutes), "--config", str(config), "--db", str(tmp_path / "s.db")],
                              catch_exceptions=False).exit_code == 0
    frames = list(read_frames(tmp_path / "ev" / RUNAWAY / "packets.pcap"))
    captured = sum(int(f.caplen.sum()) for f in frames)
    assert 0 < captured <= 1000, f"the ring holds {captured} captured bytes, over its 1000"


def test_item4_example_evidence_url_matches_what_is_served():
    example = tomllib.loads((ROOT / "deploy" / "netmon.toml").read_text())
    evidence = next(s for s in example["sinks"] if s["type"] == "evidence")
    alerts = next(s for s in example["sinks"] if s["type"] == "alerts")
    assert urlsplit(alerts["evidence_url"]).path == evidence["url_path"] + "{host}/report.html"
    site = Site(Path("/nonexistent"), url_path=evidence["url_path"])
    assert site.path_for(urlsplit(alerts["evidence_url"].replace("{host}", "10.1.2.3")).path) == \
        Path("/nonexistent/10.1.2.3/report.html")


def test_item4_ring_keeps_the_same_frames_however_far_the_sink_thread_lags(tmp_path):
    """The ring once filled only after the sink's own thread had seen the host's finding: under load
    a replay outran that thread and the ring kept fewer frames, or none (a failure seen only under
    `tests/stress.sh`). Here the sink's queue holds every interval until shutdown, the worst lag."""
    from netmon import pipeline
    from netmon.config import validate

    minutes = write_incident_minutes(tmp_path)
    settings = validate({
        "campus": {"internal": ["10.0.0.0/8"]},
        "detect": {"checkpoint": ""},
        "sources": [{"type": "pcap", "paths": [str(p) for p in minutes]}],
        "sinks": [{"type": "evidence", "dir": str(tmp_path / "ev"), "packets_per_host": 50,
                   "bytes_per_host": 1000000}],
    })
    stages = pipeline.build(settings, restore=False)
    [evidence] = stages.sinks
    held = []
    put, close = evidence.put, evidence.close
    evidence.put = held.append

    def close_late(timeout=None):
        for scored in held:
            put(scored)
        close(timeout)

    evidence.close = close_late
    pipeline.run(stages)
    assert held, "the sink was handed no interval"
    rows = np.concatenate([decode_frames(f) for f in read_frames(tmp_path / "ev" / RUNAWAY / "packets.pcap")])
    assert len(rows) == 50, f"the ring kept {len(rows)} frames, not its 50, when the sink's thread lagged"
