"""Event time across sources: one watermark per source, windows close at the minimum.

Each source promises, in event time (UNIX seconds), that nothing older than its
watermark will follow: its newest row minus its own ``lateness`` (a flow exporter
reports a flow up to its active timeout after it began; a capture stamps packets as
they arrive), or an explicit :class:`~netmon.batch.Watermark`. A window may close only
when every live source has passed its end, so a capture's "now - 0.2 s" cannot make
a flow source's records late. A live source that has said nothing for ``stall_timeout``
seconds of wall time is left out of the minimum (counted ``pipeline.source.<tag>.stalled``)
until it speaks again, so one silent or dead source cannot hold every window open;
a replay source is never declared stalled (it ends instead).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from netmon import health

log = structlog.get_logger(__name__)


def _monotonic() -> float:
    return time.monotonic()  # looked up at each call


@dataclass
class Mark:
    """One source's progress: its watermark (event time, s) and when it last spoke (s on the clock's ``now``)."""

    lateness: float
    live: bool
    watermark: float = -math.inf
    heard: float = 0.0
    stalled: bool = False


class Clock:
    """Per-source watermarks; :meth:`minimum` is where windows may close. Silence is measured
    on ``now`` (s): wall time by default; a scorer reading a log measures it on the log's time."""

    def __init__(self, stall_timeout: float = 30.0, now: Callable[[], float] | None = None) -> None:
        self.stall_timeout = stall_timeout
        self.now = now or _monotonic
        self.marks: dict[str, Mark] = {}

    def add(self, tag: str, lateness: float, live: bool) -> None:
        """Start following source ``tag``; ``lateness`` seconds its rows may trail its newest row."""
        self.marks[tag] = Mark(lateness=lateness, live=live, heard=self.now())

    def set_lateness(self, tag: str, lateness: float) -> None:
        """A reload changed source ``tag``'s lateness (its rows from now on count with it)."""
        if tag in self.marks:
            self.marks[tag].lateness = lateness

    def remove(self, tag: str) -> None:
        """Source ``tag`` ended (a replay read to its end) or was removed by a reload."""
        self.marks.pop(tag, None)

    def rows(self, tag: str, newest: float) -> None:
        """Source ``tag`` delivered rows up to event time ``newest``."""
        mark = self._heard(tag)
        mark.watermark = max(mark.watermark, newest - mark.lateness)

    def watermark(self, tag: str, time_: float) -> None:
        """Source ``tag`` promised nothing before ``time_`` follows."""
        mark = self._heard(tag)
        mark.watermark = max(mark.watermark, time_)

    def heard(self, tag: str) -> None:
        """Source ``tag`` is alive (it delivered something with no time, e.g. an empty batch)."""
        self._heard(tag)

    def minimum(self) -> float:
        """The event time every followed source has passed; -inf while any has said nothing
        yet, or when every one is stalled (nothing can be promised then)."""
        now = self.now()
        marks = []
        for tag, mark in self.marks.items():
            if mark.live and now - mark.heard > self.stall_timeout:
                if not mark.stalled:
                    mark.stalled = True
                    health.count(f"pipeline.source.{tag}.stalled")
                    log.warning("source silent; windows no longer wait for it", source=tag,
                                seconds=round(now - mark.heard, 1))
                continue
            marks.append(mark.watermark)
        return min(marks, default=-math.inf)

    def _heard(self, tag: str) -> Mark:
        mark = self.marks[tag]
        mark.heard = self.now()
        if mark.stalled:
            mark.stalled = False
            log.info("source speaks again; windows wait for it", source=tag)
        return mark
