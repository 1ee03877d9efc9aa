"""Plug-in names: the one place where a config ``type = "..."`` meets a module.

A source or sink plug-in module exposes ``Config`` (a pydantic model with a ``type``
literal; :func:`netmon.config.settings_model` makes the config's discriminated union
of them), ``check(config) -> list[str]`` (what would keep it from running: a missing
interface, a busy port, an unreadable credential; ``netmon check-config`` and a SIGHUP
reload call it before anything starts) and ``build(config, settings)``, which returns
the stage object. Plug-in modules import their heavy dependencies (pyroute2, the
InfluxDB client) only when they build, so ``netmon --help`` imports none of them.

Interfaces, by kind (the pipeline, :mod:`netmon.runtime`, does the rest: threads,
restarts, watermarks, queues, retries' pacing, isolation, health labels):

* source: ``batches() -> Iterator[Frames | Observations | Watermark]`` and
  ``close()`` (callable from another thread: ``batches()`` then ends); optionally
  ``stop()`` (drain, then end) and ``lateness`` (seconds its records may trail
  newer ones). A config with ``paths`` is a replay: it ends, and is not restarted;
* sink: ``write(scored: Scored) -> None`` (encode and hand over; a networked sink
  sends from its own thread, paced by :class:`netmon.retry.Backoff`) and ``close()``;
  its ``Config`` derives from :class:`netmon.config.SinkOptions` (``[sinks.buffer]``);
* detector: ``score(intervals) -> DetectorOutput`` (see ``netmon.detect.engine``),
  and for learning detectors ``learn(intervals, normal_mask)``, ``state()``,
  ``load_state(state)``.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

SOURCES: dict[str, str] = {
    "pcap": "netmon.sources.pcap",
    "capture": "netmon.sources.capture",
    "ebpf": "netmon.sources.ebpf",
    "netflow": "netmon.sources.netflow",
    "sflow": "netmon.sources.sflow",
}

SINKS: dict[str, str] = {
    "store": "netmon.sinks.store",
    "influx": "netmon.sinks.influx",
    "alerts": "netmon.sinks.alerts",
    "metrics": "netmon.sinks.metrics",
    "evidence": "netmon.sinks.evidence",
}

DETECTORS: dict[str, str] = {
    "rules": "netmon.detect.rules",
    "population": "netmon.detect.population",
    "baseline": "netmon.detect.baseline",
    "drift": "netmon.detect.drift",
    "hosts": "netmon.detect.hosts",
}

#: Logs between collectors and scorers (``[cluster] transport``, ``netmon run --role``): a module
#: with ``Link(cluster, name, stop)``, ``ensure(link)``, ``Publisher(link).send(messages)``,
#: ``Feed(link)``, ``Leases(link, me)``, ``States(link)`` and ``Ledger(link, me)`` (see
#: :mod:`netmon.transport.jetstream`).
TRANSPORTS: dict[str, str] = {
    "jetstream": "netmon.transport.jetstream",
}

KINDS: dict[str, dict[str, str]] = {"source": SOURCES, "sink": SINKS, "detector": DETECTORS, "transport": TRANSPORTS}


class UnknownPlugin(ValueError):
    """A config names a plug-in type that does not exist."""


def plugin(kind: str, name: str) -> ModuleType:
    """The module registered as ``name`` for ``kind`` ("source", "sink", "detector")."""
    table = KINDS[kind]
    if name not in table:
        allowed = ", ".join(sorted(table))
        raise UnknownPlugin(f"unknown {kind} type {name!r}; allowed: {allowed}")
    return importlib.import_module(table[name])


def check(kind: str, config: Any) -> list[str]:
    """What would keep the ``kind`` plug-in configured by ``config`` from running; empty when it can."""
    return list(plugin(kind, config.type).check(config))
