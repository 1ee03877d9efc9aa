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
from netmon.sinks import influx
from tests.influx.data import make_run
sink = influx.build(influx.Config(**json.loads(sys.argv[1])))
for scored in make_run(float(sys.argv[2]), int(sys.argv[3])):
    sink.write(scored)
print()
print(f"SPOOLED_POINTS={sink.spool.pending_points()}", flush=True)
time.sleep(600)
"""


def write_then_sigkill(config: dict, start: float, intervals: int) -> int:
    """A separate netmon process writes make_run(start, intervals) with ``config`` (the
    database down) and is SIGKILLed once all is spooled; returns the points it spooled."""
    repo = Path(__file__).resolve().parents[2]
    writer = subprocess.Popen([sys.executable, "-c", WRITER, json.dumps(config), str(start), str(intervals)],
                              cwd=repo, stdout=subprocess.PIPE, text=True,
                              env=os.environ | {"PYTHONPATH": str(repo)})
    try:
        said = ""
        while "SPOOLED_POINTS=" not in said and (line := writer.stdout.readline()):
            said += line  # structlog's warnings share stdout
        assert "SPOOLED_POINTS=" in said, f"writer said {said!r}"
        return int(said.split("SPOOLED_POINTS=")[1].split()[0])
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()


def drain_on_start(config: influx.Config, timeout: float = 20.0) -> None:
    """A new sink on a spool left full: it must send it on its own, before any write."""
    sink = influx.build(config)
    deadline = time.monotonic() + timeout
    while sink.spool.pending_points() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sink.spool.pending_points() == 0, "the restarted sink did not send the spool on its own"
    sink.close()
