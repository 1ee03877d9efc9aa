"""Sources, each in its own thread, feeding one bounded queue; a source that fails is restarted.

A source plug-in only yields batches (see :mod:`netmon.registry`). Here every source
gets a tag (its health label, e.g. ``netflow`` or ``capture1``), a thread that puts
``(supervised source, item)`` on the shared queue, and supervision: when ``batches()`` raises, the
failure is counted (``pipeline.source.<tag>.failed``) and logged, the source is closed
and, if it is live, built again from its config after a delay of the one retry policy
(:class:`netmon.retry.Backoff`), so one bad datagram or a flapping interface never ends
the run and the other sources keep going. A replay source (one that reads ``paths``)
is not restarted: reading its files again would count their rows twice. A run of
replays only reads them in the pipeline's own thread (:meth:`Supervised.read`), with
the same failure accounting.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import structlog

from netmon import health
from netmon.batch import Frames, Observations, Watermark
from netmon.retry import Backoff

log = structlog.get_logger(__name__)

Item = Frames | Observations | Watermark


@dataclass(frozen=True)
class Ended:
    """Put on the queue, after everything else of the source, when its thread ends (its input
    is exhausted, it was stopped, or a replay failed)."""


ENDED = Ended()


class Supervised:
    """One source plug-in in its own thread; see the module docstring.

    ``build`` makes a fresh source object from the same config (for restarts);
    ``source`` is the one already built (so build errors surface when the run starts).
    """

    def __init__(self, tag: str, config: Any, source: Any, build: Callable[[], Any], lateness: float,
                 replay: bool, backoff: Backoff) -> None:
        self.tag = tag
        self.config = config
        self.source = source
        self.lateness = lateness
        self.replay = replay
        self._build = build
        self._backoff = backoff
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.restarts = 0
        self.failed = False  # ended by a failure it was not restarted after (a replay)
        health.count(f"pipeline.source.{tag}.failed", 0)  # present from the start: 0, not "no data"

    def start(self, out: queue.Queue[tuple[Supervised, Item | Ended]]) -> None:
        """Run the source in its own thread, its items going to ``out``."""
        self._thread = threading.Thread(target=self._run, args=(out,), name=f"source-{self.tag}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ask the source to drain and end (only flags: safe in a signal handler)."""
        self._stop.set()
        source = self.source
        if source is not None:
            getattr(source, "stop", source.close)()

    def close(self) -> None:
        """Stop now and release the source (sockets, rings, attached programs)."""
        self._stop.set()
        if self.source is not None:
            self.source.close()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def read(self) -> Iterator[Item]:
        """The source's items, read in the caller's thread: for a replay, whose input is bounded
        and never read twice. A failure of the source (not of whoever consumes the items) is
        counted and logged as in a thread, and ends the items with ``failed`` set."""
        try:
            yield from self.source.batches()
        except Exception as exc:  # noqa: BLE001 - a source's failure must not end the run
            self._failed(exc)
            self.failed = True

    def _put(self, out: queue.Queue[tuple[Supervised, Item | Ended]], item: Item | Ended) -> bool:
        """Put ``item`` on ``out``, waiting while it is full; False when stopped meanwhile."""
        while True:
            try:
                out.put((self, item), timeout=0.2)
                return True
            except queue.Full:
                if self._stop.is_set() and not isinstance(item, Ended):
                    return False

    def _run(self, out: queue.Queue[tuple[Supervised, Item | Ended]]) -> None:
        failures = 0
        try:
            while self.source is not None:
                try:
                    for item in self.source.batches():
                        if not self._put(out, item):
                            return
                        failures = 0
                    return  # the input ended, or the source was stopped
                except Exception as exc:  # noqa: BLE001 - a source's failure must not end the run
                    failures += 1
                    self._failed(exc)
                if self.replay or self._stop.is_set():
                    self.failed = self.replay
                    return
                self._restart(failures)
        finally:
            self._put(out, ENDED)

    def _failed(self, exc: BaseException) -> None:
        health.count(f"pipeline.source.{self.tag}.failed")
        log.error("source failed", source=self.tag, error=type(exc).__name__, detail=str(exc)[:300],
                  restart="no (a replay is not read twice)" if self.replay else "yes, with backoff", exc_info=exc)
        try:
            self.source.close()
        except Exception as close_exc:  # noqa: BLE001 - closing a broken source may fail too
            log.warning("closing the failed source failed", source=self.tag, error=str(close_exc)[:200])

    def _restart(self, failures: int) -> None:
        """Build the source again after a backoff delay; keep trying until built or stopped."""
        self.source = None
        while not self._stop.wait(self._backoff.delay(failures)):
            try:
                self.source = self._build()
            except Exception as exc:  # noqa: BLE001 - e.g. the interface is still down
                failures += 1
                health.count(f"pipeline.source.{self.tag}.failed")
                log.error("source restart failed; trying again", source=self.tag, error=type(exc).__name__,
                          detail=str(exc)[:300])
                continue
            if self._stop.is_set():  # stopped while building: release it, do not run it
                self.source.close()
                self.source = None
                return
            self.restarts += 1
            health.count(f"pipeline.source.{self.tag}.restarts")
            log.info("source restarted", source=self.tag, restarts=self.restarts)
            return
