"""Plug-in names: the one place where a config ``type = "..."`` meets a module.

A plug-in module exposes ``Config`` (a pydantic model with a ``type`` literal,
validated from its TOML table) and ``build(config, context)``, which returns the
stage object. Modules are imported only when named, so ``netmon --help`` and a
pcap replay never import pyroute2 or the InfluxDB client.

Interfaces, by kind:

* source: ``batches() -> Iterator[Frames | Observations | Watermark]`` and
  ``close()`` (callable from another thread: ``batches()`` then ends); optionally
  ``lateness`` (seconds its records may trail newer ones);
* sink: ``write(scored: Scored) -> None`` and ``close()``;
* detector: ``score(intervals) -> DetectorOutput`` (see ``netmon.detect.engine``),
  and for learning detectors ``learn(intervals, normal_mask)``, ``state()``,
  ``load_state(state)``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

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
}

DETECTORS: dict[str, str] = {
    "rules": "netmon.detect.rules",
    "population": "netmon.detect.population",
    "baseline": "netmon.detect.baseline",
    "drift": "netmon.detect.drift",
    "hosts": "netmon.detect.hosts",
}

KINDS: dict[str, dict[str, str]] = {"source": SOURCES, "sink": SINKS, "detector": DETECTORS}


class UnknownPlugin(ValueError):
    """A config names a plug-in type that does not exist."""


def plugin(kind: str, name: str) -> ModuleType:
    """The module registered as ``name`` for ``kind`` ("source", "sink", "detector")."""
    table = KINDS[kind]
    if name not in table:
        allowed = ", ".join(sorted(table))
        raise UnknownPlugin(f"unknown {kind} type {name!r}; allowed: {allowed}")
    return importlib.import_module(table[name])
