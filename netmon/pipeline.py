"""Wires the stages named in the config and runs batches through them.

    sources -> decode -> aggregate -> detect -> sinks

Sources yield :class:`~netmon.batch.Frames` (raw frames, decoded here),
:class:`~netmon.batch.Observations` (already decoded, e.g. flow records) or
:class:`~netmon.batch.Watermark` (time moves on, nothing arrived). Windows close in
event time, so a replay gives the same answer every time, however fast it runs.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import structlog

from netmon import health, registry
from netmon.aggregate import Aggregator
from netmon.batch import Finding, Frames, Observations, Scored, Watermark
from netmon.config import Settings, plugin_config
from netmon.decode.frames import decode_with_index
from netmon.detect.engine import Engine

log = structlog.get_logger("netmon.pipeline")

Item = Frames | Observations | Watermark


@dataclass
class Stages:
    """Everything one run needs, built from the config."""

    sources: list[Any]
    aggregator: Aggregator
    engine: Engine
    sinks: list[Any]

    @property
    def frame_sinks(self) -> list[Any]:
        """The ``frames(frames, rows, index)`` methods of sinks that keep raw packets (evidence)."""
        return [keep for keep in (getattr(sink, "frames", None) for sink in self.sinks) if keep is not None]


@dataclass
class Summary:
    """What a run saw: intervals scored and every finding, for the command's report."""

    intervals: int = 0
    findings: list[Finding] = field(default_factory=list)
    worst: dict[str, float] = field(default_factory=dict)


def build_plugin(kind: str, table: dict[str, Any], settings: Settings) -> Any:
    """One source or sink from its config table."""
    module = registry.plugin(kind, table["type"])
    return module.build(plugin_config(kind, table), settings)


def make_aggregator(settings: Settings, sources: list[Any]) -> Aggregator:
    """The aggregate stage for these sources.

    A source whose records trail real time (flow exporters report a flow when it
    ends) declares ``lateness`` in seconds; windows stay open that long so its
    records are counted, not dropped as late.
    """
    aggregate = settings.aggregate
    lateness = max([aggregate.lateness, *(float(getattr(s, "lateness", 0.0)) for s in sources)])
    if lateness > aggregate.lateness:
        aggregate = aggregate.model_copy(update={"lateness": lateness})
    return Aggregator(settings.campus, aggregate)


def build(settings: Settings, restore: bool = True) -> Stages:
    """Every stage named in ``settings``."""
    sources = [build_plugin("source", t, settings) for t in settings.sources]
    return Stages(
        sources=sources,
        aggregator=make_aggregator(settings, sources),
        engine=Engine(settings.detect, restore=restore),
        sinks=[build_plugin("sink", t, settings) for t in settings.sinks],
    )


def merged(sources: list[Any], stop: threading.Event) -> Iterator[Item]:
    """Items of every source; several sources run in threads into one queue."""
    if len(sources) == 1:
        yield from sources[0].batches()
        return
    items: queue.Queue[Item | None] = queue.Queue(maxsize=64)

    def pump(source: Any) -> None:
        try:
            for item in source.batches():
                if stop.is_set():
                    break
                items.put(item)
        except Exception:
            log.exception("source failed", source=type(source).__module__)
            health.count("source.failed")
        finally:
            items.put(None)

    threads = [threading.Thread(target=pump, args=(s,), daemon=True) for s in sources]
    for thread in threads:
        thread.start()
    running = len(threads)
    while running:
        item = items.get()
        if item is None:
            running -= 1
        else:
            yield item


def deliver(stages: Stages, scored: Scored, summary: Summary | None = None) -> None:
    """Hand one scored interval to every sink (and count it in ``summary``)."""
    summary = summary if summary is not None else Summary()
    summary.intervals += 1
    summary.findings.extend(scored.findings)
    for finding in scored.findings:
        summary.worst[finding.host] = max(summary.worst.get(finding.host, 0.0), finding.score)
    for sink in stages.sinks:
        sink.write(scored)


def run_items(stages: Stages, items: Iterable[Item]) -> Summary:
    """Push items through decode, aggregate, detect and the sinks; flush at the end."""
    summary = Summary()
    try:
        for item in items:
            if isinstance(item, Watermark):
                closed = stages.aggregator.advance(item.time)
            elif isinstance(item, Frames):
                rows, index = decode_with_index(item)
                for keep in stages.frame_sinks:
                    keep(item, rows, index)
                closed = stages.aggregator.add(rows)
            else:
                closed = stages.aggregator.add(item.rows)
            for intervals in closed:
                deliver(stages, stages.engine.process(intervals), summary)
        for intervals in stages.aggregator.flush():
            deliver(stages, stages.engine.process(intervals), summary)
    finally:
        stages.engine.save()
        for sink in stages.sinks:
            sink.close()
    return summary


def run(stages: Stages, stop: threading.Event | None = None) -> Summary:
    """Run every source to its end (a replay) or until ``stop`` is set (live)."""
    stop = stop or threading.Event()
    try:
        return run_items(stages, merged(stages.sources, stop))
    finally:
        for source in stages.sources:
            source.close()
