"""InfluxDB sink speed: points per second written, and replay throughput with the sink on vs off.

1. Points/s: consecutive Scored intervals (every FEATURES column, scores, findings)
   written with the sink's default batching (5000 points a request, 1 s flush,
   gzip level 1) to victoria-metrics (v2 API, influxdb-client) and influxd 1.x (v1 /write),
   both on loopback; timed from the first write() to close() returning with the
   spool empty (every point acknowledged). Also the pipeline side alone: the time
   write() itself takes (line protocol + spool append), which is what a replay waits for.
2. Replay: observation rows through aggregate -> detect (rules) -> sinks, with no
   sink and with the influx sink (to victoria-metrics); ratio of rows/s.

    .venv/bin/python tests/benchmarks/bench_influx.py [--intervals 30] [--hosts 500] [--rows 400000]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from netmon import health, pipeline  # noqa: E402
from netmon.aggregate import Aggregator  # noqa: E402
from netmon.batch import Observations  # noqa: E402
from netmon.config import Buffer, validate  # noqa: E402
from netmon.detect.engine import Engine  # noqa: E402
from netmon.runtime.sinks import ManagedSink  # noqa: E402
from netmon.sinks import influx  # noqa: E402
from tests.benchmarks.bench_aggregate import make_rows  # noqa: E402
from tests.influx.data import make_run, recent_start  # noqa: E402
from tests.influx.servers import Influx1, Victoria  # noqa: E402
from ratios import record  # noqa: E402


def write_points(config: influx.Config, run) -> tuple[int, float, float]:
    """(points, seconds in write() calls, seconds until all acknowledged)."""
    health.reset()
    sink = influx.build(config)
    started = time.perf_counter()
    in_write = 0.0
    for scored in run:
        t = time.perf_counter()
        sink.write(scored)
        in_write += time.perf_counter() - t
    sink.close()
    total = time.perf_counter() - started
    assert sink.spool.pending_points() == 0, "points left unsent"
    return int(health.snapshot()["influx.write.points"]), in_write, total


class Timed:
    """A sink wrapper that adds up the seconds spent in write() and close()."""

    def __init__(self, sink: influx.InfluxSink) -> None:
        self.sink, self.in_write, self.in_close, self.intervals, self.points = sink, 0.0, 0.0, 0, 0

    def write(self, scored) -> None:
        started = time.perf_counter()
        self.sink.write(scored)
        self.in_write += time.perf_counter() - started
        self.intervals += 1

    def close(self) -> None:
        started = time.perf_counter()
        self.sink.close()
        self.in_close += time.perf_counter() - started


def point_api_lines(scored) -> list[bytes]:
    """The same ntp_host/ntp_traffic/ntp_score points built the usual way, one influxdb-client
    Point per host and measurement (the peer the column-wise builder is measured against)."""
    from influxdb_client import Point

    iv = scored.intervals
    ns = int(iv.start * 1e9)
    lines = []
    for i, host in enumerate(iv.host.tolist()):
        points = {"": Point(influx.HOST), "out": Point(influx.TRAFFIC).tag("direction", "out"),
                  "in": Point(influx.TRAFFIC).tag("direction", "in")}
        for name, column in iv.features.items():
            direction, field = influx.split_direction(name)
            value = float(column[i])
            if value == value:
                points[direction].field(field, value)
        points[""].field("role", str(iv.role[i]))
        score = Point(influx.SCORE)
        for name, column in scored.scores.items():
            score.field(name, float(column[i]))
        for point in (*points.values(), score):
            point.tag("host", host).tag("group", str(iv.group[i])).time(ns)
            lines.append(point.to_line_protocol().encode())
    return lines


def builder_ratio(run) -> tuple[float, float]:
    """Points/s of netmon's line protocol builder and of influxdb-client's Point API."""
    started = time.perf_counter()
    ours = sum(len(influx.host_lines(s)) + len(influx.score_lines(s)) for s in run)
    mine = time.perf_counter() - started
    started = time.perf_counter()
    peer = sum(len(point_api_lines(s)) for s in run)
    theirs = time.perf_counter() - started
    return ours / mine, peer / theirs


def replay(rows, sink_config: influx.Config | None, batch: int = 20000) -> tuple[float, Timed | None]:
    """Rows/s through aggregate, rules and the sinks (closed, so every point delivered)."""
    settings = validate({"campus": {"internal": ["10.0.0.0/8"]}, "detect": {"detectors": ["rules"]}})
    timed = Timed(influx.build(sink_config)) if sink_config else None
    stages = pipeline.Stages(sources=[], aggregator=Aggregator(settings.campus, settings.aggregate),
                             engine=Engine(settings.detect, restore=False),
                             sinks=[ManagedSink("influx", lambda: timed, Buffer())] if timed else [])
    items = [Observations(rows[i : i + batch]) for i in range(0, len(rows), batch)]
    health.reset()
    started = time.perf_counter()
    pipeline.run_items(stages, items)
    return len(rows) / (time.perf_counter() - started), timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--intervals", type=int, default=30)
    parser.add_argument("--hosts", type=int, default=500)
    parser.add_argument("--rows", type=int, default=400_000)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-influx-"))
    (root / "vm").mkdir()
    (root / "influxd").mkdir()
    vm, influxd = Victoria.create(root / "vm"), Influx1.create(root / "influxd")
    vm.start()
    influxd.start()
    influxd.create_database("netmon")
    try:
        run = make_run(recent_start(), args.intervals, n_hosts=args.hosts)
        print(f"points/s: {args.intervals} intervals x {args.hosts} hosts, default batching "
              f"(batch_size 5000, flush 1 s, gzip level 1)")
        for label, config in (
            ("victoria-metrics v2 API", influx.Config(type="influx", api="v2", url=vm.url, close_timeout=600,
                                                      spool_dir=str(root / "s1"))),
            ("influxd 1.x  v1 /write", influx.Config(type="influx", api="v1", url=influxd.url, close_timeout=600,
                                                     spool_dir=str(root / "s2"))),
        ):
            points, in_write, total = write_points(config, run)
            print(f"  {label}: {points} points in {total:.2f} s = {points / total:,.0f} points/s acknowledged; "
                  f"write() alone {points / in_write:,.0f} points/s ({in_write / len(run) * 1000:.1f} ms/interval)")
        ours, peer = builder_ratio(run[:5])
        print(f"line protocol from Scored: netmon {ours:,.0f} points/s, influxdb-client Point API "
              f"{peer:,.0f} points/s, ratio {ours / peer:.1f}x")
        record("influx", "line protocol from scored intervals", ours, "points/s", "higher",
               "influxdb-client Point API", peer)
        rows = make_rows(args.rows, args.hosts * 4)
        off, _ = replay(rows, None)
        on, timed = replay(rows, influx.Config(type="influx", api="v2", url=vm.url, close_timeout=600,
                                               spool_dir=str(root / "s3")))
        points = int(health.snapshot()["influx.write.points"])
        print(f"replay ({args.rows} rows, {timed.intervals} intervals, {points} points, rules detector): "
              f"sink off {off:,.0f} rows/s, influx sink on {on:,.0f} rows/s, on/off = {on / off:.2f}; "
              f"in write() {timed.in_write:.2f} s, in close() {timed.in_close:.2f} s")
    finally:
        vm.stop()
        influxd.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
