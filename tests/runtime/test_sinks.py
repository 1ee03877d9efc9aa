"""Issue 11 runtime, item 2: every sink behind a bounded queue in bytes, when_full (block or
drop_newest, counted), isolation (a sink that raises never ends the run) and labelled health;
and one retry policy for every networked sink."""

from __future__ import annotations

import threading
from pathlib import Path

from netmon import health, pipeline
from netmon.config import Buffer
from netmon.retry import Backoff, Retry
from netmon.runtime.sinks import ManagedSink, scored_bytes
from netmon.sinks.store import StoreReader
from tests.influx.data import make_scored
from tests.runtime.support import settings
from tests.support.lab import wait_for

SAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "samples" / "campus-runaway.pcap.gz"


class Raising:
    """A sink whose every write raises (a bug in a sink: the fault under test)."""

    def write(self, scored) -> None:
        raise RuntimeError("sink bug")

    def close(self) -> None:
        raise RuntimeError("close bug too")


def test_a_sink_that_raises_never_ends_the_run(tmp_path):
    health.reset()
    config = settings(tmp_path, sources=[{"type": "pcap", "paths": [str(SAMPLE)]}], aggregate={"interval": 60})
    stages = pipeline.build(config, restore=False)
    stages.sinks.insert(0, ManagedSink("broken", Raising, Buffer()))
    summary = pipeline.run(stages)
    counters = health.snapshot()
    assert summary.intervals > 0
    assert counters["sink.broken.errors"] == summary.intervals + 1, "every failed write and the close are counted"
    assert counters["sink.store.written"] == summary.intervals, "the store beside it got every interval"
    with StoreReader(tmp_path / "netmon.db") as reader:
        assert reader.top_hosts(5), "the store is empty although only the other sink failed"


class Stuck:
    """A sink that blocks in write until released (a database that hangs)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = threading.Event()
        self.written = 0

    def write(self, scored) -> None:
        self.started.set()
        self.release.wait(30)
        self.written += 1

    def close(self) -> None:
        pass


def test_full_queue_drops_newest_and_counts_without_blocking():
    health.reset()
    scored = make_scored(1_700_000_000.0, n_hosts=50)
    stuck = Stuck()
    sink = ManagedSink("slow", lambda: stuck, Buffer(max_bytes=max(1 << 16, 3 * scored_bytes(scored)), when_full="drop_newest"))
    for _ in range(20):
        sink.put(scored)  # returns at once even though the sink hangs
    dropped = health.snapshot()["sink.slow.dropped"]
    assert 10 <= dropped < 20, f"expected most intervals dropped by the byte bound, got {dropped}"
    assert health.snapshot()["sink.slow.queue_bytes"] <= sink.buffer.max_bytes
    stuck.release.set()
    sink.close()
    assert stuck.written == 20 - dropped, "what was queued is written, nothing twice"


def test_full_queue_blocks_the_pipeline_until_the_sink_catches_up():
    health.reset()
    scored = make_scored(1_700_000_000.0, n_hosts=50)
    stuck = Stuck()
    sink = ManagedSink("slow", lambda: stuck, Buffer(max_bytes=max(1 << 16, 2 * scored_bytes(scored)), when_full="block"))
    done = threading.Event()

    def produce() -> None:
        for _ in range(20):
            sink.put(scored)
        done.set()

    threading.Thread(target=produce, daemon=True).start()
    assert not done.wait(1.0), "put() must wait while the queue is full and when_full = block"
    stuck.release.set()
    assert wait_for(done.is_set, 20), "put() never resumed once the sink caught up"
    sink.close()
    assert stuck.written == 20 and health.snapshot()["sink.slow.dropped"] == 0, "block loses nothing"


def test_influx_sender_and_alert_hooks_share_one_backoff_policy(tmp_path):
    from netmon.sinks import alerts, influx

    sink = influx.build(influx.Config(type="influx", api="v1", url="http://127.0.0.1:9", spool_dir=str(tmp_path),
                                      retry_initial=0.5, retry_max=30, close_timeout=0, health_interval=3600))
    hooks = alerts.build(alerts.Config(type="alerts", silences_file="", backoff=1.0, backoff_max=60.0,
                                       hooks=[{"kind": "webhook", "name": "noop", "url": "http://127.0.0.1:9/"}]))
    try:
        assert sink.sender.backoff == Backoff(0.5, 30.0)
        [(_, queue)] = hooks.hooks
        assert isinstance(queue, ManagedSink), "an alert hook must sit behind the runtime's ManagedSink"
        assert queue.retry == Retry(Backoff(1.0, 60.0), 3600.0)
    finally:
        sink.close()
        hooks.close()


class Flaky:
    """A sink whose first ``failures`` writes raise (a receiver that is down a while)."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.written: list[int] = []

    def write(self, item: int) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("receiver down")
        self.written.append(item)

    def close(self) -> None:
        pass


