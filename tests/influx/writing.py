"""Writing runs of Scored through a sink: all at once, through a database outage, or from a
process SIGKILLed with its spool full."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from netmon import health
from netmon.sinks import influx
from netmon.sinks.influx import InfluxSink
from tests.influx.servers import Server


def quick_config(url: str, spool: Path, **extra) -> influx.Config:
    """A sink config with small batches and quick retries, so outages resolve within a test's seconds."""
    values = dict(type="influx", url=url, spool_dir=str(spool), batch_size=200, flush_interval=0.1,
                  retry_initial=0.05, retry_max=0.5, close_timeout=30)
    return influx.Config(**(values | extra))


def write_through_outage(sink: InfluxSink, server: Server, run: list) -> None:
    """Write ``run`` while ``server`` is stopped for its middle third, then close the sink."""
    third = len(run) // 3
    for scored in run[:third]:
        sink.write(scored)
    time.sleep(0.5)
    server.stop()
    for scored in run[third : 2 * third]:
        sink.write(scored)
    time.sleep(1.0)
    assert health.snapshot().get("influx.write.errors", 0) > 0, "the sink never noticed the database was down"
    assert health.snapshot()["influx.spool.points"] > 0, "nothing was spooled while the database was down"
    server.start()
    for scored in run[2 * third :]:
        sink.write(scored)
    sink.close()


def write_all(sink: InfluxSink, run: list) -> None:
    """Write every interval of ``run``, then close (send everything)."""
    for scored in run:
        sink.write(scored)
    sink.close()


WRITER = """
import json, sys, time
import structlog
structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))  # stdout is for the test
from netmon.sinks import influx
from tests.influx.data import make_run
sink = influx.build(influx.Config(**json.loads(sys.argv[1])))
for k, scored in enumerate(make_run(float(sys.argv[2]), int(sys.argv[3]))):
    sink.write(scored)
    print(f"\\nAPPENDED={k}", flush=True)
    time.sleep(float(sys.argv[4]))
print(f"\\nSPOOLED_POINTS={sink.spool.pending_points()}", flush=True)
time.sleep(600)
"""


def write_then_sigkill(config: dict, start: float, intervals: int, kill_after: int | None = None,
                       pause: float = 0.0) -> tuple[int, int]:
    """A separate netmon process writes make_run(start, intervals) with ``config``, ``pause``
    seconds apart, and is SIGKILLed once interval ``kill_after`` is written (None: once all
    are). Returns (the last interval it said was written, the points it said were spooled
    or -1 when killed before the end)."""
    repo = Path(__file__).resolve().parents[2]
    argv = [sys.executable, "-c", WRITER, json.dumps(config), str(start), str(intervals), str(pause)]
    writer = subprocess.Popen(argv, cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                              env=os.environ | {"PYTHONPATH": str(repo)})
    last, spooled = -1, -1
    try:
        for line in writer.stdout:
            if line.startswith("APPENDED="):
                last = int(line.split("=")[1])
                if kill_after is not None and last >= kill_after:
                    break
            elif line.startswith("SPOOLED_POINTS="):
                spooled = int(line.split("=")[1])
                break
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    return last, spooled


def drain_on_start(config: influx.Config, timeout: float = 20.0) -> None:
    """A new sink on a spool left full: it must send it on its own, before any write."""
    sink = influx.build(config)
    deadline = time.monotonic() + timeout
    while sink.spool.pending_points() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sink.spool.pending_points() == 0, "the restarted sink did not send the spool on its own"
    sink.close()
