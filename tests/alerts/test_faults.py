"""Hooks that hang or refuse never hold up collection; alerts are retried until delivered."""

from __future__ import annotations

import threading
import time

from netmon import health
from netmon.sinks.alerts.lifecycle import Lifecycle
from netmon.sinks.alerts.worker import HookWorker, Retry
from tests.alerts.receivers import HttpReceiver, finding, free_port, scored, wait_for
from tests.alerts.test_webhook import sink

T0 = 1_700_000_000.0


def write_many(s, n: int) -> float:
    """Write n intervals, each with a new host firing; the slowest write() in seconds."""
    slowest = 0.0
    for i in range(n):
        began = time.perf_counter()
        s.write(scored([finding(host=f"10.3.{i // 250}.{i % 250}", start=T0 + 60 * i)], start=T0 + 60 * i))
        slowest = max(slowest, time.perf_counter() - began)
    return slowest


def test_hanging_hook_does_not_slow_writes_and_delivers_when_it_recovers(tmp_path):
    receiver = HttpReceiver(delay=3.0).start()
    try:
        s = sink(tmp_path, [{"kind": "webhook", "name": "slow", "url": receiver.url, "timeout": 1.0}],
                 backoff=0.05, backoff_max=0.2, resolve_after=1000)
        slowest = write_many(s, 50)
        assert slowest < 0.5, f"write() blocked for {slowest:.2f} s behind a hook that hangs 3 s (timeout 1 s)"
        assert wait_for(lambda: health.snapshot().get("alerts.hook.slow.failed", 0) >= 1, 5), "hang not cut off by timeout"
        receiver.delay = 0.0
        assert s.drain(30), "queued alerts were not delivered after the hook recovered"
        s.close()
    finally:
        receiver.stop()
    hosts = {r.json()["host"] for r in receiver.received}
    assert len(hosts) == 50, f"{50 - len(hosts)} alerts lost after the hook recovered"


def test_refusing_hook_is_retried_until_it_comes_up(tmp_path):
    port = free_port()
    receiver = HttpReceiver(port=port)
    s = sink(tmp_path, [{"kind": "webhook", "name": "down", "url": receiver.url}], backoff=0.05, backoff_max=0.2, resolve_after=1000)
    assert write_many(s, 5) < 0.5, "write() waited for a refusing hook"
    assert wait_for(lambda: health.snapshot().get("alerts.hook.down.retried", 0) >= 3), "refused delivery not retried"
    receiver.start()
    try:
        assert s.drain(10), "alerts not delivered once the hook came up"
        s.close()
    finally:
        receiver.stop()
    assert [r.json()["host"] for r in receiver.received] == [f"10.3.0.{i}" for i in range(5)], "order or count wrong"


def test_full_queue_drops_oldest_first_and_counts_it(tmp_path):
    receiver = HttpReceiver(port=free_port())
    s = sink(tmp_path, [{"kind": "webhook", "name": "tiny", "url": receiver.url}], queue_size=3, backoff=0.05, backoff_max=0.1, resolve_after=1000)
    write_many(s, 1)
    assert wait_for(lambda: health.snapshot().get("alerts.hook.tiny.failed", 0) >= 1), "first delivery never tried"
    for i in range(1, 10):
        s.write(scored([finding(host=f"10.3.0.{i}", start=T0 + 60 * i)], start=T0 + 60 * i))
    dropped = health.snapshot().get("alerts.hook.tiny.dropped", 0)
    assert dropped == 7, f"expected 7 oldest alerts dropped from a queue of 3, counted {dropped}"
    failed = health.snapshot()["alerts.hook.tiny.failed"]
    # an attempt already under way when its alert was dropped may still land: let it end first
    assert wait_for(lambda: health.snapshot()["alerts.hook.tiny.failed"] >= failed + 2)
    receiver.start()
    try:
        assert s.drain(10)
        s.close()
    finally:
        receiver.stop()
    assert [r.json()["host"] for r in receiver.received] == [f"10.3.0.{i}" for i in (7, 8, 9)], "the newest must survive"


def test_alerts_older_than_retry_for_are_given_up_and_counted(tmp_path):
    s = sink(tmp_path, [{"kind": "webhook", "name": "gone", "url": f"http://127.0.0.1:{free_port()}/"}],
             backoff=0.05, backoff_max=0.05, retry_for=0.3, close_timeout=0)
    write_many(s, 2)
    assert wait_for(lambda: health.snapshot().get("alerts.hook.gone.expired", 0) == 2, 5), health.snapshot()
    s.close()


def test_delivery_that_outlasts_its_io_timeout_is_abandoned_by_the_watchdog(tmp_path):
    release = threading.Event()
    calls = []

    def stuck(alert):
        calls.append(alert.id)
        if len(calls) == 1:
            release.wait(5)  # a hook that ignores its own timeout

    worker = HookWorker("stuck", stuck, retry=Retry(backoff=0.05), hang_timeout=0.3)
    alert = Lifecycle().step([finding()], 1_700_000_060.0)[0]
    worker.submit(alert)
    assert worker.drain(5), "the watchdog did not free the worker from a stuck delivery"
    release.set()
    worker.close(1)
    snap = health.snapshot()
    assert snap.get("alerts.hook.stuck.hung") == 1 and snap.get("alerts.hook.stuck.sent") == 1 and len(calls) == 2