def test_managed_sink_retries_a_failed_write_in_order_by_the_one_policy():
    health.reset()
    flaky = Flaky(failures=3)
    sink = ManagedSink("flaky", lambda: flaky, Buffer(), size=lambda item: 100, retry=Retry(Backoff(0.01, 0.05), 60.0))
    for item in range(5):
        sink.put(item)
    assert sink.drain(20), "the queue never emptied although the receiver came back"
    sink.close()
    snap = health.snapshot()
    assert flaky.written == [0, 1, 2, 3, 4], f"items lost or reordered by retries: {flaky.written}"
    assert snap["sink.flaky.errors"] == 3 and snap["sink.flaky.retried"] == 3, snap
    assert snap["sink.flaky.written"] == 5 and snap["sink.flaky.expired"] == 0


def test_managed_sink_gives_up_an_item_after_retry_for_and_counts_it_expired():
    health.reset()
    flaky = Flaky(failures=10**6)
    sink = ManagedSink("gone", lambda: flaky, Buffer(), size=lambda item: 100, retry=Retry(Backoff(0.01, 0.02), 0.2))
    sink.put(1)
    sink.put(2)
    assert sink.drain(20), "items retried past retry_for"
    sink.close(0)
    snap = health.snapshot()
    assert snap["sink.gone.expired"] == 2 and snap["sink.gone.written"] == 0, snap


def test_managed_sink_counts_items_left_at_close_as_lost():
    health.reset()
    flaky = Flaky(failures=10**6)
    sink = ManagedSink("down", lambda: flaky, Buffer(), size=lambda item: 100, retry=Retry(Backoff(5.0, 5.0), 3600.0))
    for item in range(3):
        sink.put(item)
    assert wait_for(lambda: health.snapshot()["sink.down.retried"] >= 1, 10), "the first write was never tried"
    sink.close(0)
    assert wait_for(lambda: health.snapshot()["sink.down.lost"] == 3, 10), health.snapshot()


def test_a_write_that_outlasts_close_is_counted_lost_and_not_also_written_when_it_ends():
    health.reset()
    stuck = Stuck()
    sink = ManagedSink("hung", lambda: stuck, Buffer(), size=lambda item: 100)
    sink.put(1)
    sink.put(2)
    assert stuck.started.wait(10), "the first write never started"
    sink.close(0)
    snap = health.snapshot()
    assert snap["sink.hung.lost"] == 2, f"the queued item and the attempt still running are lost at close: {snap}"
    stuck.release.set()
    assert wait_for(lambda: stuck.written == 1, 10), "the hung write never ended"
    assert wait_for(lambda: not sink._thread.is_alive(), 10), "the sink's thread did not end after its write"
    snap = health.snapshot()
    assert (snap["sink.hung.written"], snap["sink.hung.lost"]) == (0, 2), \
        f"a write close counted lost was counted written too when it ended: {snap}"


def test_a_write_that_ends_while_close_waits_is_counted_written_not_lost():
    health.reset()
    stuck = Stuck()
    sink = ManagedSink("slow", lambda: stuck, Buffer(), size=lambda item: 100)
    sink.put(1)
    assert stuck.started.wait(10), "the write never started"
    # the write ends as soon as close has begun, inside the second close waits for it
    threading.Thread(target=lambda: wait_for(lambda: sink._closing, 10, 0.001) and stuck.release.set()).start()
    sink.close(0)
    snap = health.snapshot()
    assert stuck.written == 1 and (snap["sink.slow.written"], snap["sink.slow.lost"]) == (1, 0), \
        f"a write that succeeded during close counted as lost: {snap}"


def test_drop_oldest_never_drops_the_write_in_flight_so_each_item_counts_once():
    health.reset()
    stuck = Stuck()
    sink = ManagedSink("slow", lambda: stuck, Buffer(max_bytes=1 << 16, when_full="drop_oldest"),
                       size=lambda item: 30_000)
    sink.put(1)
    assert stuck.started.wait(10), "the first write never started"
    for item in (2, 3, 4):
        sink.put(item)  # the bound holds two: 2 then 3 are dropped, never 1, which the sink already has
    stuck.release.set()
    sink.close()
    snap = health.snapshot()
    assert (snap["sink.slow.written"], snap["sink.slow.dropped"]) == (2, 2) and stuck.written == 2, \
        f"an item was counted both dropped and written, or lost: {snap}, sink wrote {stuck.written}"
