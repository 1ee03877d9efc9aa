"""The one retry policy: every networked delivery (the InfluxDB sender, each alert hook)
and every restart of a failed source waits by it, so they all back off the same way.

Exponential backoff with "equal jitter": after the n-th failure in a row the delay is
drawn from [ceiling/2, ceiling], the ceiling doubling from ``initial`` up to ``maximum``
seconds. Many collectors restarted together therefore do not retry in step, yet each
waits longer every time (and at least half the ceiling, so a flapping peer is not
hammered).

>>> policy = Backoff(initial=1.0, maximum=8.0)
>>> [policy.ceiling(n) for n in (1, 2, 3, 4, 5)]
[1.0, 2.0, 4.0, 8.0, 8.0]
>>> 2.0 <= policy.delay(3) <= 4.0
True
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Delays between attempts, in seconds; see the module docstring."""

    initial: float = 1.0
    maximum: float = 60.0

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum:
            raise ValueError(f"backoff needs 0 < initial ({self.initial}) <= maximum ({self.maximum})")

    def ceiling(self, failures: int) -> float:
        """The longest delay after ``failures`` (>= 1) failures in a row, seconds."""
        return min(self.maximum, self.initial * 2 ** min(max(failures, 1) - 1, 60))

    def delay(self, failures: int) -> float:
        """A jittered delay after ``failures`` failures in a row, seconds."""
        ceiling = self.ceiling(failures)
        return random.uniform(ceiling / 2, ceiling)


@dataclass(frozen=True)
class Retry:
    """How a managed sink (:mod:`netmon.runtime.sinks`) retries a failed write: after delays
    by ``backoff``, until the item has waited ``retry_for`` seconds, then it is given up."""

    backoff: Backoff = Backoff()
    retry_for: float = 3600.0

    def __post_init__(self) -> None:
        if not self.retry_for > 0:
            raise ValueError(f"retry_for ({self.retry_for}) must be > 0 seconds")
