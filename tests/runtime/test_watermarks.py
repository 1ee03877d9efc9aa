"""Issue 11 runtime, item 1: one watermark per source, each with its own lateness; windows close
at the minimum over the live sources, and a silent source stops holding them after stall_timeout."""

from __future__ import annotations

import time

from netmon import health, pipeline
from netmon.batch import Observations, Watermark
from netmon.runtime.clock import Clock
from tests.runtime.support import requests, settings, stages


def test_capture_watermark_does_not_make_flow_records_late(tmp_path):
    """A capture promises "now - 0.2 s"; a flow source (lateness 60 s) still delivers records
    30 s old: they must be counted, not dropped as late."""
    health.reset()
    config = settings(tmp_path)
    runner = pipeline.Pipeline(stages(config))
    now = time.time()
    runner.clock.add("capture", 2.0, live=True)
    runner.clock.add("netflow", 60.0, live=True)
    runner.handle("netflow", Observations(requests([now - 5])))
    runner.handle("capture", Watermark(now - 0.2))
    runner.handle("netflow", Observations(requests([now - 30, now - 31])))
    assert health.snapshot().get("aggregate.late", 0) == 0, "flow records were dropped as late behind the capture"
    runner.finish()
    assert health.snapshot()["aggregate.rows"] == 3, "every flow record must reach its window"


def test_windows_close_at_the_slowest_source_and_each_honours_its_lateness(tmp_path):
    config = settings(tmp_path)
    runner = pipeline.Pipeline(stages(config))
    start = 1_700_000_000.0  # a multiple of the 10 s interval
    runner.clock.add("fast", 0.0, live=False)
    runner.clock.add("slow", 25.0, live=False)
    runner.handle("fast", Observations(requests([start + 1])))
    runner.handle("fast", Observations(requests([start + 100])))
    assert runner.summary.intervals == 0, "a window closed although the slow source has said nothing yet"
    runner.handle("slow", Observations(requests([start + 40], host="10.20.0.6")))
    assert runner.summary.intervals == 1, "the slow source at +40 s (lateness 25 s) passed only the first window"
    runner.handle("slow", Watermark(start + 100))
    assert runner.summary.intervals == 2, "the slow source's watermark must close the window of its +40 s row"


def test_silent_live_source_stops_holding_windows_after_stall_timeout(monkeypatch):
    health.reset()
    clock = Clock(stall_timeout=30.0)
    clock.add("capture", 0.2, live=True)
    clock.add("netflow", 60.0, live=True)
    clock.watermark("capture", 1000.0)
    assert clock.minimum() == float("-inf"), "the flow source has promised nothing yet"
    later = time.monotonic() + 31
    monkeypatch.setattr(time, "monotonic", lambda: later)
    clock.watermark("capture", 1001.0)
    assert clock.minimum() == 1001.0, "a source silent past stall_timeout must stop holding windows"
    assert health.snapshot()["pipeline.source.netflow.stalled"] == 1
    clock.rows("netflow", 1050.0)
    assert clock.minimum() == 990.0, "a source that speaks again is waited for again (1050 - 60 s lateness)"


def test_one_source_far_in_the_future_cannot_close_the_others_windows():
    clock = Clock()
    clock.add("netflow", 60.0, live=False)
    clock.add("capture", 2.0, live=False)
    clock.rows("netflow", 1000.0 + 10 * 365 * 86400)  # one datagram dated ten years ahead
    clock.rows("capture", 1000.0)
    assert clock.minimum() == 998.0


def test_netmon_run_with_a_near_now_source_keeps_older_flow_records(tmp_path):
    """Real sources on loopback: sFlow (stamped on arrival: its watermark trails now by ~1 s) and
    NetFlow/IPFIX (records up to record_delay = 60 s old). A flow that ended 30 s ago, exported
    after the sFlow watermark passed its window, must still be counted by `netmon run`."""
    import signal
    import socket
    import sqlite3
    import subprocess
    import sys
    from pathlib import Path

    from tests.flows.support import NTP_FIELDS, ipfix, ntp_record, set_bytes, template_record
    from tests.flows.test_sources import kod_frame, sflow_datagram
    from tests.runtime.test_reload import free_port
    from tests.support.lab import wait_for

    import urllib.request

    netflow_port, sflow_port, metrics_port = free_port(), free_port(), free_port()

    def records_counted() -> float:
        """netmon's own count of NetFlow/IPFIX records decoded (its /metrics), 0 until it serves."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2) as answer:
                text = answer.read().decode()
        except OSError:
            return 0.0
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith('netmon_source_records_total{source="netflow"}'))

    config = tmp_path / "netmon.toml"
    config.write_text(f"""
[campus]
internal = ["10.0.0.0/8"]
[aggregate]
interval = 10
lateness = 0
[detect]
detectors = ["rules"]
checkpoint = "{tmp_path / 'state.ckpt'}"
[[sources]]
type = "sflow"
listen = ["127.0.0.1:{sflow_port}"]
batch_seconds = 0.1
idle_watermark = 0.2
[[sources]]
type = "netflow"
listen = ["127.0.0.1:{netflow_port}"]
batch_seconds = 0.1
record_delay = 60
[[sinks]]
type = "store"
path = "{tmp_path / 'netmon.db'}"
[[sinks]]
type = "metrics"
listen = "127.0.0.1:{metrics_port}"
""")
    log_path = tmp_path / "netmon.log"
    netmon = str(Path(sys.executable).with_name("netmon"))
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([netmon, "run", "--config", str(config)], stdout=log, stderr=log, start_new_session=True)
    try:
        assert wait_for(lambda: proc.poll() is not None or "netmon running" in log_path.read_text(), 60), \
            log_path.read_text()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(sflow_datagram(kod_frame(), rate=1), ("127.0.0.1", sflow_port))
            time.sleep(1.5)  # the sFlow source's idle watermarks move to ~now - 1 s
            now = time.time()
            record = ntp_record("10.2.0.9", "192.0.2.1", 40000, 123, 5, 380, int((now - 30) * 1000))
            sock.sendto(ipfix([set_bytes(2, template_record(256, NTP_FIELDS)), set_bytes(256, record)],
                              export=int(now)), ("127.0.0.1", netflow_port))
            # stop only once the source decoded the record: what a source decoded is drained at stop
            assert wait_for(lambda: records_counted() >= 1, 60), "netmon never decoded the exported record"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert proc.returncode == 0, log_path.read_text()
    with sqlite3.connect(tmp_path / "netmon.db") as db:
        hosts = {row[0] for row in db.execute("SELECT host FROM intervals")}
    assert "10.2.0.9" in hosts, f"the 30 s old flow record was dropped as late; stored hosts: {sorted(hosts)}"
