"""Issue 13 item 1: with ``flush_interval = 1`` points are in the database within 2 x flush_interval,
not when a batch fills or at SIGTERM; in-process and through ``netmon run`` live, into influxd 1.x
(v1 /write) and victoria-metrics (v2 write API)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netmon.sinks import influx
from tests.flows.support import NTP_FIELDS, ipfix, ntp_record, set_bytes, template_record
from tests.influx.data import make_scored, recent_start
from tests.influx.servers import Influx1, Victoria
from tests.support.lab import wait_for

FLUSH = 1.0
NETMON = str(Path(sys.executable).with_name("netmon"))


def host_points(server: Influx1 | Victoria) -> int:
    """ntp_host points (influxd) or ntp_host series (victoria-metrics) visible now."""
    if isinstance(server, Influx1):
        return sum(len(s["values"]) for s in server.series('SELECT * FROM "ntp_host"'))
    return sum(len(v) for k, v in server.export('{__name__=~"ntp_host_.*"}').items())


def newest_health_ms(server: Influx1 | Victoria) -> int:
    """Timestamp (ms) of the newest netmon_health point visible now; 0 when none."""
    if isinstance(server, Influx1):
        rows = server.series('SELECT * FROM "netmon_health" ORDER BY time DESC LIMIT 1')
        return int(rows[0]["values"][0][0]) if rows else 0
    samples = [t for v in server.export('{__name__=~"netmon_health_.*"}').values() for t, _ in v]
    return max(samples, default=0)


def sink_config(server: Influx1 | Victoria, spool: Path) -> dict:
    api = {"api": "v1"} if isinstance(server, Influx1) else {"api": "v2", "token": "not-checked", "org": "campus"}
    return {"type": "influx", "url": server.url, "spool_dir": str(spool), "flush_interval": FLUSH, **api}


@pytest.fixture(params=["influxd-v1", "victoria-v2"])
def database(request):
    return request.getfixturevalue("influx1" if request.param == "influxd-v1" else "victoria")


def test_quiet_stream_is_visible_within_two_flush_intervals(database, tmp_path):
    """One interval, far below batch_size: the sender must wake on its own after flush_interval."""
    sink = influx.build(influx.Config(**sink_config(database, tmp_path / "spool"), health_interval=3600))
    try:
        for k in range(2):  # the first write, and one after the sender went idle again
            before = host_points(database)
            written = time.monotonic()
            sink.write(make_scored(recent_start() + 60 * k, n_hosts=3))
            assert wait_for(lambda: host_points(database) > before, timeout=10, interval=0.05), \
                "the point never arrived while the sink was open"
            took = time.monotonic() - written
            assert took <= 2 * FLUSH, f"write {k}: visible after {took:.2f} s, more than 2 x flush_interval"
    finally:
        sink.close()


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_config(path: Path, server: Influx1 | Victoria, port: int) -> None:
    sink = sink_config(server, path.parent / "spool")
    api_lines = "\n".join(f"{k} = {v!r}" for k, v in sink.items() if k != "type")
    path.write_text(f"""
[campus]
internal = ["10.0.0.0/8"]
[aggregate]
interval = 1
lateness = 0
[detect]
checkpoint = "{path.parent / 'state.ckpt'}"
[[sources]]
type = "netflow"
listen = ["127.0.0.1:{port}"]
batch_seconds = 0.1
idle_watermark = 0.2
record_delay = 0
[[sinks]]
type = "influx"
health_interval = 1
{api_lines}
""".replace("'", '"'))


def test_netmon_run_shows_points_while_running(database, tmp_path):
    """`netmon run` live: health points no older than health_interval + 2 x flush_interval, and the
    flow records' host points, visible while it runs (not at SIGTERM)."""
    port = free_udp_port()
    config = tmp_path / "netmon.toml"
    run_config(config, database, port)
    log_path = tmp_path / "netmon.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([NETMON, "run", "--config", str(config)], stdout=log, stderr=log,
                                start_new_session=True)
    try:
        assert wait_for(lambda: proc.poll() is not None or "netmon running" in log_path.read_text(), 60), \
            f"netmon run did not start: {log_path.read_text()}"
        assert proc.poll() is None, f"netmon run exited: {log_path.read_text()}"
        assert wait_for(lambda: newest_health_ms(database) > 0, 20, 0.1), "no netmon_health point while running"
        lags = []
        for _ in range(3):  # sample the lag a few times, one health interval apart
            assert wait_for(lambda: newest_health_ms(database) > 0, 5)
            lags.append(time.time() - newest_health_ms(database) / 1000)
            time.sleep(1.0)
        assert min(lags) <= 1.0 + 2 * FLUSH, f"newest health point lags {lags} s behind wall time"
        now = time.time()
        datagram = ipfix([set_bytes(2, template_record(256, NTP_FIELDS)),
                          set_bytes(256, ntp_record("10.1.0.5", "192.0.2.1", 40000, 123, 5, 380, int(now * 1000)))],
                         export=int(now))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(datagram, ("127.0.0.1", port))
        assert wait_for(lambda: host_points(database) > 0, 20, 0.1), \
            f"no ntp_host point while netmon runs:\n{log_path.read_text()[-2000:]}"
        assert proc.poll() is None, "netmon run ended before its points were seen"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
