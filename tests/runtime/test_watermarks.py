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
