"""Writing runs of Scored through a sink: all at once, or through a database outage."""

from __future__ import annotations

import time

from netmon import health
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
