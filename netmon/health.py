"""netmon's own health counters: packets, decode errors by reason, drops, backlog.

A process-wide, thread-safe set of monotonically increasing counters and gauges
that any stage may bump. Sinks (InfluxDB, Prometheus /metrics) read a snapshot;
nothing here reaches downstream. Names are dotted, e.g. ``decode.skip.truncated``,
``source.pcap.packets``, ``influx.spool.points``.

>>> reset()
>>> count("decode.skip.truncated", 3)
>>> count("decode.skip.truncated")
>>> snapshot()["decode.skip.truncated"]
4.0
"""

from __future__ import annotations

import threading

_lock = threading.Lock()
_counters: dict[str, float] = {}
_gauges: dict[str, float] = {}


def count(name: str, n: float = 1) -> None:
    """Add ``n`` to the counter ``name``."""
    with _lock:
        _counters[name] = _counters.get(name, 0.0) + float(n)


def gauge(name: str, value: float) -> None:
    """Set the gauge ``name`` (a level such as a spool backlog) to ``value``."""
    with _lock:
        _gauges[name] = float(value)


def snapshot() -> dict[str, float]:
    """All counters and gauges, by name."""
    with _lock:
        return {**_counters, **_gauges}


def counters_with_prefix(prefix: str) -> dict[str, float]:
    """Counters whose name starts with ``prefix``, the prefix removed."""
    with _lock:
        return {k[len(prefix):]: v for k, v in _counters.items() if k.startswith(prefix)}


def reset() -> None:
    """Forget every counter and gauge (tests, and a fresh replay)."""
    with _lock:
        _counters.clear()
        _gauges.clear()
