"""Issue 11 runtime, item 2: every sink behind a bounded queue in bytes, when_full (block or
drop_newest, counted), isolation (a sink that raises never ends the run) and labelled health;
and one retry policy for every networked sink."""

from __future__ import annotations

import threading
from pathlib import Path

from netmon import health, pipeline
from netmon.config import Buffer
from netmon.retry import Backoff
from netmon.runtime.sinks import ManagedSink, scored_bytes
from netmon.sinks.alerts.worker import HookWorker, Retry
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
        self.written = 0

    def write(self, scored) -> None:
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
    from netmon.sinks import influx

    sink = influx.build(influx.Config(type="influx", api="v1", url="http://127.0.0.1:9", spool_dir=str(tmp_path),
                                      retry_initial=0.5, retry_max=30, close_timeout=0, health_interval=3600))
    worker = HookWorker("noop", lambda alert: None, retry=Retry(backoff=1.0, backoff_max=60.0))
    try:
        assert sink.sender.backoff == Backoff(0.5, 30.0)
        assert worker.retry.policy == Backoff(1.0, 60.0)
    finally:
        sink.close()
        worker.close(0)
