"""Every sink behind a bounded queue and its own thread, so a slow or broken sink never
stalls or ends the pipeline.

A sink plug-in only encodes and sends (``write(scored)``, ``close()``; networked sinks
retry their sends by :class:`netmon.retry.Backoff`, spooling to disk if they must lose
nothing). Here each sink gets:

* a queue bounded in bytes (``[sinks.buffer] max_bytes``, an estimate of the interval's
  arrays, strings and findings) and a policy for when it is full: ``block`` (the
  pipeline waits: nothing is lost, a replay stays exact) or ``drop_newest`` (the
  interval is dropped for this sink and counted: live collection never waits);
* isolation: an exception from ``write`` or ``close`` is counted and logged, the
  interval is skipped for that sink, and the service goes on;
* one thread per sink that builds, writes and closes it, so a sink may hold
  thread-bound resources (an SQLite connection);
* health, labelled by the sink's tag: ``sink.<tag>.{written,errors,dropped}`` and the
  gauges ``sink.<tag>.queue_bytes`` and ``sink.<tag>.queue_intervals``.
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
from netmon.config import Buffer

log = structlog.get_logger(__name__)

#: Bytes counted per host row for its host, group and role strings, and per finding.
ROW_OVERHEAD = 200
FINDING_BYTES = 600


def scored_bytes(scored: Scored) -> int:
    """Estimated memory one queued interval holds, bytes (its arrays, strings and findings)."""
    iv = scored.intervals
    arrays = sum(np.asarray(c).nbytes for c in iv.features.values())
    arrays += sum(np.asarray(c).nbytes for c in scored.scores.values())
    servers = sum(len(s) for s in iv.servers_by_host.values())
    findings = sum(FINDING_BYTES + len(f.explanation) for f in scored.findings)
    return arrays + ROW_OVERHEAD * (len(iv) + servers) + findings


class ManagedSink:
    """One sink plug-in behind a bounded queue and a thread; see the module docstring.

    ``build`` makes the sink, in the sink's own thread; an exception it raises is raised
    here (a sink that cannot start is an error at start, as before)."""

    def __init__(self, tag: str, build: Callable[[], Any], buffer: Buffer, config: Any = None) -> None:
        self.tag = tag
        self.sink: Any = None
        self.config = config
        self.buffer = buffer
        self._queue: deque[tuple[Scored, int]] = deque()
        self._bytes = 0
        self._busy = False
        self._closing = False
        self._cond = threading.Condition()
        for counter in ("written", "errors", "dropped"):
            health.count(f"sink.{tag}.{counter}", 0)  # present from the start: 0, not "no data"
        self._built = threading.Event()
        self._build_error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(build,), name=f"sink-{tag}", daemon=True)
        self._thread.start()
        self._built.wait()
        if self._build_error is not None:
            self._thread.join()
            raise self._build_error

    def put(self, scored: Scored) -> None:
        """Queue one interval for the sink; by ``when_full``, wait for room or drop it (counted)."""
        size = scored_bytes(scored)
        with self._cond:
            while self._queue and self._bytes + size > self.buffer.max_bytes:
                if self.buffer.when_full == "drop_newest":
                    health.count(f"sink.{self.tag}.dropped")
                    log.warning("sink queue full; interval dropped for this sink", sink=self.tag,
                                queue_bytes=self._bytes, max_bytes=self.buffer.max_bytes)
                    return
                self._cond.wait(0.5)
            self._queue.append((scored, size))
            self._bytes += size
            self._publish()
            self._cond.notify_all()

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every queued interval was handed to the sink; True when it was."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._queue or self._busy:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(0.5 if left is None else min(left, 0.5))
        return True

    def close(self) -> None:
        """Hand over what is queued, then close the sink and stop its thread (errors counted, not raised)."""
        self.drain()
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join()

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
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return
                scored, size = self._queue.popleft()
                self._busy = True
            try:
                self.sink.write(scored)
                health.count(f"sink.{self.tag}.written")
            except Exception as exc:  # noqa: BLE001 - isolation: one sink's failure never ends the service
                self._error("write", exc)
            with self._cond:
                self._busy = False
                self._bytes -= size
                self._publish()
                self._cond.notify_all()

    def _error(self, what: str, exc: BaseException) -> None:
        health.count(f"sink.{self.tag}.errors")
        log.error(f"sink {what} failed; the pipeline goes on", sink=self.tag, error=type(exc).__name__,
                  detail=str(exc)[:300])

    def _publish(self) -> None:
        health.gauge(f"sink.{self.tag}.queue_bytes", self._bytes)
        health.gauge(f"sink.{self.tag}.queue_intervals", len(self._queue))
