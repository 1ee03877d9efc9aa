"""Hooks that hang or refuse never hold up collection; alerts are retried until delivered.

Each hook is a ManagedSink of the runtime (issue 11 item 9: a sink implements only
encode/send): its queue in bytes, retry, watchdog and health are the runtime's."""

from __future__ import annotations

import threading
import time

from netmon import health
from netmon.config import Buffer
from netmon.retry import Backoff, Retry
from netmon.runtime.sinks import ManagedSink
from netmon.sinks.alerts import Delivery, alert_bytes
from netmon.sinks.alerts.lifecycle import Lifecycle
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
        assert wait_for(lambda: health.snapshot().get("alerts.hook.slow.errors", 0) >= 1, 5), "hang not cut off by timeout"
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


#: an explanation that makes one alert about 20 KiB, so a 64 KiB hook queue holds 3
LONG = "x" * (20 << 10)


def test_full_queue_drops_oldest_first_and_counts_it(tmp_path):
    receiver = HttpReceiver(port=free_port())
    s = sink(tmp_path, [{"kind": "webhook", "name": "tiny", "url": receiver.url}],
             hook_buffer={"max_bytes": 1 << 16, "when_full": "drop_oldest"}, backoff=0.05, backoff_max=0.1,
             resolve_after=1000)
    s.write(scored([finding(host="10.3.0.0", start=T0, explanation=LONG)], start=T0))
    assert wait_for(lambda: health.snapshot().get("alerts.hook.tiny.errors", 0) >= 1), "first delivery never tried"
    for i in range(1, 10):
        s.write(scored([finding(host=f"10.3.0.{i}", start=T0 + 60 * i, explanation=LONG)], start=T0 + 60 * i))
    dropped = health.snapshot().get("alerts.hook.tiny.dropped", 0)
    assert dropped == 7, f"expected 7 oldest alerts dropped from a queue of 3 (64 KiB), counted {dropped}"
    assert health.snapshot()["alerts.hook.tiny.queue_bytes"] <= 1 << 16, "the hook queue outgrew its byte bound"
    failed = health.snapshot()["alerts.hook.tiny.errors"]
    # an attempt already under way when its alert was dropped may still land: let it end first
    assert wait_for(lambda: health.snapshot()["alerts.hook.tiny.errors"] >= failed + 2)
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

    queue = ManagedSink("stuck", lambda: Delivery(stuck), Buffer(), size=alert_bytes,
                        retry=Retry(Backoff(0.05, 0.05)), hang_timeout=0.3, prefix="alerts.hook.stuck")
    alert = Lifecycle().step([finding()], 1_700_000_060.0)[0]
    queue.put(alert)
    assert queue.drain(5), "the watchdog did not free the queue from a stuck delivery"
    release.set()
    queue.close(1)
    snap = health.snapshot()
    assert snap.get("alerts.hook.stuck.hung") == 1, f"the abandoned attempt was not counted hung: {snap}"
    assert snap.get("alerts.hook.stuck.written") == 1 and len(calls) == 2, "the alert was not retried once after the hang"
