"""One delivery thread and bounded queue per hook, so a slow hook never holds up collection.

:meth:`HookWorker.submit` returns at once. A full queue drops its oldest alert
(counted). A failed delivery is retried by the one retry policy of every networked
sink (:class:`netmon.retry.Backoff`: ``backoff`` doubling up to ``backoff_max`` seconds,
jittered) until it succeeds or is older than ``retry_for`` seconds; the head of the queue is retried first so a hook sees an alert's firing
before its resolve. A hook that hangs is cut off by its own I/O timeout (every hook
takes ``timeout`` seconds) and, failing that, abandoned by a watchdog after
``hang_timeout`` seconds. Counters in ``netmon.health``:
``alerts.hook.<name>.{sent,failed,retried,dropped,expired,hung,lost}`` and the gauge
``alerts.hook.<name>.queue``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from netmon import health
from netmon.retry import Backoff
from netmon.sinks.alerts.model import Alert

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Retry:
    """Retry policy: seconds of first backoff, its cap, and how long to keep trying."""

    backoff: float = 1.0
    backoff_max: float = 60.0
    retry_for: float = 3600.0

    @property
    def policy(self) -> Backoff:
        return Backoff(self.backoff, max(self.backoff, self.backoff_max))


class HookWorker:
    """Delivers alerts to one hook from a daemon thread; see the module docstring."""

    def __init__(self, name: str, deliver: Callable[[Alert], None], size: int = 1000, retry: Retry = Retry(),
                 hang_timeout: float = 60.0) -> None:
        self.name = name
        self.hang_timeout = hang_timeout
        self.deliver = deliver
        self.retry = retry
        self.queue: deque[tuple[float, Alert]] = deque()
        self.size = size
        self.cond = threading.Condition()
        self.stopping = False
        self.busy = False
        self.thread = threading.Thread(target=self._run, name=f"alert-hook-{name}", daemon=True)
        self.thread.start()

    def _count(self, what: str, n: float = 1) -> None:
        health.count(f"alerts.hook.{self.name}.{what}", n)

    def submit(self, alert: Alert) -> None:
        """Queue an alert; never blocks (drops the oldest when full)."""
        with self.cond:
            if len(self.queue) >= self.size:
                _, dropped = self.queue.popleft()
                self._count("dropped")
                log.warning("alert hook queue full, dropped oldest", hook=self.name, alert=dropped.id)
            self.queue.append((time.monotonic(), alert))
            health.gauge(f"alerts.hook.{self.name}.queue", len(self.queue))
            self.cond.notify()

    def _run(self) -> None:
        policy, failures = self.retry.policy, 0
        while True:
            with self.cond:
                while not self.queue and not self.stopping:
                    self.cond.wait()
                if self.stopping or not self.queue:
                    return
                queued, alert = self.queue[0]
                self.busy = True
            try:
                self._attempt(alert)
            except Exception as exc:  # every hook failure is counted, logged and retried
                self._count("failed")
                log.warning("alert hook failed", hook=self.name, alert=alert.id, change=alert.event, error=str(exc))
                if time.monotonic() - queued > self.retry.retry_for:
                    self._pop(alert, "expired")
                    failures = 0
                    continue
                self._count("retried")
                failures += 1
                with self.cond:
                    self.busy = False
                    if self.stopping:
                        return
                    self.cond.wait(policy.delay(failures))
                continue
            self._pop(alert, "sent")
            failures = 0

    def _attempt(self, alert: Alert) -> None:
        """One delivery, abandoned (and counted ``hung``) if it outlasts ``hang_timeout``.

        Hooks cut their own I/O off after their ``timeout``; this watchdog covers what
        a per-read timeout cannot (a receiver trickling one byte at a time). An
        abandoned attempt's thread is left to end on its own."""
        outcome: list[BaseException | None] = []
        attempt = threading.Thread(target=_capture, args=(self.deliver, alert, outcome), daemon=True)
        attempt.start()
        attempt.join(self.hang_timeout)
        if attempt.is_alive():
            self._count("hung")
            raise TimeoutError(f"delivery still running after {self.hang_timeout:g} s; abandoned")
        if outcome and outcome[0] is not None:
            raise outcome[0]

    def _pop(self, alert: Alert, outcome: str) -> None:
        self._count(outcome)
        with self.cond:
            if self.queue and self.queue[0][1] is alert:
                self.queue.popleft()
            self.busy = False
            health.gauge(f"alerts.hook.{self.name}.queue", len(self.queue))
            self.cond.notify_all()

    def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the queue to empty; True when it did."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.queue or self.busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(min(left, 0.05))
        return True

    def close(self, timeout: float) -> None:
        """Deliver what is queued for up to ``timeout`` seconds, then stop; leftovers are counted lost."""
        self.drain(timeout)
        with self.cond:
            self.stopping = True
            left = len(self.queue)
            self.cond.notify_all()
        if left:
            self._count("lost", left)
            log.error("alert hook closed with undelivered alerts", hook=self.name, undelivered=left)
        self.thread.join(timeout=1.0)


def _capture(deliver: Callable[[Alert], None], alert: Alert, outcome: list[BaseException | None]) -> None:
    try:
        deliver(alert)
    except BaseException as exc:  # handed to the worker thread, which counts and retries
        outcome.append(exc)
    else:
        outcome.append(None)
