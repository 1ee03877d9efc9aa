"""A live collector's evidence (issue 13 item 4): `netmon run` capturing on a lab border keeps
the frames of a host once it is flagged, and serves its report with them as the excerpt."""

from __future__ import annotations

import html
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from netmon.batch import addr_halves
from netmon.decode.frames import decode_frames
from netmon.sources.pcapfile import read_frames
from tests.alerts.receivers import free_port
from tests.live.conftest import HOST2, INTERNAL, SERVER4, make_edge
from tests.support.lab import wait_for

pytestmark = pytest.mark.root
NETMON = str(Path(sys.executable).with_name("netmon"))


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def test_item4_live_capture_keeps_a_flagged_hosts_packets_and_serves_its_report(lab, tmp_path):
    edge = make_edge(lab, tmp_path)
    port = free_port()
    evidence = tmp_path / "evidence"
    config = tmp_path / "netmon.toml"
    config.write_text(f"""
[campus]
internal = {INTERNAL!r}
[aggregate]
interval = 2
lateness = 0.5
[detect]
checkpoint = "{tmp_path / 'state.ckpt'}"
[[sources]]
type = "capture"
interface = "{edge.bout}"
netns = "{edge.border.name}"
[[sinks]]
type = "store"
path = "{tmp_path / 'netmon.db'}"
[[sinks]]
type = "evidence"
dir = "{evidence}"
listen = "127.0.0.1:{port}"
packets_per_host = 100
""")
    log_path = tmp_path / "netmon.log"
    with open(log_path, "ab") as log:
        proc = lab.spawn(None, [NETMON, "run", "--config", str(config)], stdout=log, stderr=log, cwd=tmp_path)
    assert wait_for(lambda: proc.poll() is not None or "capture started" in log_path.read_text(), 60), \
        f"netmon run did not start: {log_path.read_text()[-2000:]}"
    assert proc.poll() is None, f"netmon run exited: {log_path.read_text()[-2000:]}"
    ring = evidence / HOST2 / "packets.pcap"
    for seed in range(1, 16):  # ntpd-like requests (port 123, poll 64 s) ~100 a second, until flagged and kept
        edge.traffic((edge.inside2, ["requests", "--dst", SERVER4, "--count", "150", "--seed", str(seed),
                                     "--sport", "123", "--poll", "6"]))
        if ring.exists() and ring.stat().st_size > 24 + 50 * 60:
            break
    assert ring.exists(), f"no packets kept for the flagged host {HOST2}: {log_path.read_text()[-3000:]}"
    rows = np.concatenate([decode_frames(f) for f in read_frames(ring)])
    hi, lo = addr_halves(HOST2)
    assert 0 < len(rows) <= 100, f"the ring holds {len(rows)} frames, its bound is 100"
    assert np.all(((rows["src_hi"] == hi) & (rows["src_lo"] == lo)) | ((rows["dst_hi"] == hi) & (rows["dst_lo"] == lo)))

    status, body = get(f"http://127.0.0.1:{port}/evidence/{HOST2}/report.html")
    assert status == 200, f"HTTP {status}: {body[:300]!r} {log_path.read_text()[-2000:]}"
    page = html.unescape(body.decode())
    assert "kept by the live collector" in page and "excerpt.pcap" in page, page[-2000:]
    status, pcap = get(f"http://127.0.0.1:{port}/evidence/{HOST2}/excerpt.pcap")
    assert status == 200 and pcap[:4] == b"\xd4\xc3\xb2\xa1", "the live excerpt is not served"
    lab.stop(proc)
    assert proc.returncode == 0, log_path.read_text()[-2000:]
