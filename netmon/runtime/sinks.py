"""Every sink behind a bounded queue and its own thread, so a slow or broken sink never
stalls or ends the pipeline.

A sink plug-in only encodes and sends (``write(item)``, ``close()``). Here each sink gets:

* a queue bounded in bytes (``[sinks.buffer] max_bytes``, an estimate of what each item
  holds in memory: an interval's arrays, strings and findings, an alert's text) and a
  policy for when it is full: ``block`` (the producer waits: nothing is lost, a replay
  stays exact), ``drop_newest`` (the new item is dropped and counted: live collection
  never waits) or ``drop_oldest`` (the oldest queued item makes room, counted: an
  alert hook keeps the latest news);
* the one retry policy (:class:`netmon.retry.Retry`): a failed write is tried again,
  in order, after a :class:`netmon.retry.Backoff` delay until it succeeds or has been
  queued ``retry_for`` seconds (then it is given up, counted ``expired``); without
  one, a failed write is counted and the item skipped;
* isolation: an exception from ``write`` or ``close`` is counted and logged and the
  service goes on; an attempt outlasting ``hang_timeout`` seconds (a receiver that
  trickles one byte at a time past every I/O timeout) is abandoned and counted ``hung``;
* one thread per sink that builds, writes and closes it, so a sink may hold
  thread-bound resources (an SQLite connection);
* health under one prefix (``sink.<tag>`` for the pipeline's sinks, ``alerts.hook.<name>``
  for alert hooks): counters ``written``, ``errors`` (failed attempts), ``dropped``,
  ``hung``, ``lost`` (still queued when ``close`` gave up), with a retry policy also
  ``retried`` and ``expired``, and the gauges ``queue_bytes`` and ``queue_items``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
import structlog

from netmon import health
from netmon.batch import Scored
from netmon.config import Buffer, redact
from netmon.retry import Retry

log = structlog.get_logger(__name__)

#: Bytes counted per host row for its host, group and role strings, and per finding.
ROW_OVERHEAD = 200
FINDING_BYTES = 600
#: Counters every managed sink shows from its start (0, not "no data").
COUNTERS = ("written", "errors", "dropped", "hung", "lost")
#: Counters a managed sink with a retry policy shows as well.
RETRY_COUNTERS = ("retried", "expired")


def scored_bytes(scored: Scored) -> int:
    """Estimated memory one queued interval holds, bytes (its arrays, strings and findings)."""
    iv = scored.intervals
    arrays = sum(np.asarray(c).nbytes for c in iv.features.values())
    arrays += sum(np.asarray(c).nbytes for c in scored.scores.values())
    servers = sum(len(s) for s in iv.servers_by_host.values())
    findings = sum(FINDING_BYTES + len(f.explanation) for f in scored.findings)
    return arrays + ROW_OVERHEAD * (len(iv) + servers) + findings


class _Entry:
    """One queued item, its estimated size (bytes) and when it was queued (monotonic seconds)."""

    __slots__ = ("item", "size", "queued")

    def __init__(self, item: Any, size: int) -> None:
        self.item, self.size, self.queued = item, size, time.monotonic()


class ManagedSink:
    """One sink plug-in behind a bounded queue and a thread; see the module docstring.

    ``build`` makes the sink, in the sink's own thread; an exception it raises is raised
    here (a sink that cannot start is an error at start, as before). ``size`` estimates
    an item's bytes (default: a scored interval's)."""

    def __init__(self, tag: str, build: Callable[[], Any], buffer: Buffer, config: Any = None, *,
                 size: Callable[[Any], int] = scored_bytes, retry: Retry | None = None,
                 hang_timeout: float | None = None, prefix: str = "") -> None:
        self.tag = tag
        self.sink: Any = None
        self.config = config
        self.buffer = buffer
        self.size = size
        self.retry = retry
        self.hang_timeout = hang_timeout
        self.prefix = prefix or f"sink.{tag}"
        self._queue: deque[_Entry] = deque()
        self._bytes = 0
        self._in_flight: _Entry | None = None  # the queued item the sink thread is attempting now
        self._closing = False
        self._closing_attempt: _Entry | None = None  # the queued item being attempted when close began
        self._abandoned: _Entry | None = None  # that attempt, when close gave up waiting for it
        self._cond = threading.Condition()
        for counter in COUNTERS + (RETRY_COUNTERS if retry else ()):
            health.count(f"{self.prefix}.{counter}", 0)
        self._built = threading.Event()
        self._build_error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(build,), name=f"sink-{tag}", daemon=True)
        self._thread.start()
        self._built.wait()
        if self._build_error is not None:
            self._thread.join()
            raise self._build_error

    def put(self, item: Any) -> None:
        """Queue one item for the sink; by ``when_full``, wait for room or drop an item (counted)."""
        entry = _Entry(item, self.size(item))
        with self._cond:
            while self._queue and self._bytes + entry.size > self.buffer.max_bytes:
                if self.buffer.when_full == "drop_newest":
                    self._dropped("newest")
                    return
                if self.buffer.when_full == "drop_oldest":
                    # an attempt in flight is the sink's already: dropped, it would count twice (dropped, then written)
                    oldest = 1 if self._queue[0] is self._in_flight else 0
                    if oldest == len(self._queue):
                        break  # only that attempt is queued; its bytes are held until it ends anyway
                    self._remove(self._queue[oldest])
                    self._dropped("oldest")
                    continue
                self._cond.wait(0.5)
            self._queue.append(entry)
            self._bytes += entry.size
            self._publish()
            self._cond.notify_all()

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every queued item was handed to the sink (or given up); True when it was."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._queue or self._in_flight is not None:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(0.5 if left is None else min(left, 0.5))
        return True

    def close(self, timeout: float | None = None) -> None:
        """Hand over what is queued (for up to ``timeout`` seconds; None = all of it), then close
        the sink and stop its thread; items still queued are counted ``lost`` here, before this
        returns, and so is an attempt still in flight a second later (a hung attempt must not
        hold shutdown): such an attempt that then succeeds is not counted ``written`` as well,
        and one that ends within that second counts as what it was (written, or lost)."""
        self.drain(timeout)
        with self._cond:
            self._closing = True
            self._give_up()
        self._thread.join(None if timeout is None else 1.0)
        with self._cond:
            if self._in_flight is not None and self._closing_attempt is not None:
                self._abandoned = self._closing_attempt
                health.count(f"{self.prefix}.lost")
                log.error("sink closed with a write still running; its item counted lost", sink=self.tag)

    def _run(self, build: Callable[[], Any]) -> None:
        try:
            self.sink = build()
        except BaseException as exc:  # handed to the constructor's thread, which raises it
            self._build_error = exc
            return
        finally:
            self._built.set()
        try:
            self._serve()
        finally:
            try:
                self.sink.close()
            except Exception as exc:  # noqa: BLE001 - a sink failing at close must not hide the others' close
                self._error("close", exc)

    def _serve(self) -> None:
        failures = 0
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if self._closing:
                    return
                entry = self._in_flight = self._queue[0]
            done = self._attempt(entry.item)
            with self._cond:
                self._in_flight = None
                if entry is self._abandoned:
                    return  # close counted it lost and returned
                if done:
                    health.count(f"{self.prefix}.written")
                elif self._closing:
                    if entry is self._closing_attempt:
                        health.count(f"{self.prefix}.lost")  # the attempt in flight at close failed
                    continue
                if not done and self._retrying(entry):
                    failures += 1
                    health.count(f"{self.prefix}.retried")
                    self._cond.notify_all()
                    end = time.monotonic() + self.retry.backoff.delay(failures)
                    while not self._closing and time.monotonic() < end:
                        self._cond.wait(end - time.monotonic())
                    continue
                if not done and self.retry is not None:
                    health.count(f"{self.prefix}.expired")
                    log.error("sink gave up an item after retrying it", sink=self.tag, retry_for=self.retry.retry_for)
                failures = 0
                if self._queue and self._queue[0] is entry:  # close may have cleared the queue meanwhile
                    self._remove(entry)
                self._cond.notify_all()

    def _retrying(self, entry: _Entry) -> bool:
        """Whether a failed item is tried again (retry on, and it is not yet ``retry_for`` seconds old)."""
        return self.retry is not None and time.monotonic() - entry.queued <= self.retry.retry_for

    def _attempt(self, item: Any) -> bool:
        """One write; True when it succeeded. With ``hang_timeout``, the write runs in a thread of
        its own and is abandoned (counted ``hung``, left to end on its own) when it outlasts it."""
        try:
            if self.hang_timeout is None:
                self.sink.write(item)
            else:
                _watched(self.sink.write, item, self.hang_timeout, f"{self.prefix}.hung")
        except Exception as exc:  # noqa: BLE001 - isolation: one sink's failure never ends the service
            self._error("write", exc)
            return False
        return True

    def _remove(self, entry: _Entry) -> None:
        self._queue.remove(entry)
        self._bytes -= entry.size
        self._publish()

    def _give_up(self) -> None:
        """At close: what is still queued is lost for this sink (counted and logged), except an
        attempt in flight, counted by how it ends (see :meth:`close`); holds ``_cond``."""
        inflight = any(e is self._in_flight for e in self._queue)
        self._closing_attempt = self._in_flight if inflight else None
        waiting = len(self._queue) - inflight
        if waiting:
            health.count(f"{self.prefix}.lost", waiting)
            log.error("sink closed with items undelivered", sink=self.tag, undelivered=waiting)
        if self._queue:
            self._queue.clear()
            self._bytes = 0
            self._publish()
        self._cond.notify_all()

    def _dropped(self, which: str) -> None:
        health.count(f"{self.prefix}.dropped")
        log.warning(f"sink queue full; {which} item dropped for this sink", sink=self.tag,
                    queue_bytes=self._bytes, max_bytes=self.buffer.max_bytes)

    def _error(self, what: str, exc: BaseException) -> None:
        health.count(f"{self.prefix}.errors")
        log.error(f"sink {what} failed; the pipeline goes on", sink=self.tag, error=type(exc).__name__,
                  detail=redact(str(exc))[:300])

    def _publish(self) -> None:
        health.gauge(f"{self.prefix}.queue_bytes", self._bytes)
        health.gauge(f"{self.prefix}.queue_items", len(self._queue))


def _watched(write: Callable[[Any], None], item: Any, timeout: float, hung: str) -> None:
    """``write(item)`` in a thread of its own; TimeoutError (and ``hung`` counted) when it
    has not ended after ``timeout`` seconds."""
    outcome: list[BaseException | None] = []

    def attempt() -> None:
        try:
            write(item)
        except BaseException as exc:  # handed to the sink's thread, which counts and retries
            outcome.append(exc)
        else:
            outcome.append(None)

    thread = threading.Thread(target=attempt, name="sink-attempt", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        health.count(hung)
        raise TimeoutError(f"write still running after {timeout:g} s; abandoned")
    if outcome and outcome[0] is not None:
        raise outcome[0]
