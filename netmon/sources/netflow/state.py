"""Bounded per-exporter state: the most recently heard exporters are remembered, the rest expire.

A collector open to any sender (the default allowlist) must not grow a table entry,
or a health counter, per source address it ever heard from: a spoofed-source flood
would take memory and make ``/metrics`` unreadable. :class:`Recent` keeps the
``limit`` most recently used keys (older ones expire, counted); :class:`PerExporter`
gives per-exporter health counters to that many exporters and sums the rest under
``other``, so the number of counter names is bounded too.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TypeVar

from netmon import health

K = TypeVar("K")
V = TypeVar("V")

#: Exporters (or sFlow agents) whose state is kept; beyond that the least recently heard expire.
MAX_EXPORTERS = 4096


class Recent(OrderedDict[K, V]):
    """A dict that keeps the ``limit`` most recently written keys; expiries count as ``<counter>``.

    Write with :meth:`put` (plain item assignment does not expire anything).
    """

    def __init__(self, limit: int, counter: str) -> None:
        super().__init__()
        self.limit = limit
        self.counter = counter

    def put(self, key: K, value: V) -> V:
        """Set ``key`` (now the most recent) and expire the oldest beyond the limit; returns ``value``."""
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.limit:
            self.popitem(last=False)
            health.count(self.counter)
        return value


class PerExporter:
    """Health counters per exporter, ``<prefix>.<address>.<name>``, for at most ``limit`` exporters.

    The first ``limit`` exporters get their own counters; later ones are counted
    under ``<prefix>.other.<name>``, so a flood of spoofed senders adds no names.
    """

    def __init__(self, prefix: str, limit: int = MAX_EXPORTERS) -> None:
        self.prefix = prefix
        self.limit = limit
        self._named: set[str] = set()

    def count(self, exporter: str, name: str, n: float = 1) -> None:
        if exporter not in self._named and len(self._named) < self.limit:
            self._named.add(exporter)
        who = exporter if exporter in self._named else "other"
        health.count(f"{self.prefix}.{who}.{name}", n)
