"""Wires the stages named in the config and runs batches through them.

    sources -> decode -> aggregate -> detect -> sinks

Sources yield :class:`~netmon.batch.Frames` (raw frames, decoded here),
:class:`~netmon.batch.Observations` (already decoded, e.g. flow records) or
:class:`~netmon.batch.Watermark` (time moves on, nothing arrived). Windows close in
event time, so a replay gives the same answer every time, however fast it runs.

The pipeline owns the runtime (:mod:`netmon.runtime`): every source runs tagged in its
own supervised thread (restarted with backoff when it fails), with its own watermark
and lateness, and windows close at the minimum over the sources; every sink sits
behind a bounded queue and its own thread, isolated from the others. A run of replays
only (files, read once) reads them in the pipeline's own thread instead: bounded input
needs no thread to keep up with a live deadline.
"""

from __future__ import annotations

import heapq
import itertools
import math
import queue
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import structlog
from pydantic import BaseModel

from netmon import registry
from netmon.aggregate import Aggregator
from netmon.batch import Finding, Frames, Scored, Watermark
from netmon.config import Runtime, Settings
from netmon.decode.frames import decode_with_index
from netmon.detect.engine import Engine
from netmon.retry import Backoff
from netmon.runtime.clock import Clock
from netmon.runtime.sinks import ManagedSink
from netmon.runtime.sources import Ended, Item, Supervised

log = structlog.get_logger("netmon.pipeline")

#: Findings and hosts a long-running service keeps for its summary (the worst by score).
SERVICE_KEEP = 100
#: Seconds sources asked to stop may take to drain before they are closed.
STOP_TIMEOUT = 30.0


@dataclass
class Stages:
    """Everything one run needs, built from the config."""

    sources: list[Supervised]
    aggregator: Aggregator
    engine: Engine
    sinks: list[ManagedSink]
    runtime: Runtime = field(default_factory=Runtime)

    def inline(self, method: str) -> list[Any]:
        """The ``method`` of every sink that has one, called from the pipeline's thread (so such a
        sink guards its own state): ``frames(frames, rows, index)`` of sinks that keep raw packets
        (evidence), and their ``flag(scored)``, called as each interval is delivered, before the
        frames that follow it, so which frames they keep does not depend on how far their own
        thread lags behind (a replay outruns it)."""
        return [hook for hook in (getattr(sink.sink, method, None) for sink in self.sinks) if hook is not None]


class Summary:
    """What a run saw: intervals scored, findings counted, and the findings and hosts kept.

    ``keep = None`` keeps every finding (a replay, an evaluation: bounded input);
    a number keeps only the ``keep`` worst findings and hosts by score, so a service
    that runs for months holds counts, not every finding it ever made.
    """

    def __init__(self, keep: int | None = None) -> None:
        self.keep = keep
        self.intervals = 0
        self.finding_count = 0
        self.failed_sources: list[str] = []
        self._all: list[Finding] = []
        self._heap: list[tuple[float, int, Finding]] = []
        self._seq = itertools.count()
        self.worst: dict[str, float] = {}

    @property
    def findings(self) -> list[Finding]:
        """Every finding in order; when bounded, the ``keep`` worst, in time order."""
        if self.keep is None:
            return list(self._all)
        return [f for _, _, f in sorted(self._heap, key=lambda e: (e[2].start, e[1]))]

    def add(self, scored: Scored) -> None:
        self.intervals += 1
        self.finding_count += len(scored.findings)
        for finding in scored.findings:
            score = finding.score if math.isfinite(finding.score) else 0.0
            self.worst[finding.host] = max(self.worst.get(finding.host, 0.0), score)
            if self.keep is None:
                self._all.append(finding)
            elif len(self._heap) < self.keep:
                heapq.heappush(self._heap, (score, next(self._seq), finding))
            elif score > self._heap[0][0]:
                heapq.heapreplace(self._heap, (score, next(self._seq), finding))
        if self.keep is not None and len(self.worst) > 2 * self.keep:
            top = heapq.nlargest(self.keep, self.worst.items(), key=lambda kv: kv[1])
            self.worst = dict(top)


def tags(kind: str, configs: list[BaseModel]) -> list[str]:
    """Health labels of plug-ins: their ``name`` if they have one, else their type; a type used
    twice gets its index (``capture0``, ``capture1``)."""
    names = [str(getattr(c, "name", "") or c.type) for c in configs]
    return [n if names.count(n) == 1 else f"{n}{i}" for i, n in enumerate(names)]


def is_replay(config: BaseModel) -> bool:
    """A source reading files (``paths``) ends, and is never read twice."""
    return bool(getattr(config, "paths", None))


class StartError(RuntimeError):
    """A source or sink cannot start here (a missing interface or privilege, a spool in use)."""


def supervise(tag: str, config: BaseModel, settings: Settings) -> Supervised:
    """Check and build one source now (so a missing interface or capability is an error at
    start, not a restart loop) and wrap it."""
    problems = registry.check("source", config)
    if problems:
        raise StartError(f"source {tag} ({config.type}): " + "; ".join(problems))
    module = registry.plugin("source", config.type)
    source = module.build(config, settings)
    lateness = max(settings.aggregate.lateness, float(getattr(source, "lateness", 0.0)))
    backoff = Backoff(settings.pipeline.restart_initial, settings.pipeline.restart_max)
    return Supervised(tag, config, source, lambda: module.build(config, settings), lateness, is_replay(config), backoff)


def _all_or_nothing(makers: list[Callable[[], Any]]) -> list[Any]:
    """Every maker's stage, or none: when one raises, the ones made before it are closed again
    (nothing partly built is left holding a port, an interface or a spool) and the error raised."""
    built: list[Any] = []
    try:
        for make in makers:
            built.append(make())
    except BaseException:
        for stage in built:
            stage.close()
        raise
    return built


def build_sources(settings: Settings, configs: list[BaseModel] | None = None,
                  names: list[str] | None = None) -> list[Supervised]:
    """Sources for ``configs`` (default: every one in ``settings``), each checked then built, all or none."""
    configs = settings.sources if configs is None else configs
    pairs = zip(names or tags("source", configs), configs)
    return _all_or_nothing([lambda t=tag, c=config: supervise(t, c, settings) for tag, config in pairs])


def manage(tag: str, config: BaseModel, settings: Settings) -> ManagedSink:
    """Build one sink behind its queue; a sink that cannot start is a StartError naming it."""
    module = registry.plugin("sink", config.type)
    try:
        return ManagedSink(tag, lambda: module.build(config, settings), config.buffer, config)
    except Exception as exc:  # noqa: BLE001 - a spool in use, an unreadable credential: one line, not a traceback
        raise StartError(f"sink {tag} ({config.type}): {exc}") from exc


def build_sinks(settings: Settings, types: Collection[str] = ()) -> list[ManagedSink]:
    """Every sink of ``settings`` (of ``types`` only, when given: a collector runs its metrics),
    each behind its queue, all or none; tagged as in the whole config, so a sink's health
    label is the same in every role."""
    pairs = [(tag, config) for tag, config in zip(tags("sink", settings.sinks), settings.sinks)
             if not types or config.type in types]
    return _all_or_nothing([lambda t=tag, c=config: manage(t, c, settings) for tag, config in pairs])


def build(settings: Settings, restore: bool = True) -> Stages:
    """Every stage named in ``settings``."""
    sources = build_sources(settings)
    try:
        sinks = build_sinks(settings)
    except BaseException:
        for slot in sources:
            slot.close()
        raise
    return Stages(sources=sources, aggregator=Aggregator(settings.campus, settings.aggregate),
                  engine=Engine(settings.detect, restore=restore), sinks=sinks, runtime=settings.pipeline)


def deliver(stages: Stages, scored: Scored, summary: Summary | None = None) -> None:
    """Hand one scored interval to every sink's queue (and count it in ``summary``)."""
    if summary is not None:
        summary.add(scored)
    for flag in stages.inline("flag"):
        flag(scored)
    for sink in stages.sinks:
        sink.put(scored)


class Pipeline:
    """One run: the item loop, event time over the sources, and the stages' shutdown."""

    def __init__(self, stages: Stages, summary: Summary | None = None) -> None:
        self.stages = stages
        self.summary = summary if summary is not None else Summary()
        self.clock = Clock(stages.runtime.stall_timeout)
        self.items: queue.Queue[tuple[Supervised, Item | Ended]] = queue.Queue(maxsize=4)
        self.running: set[Supervised] = set()

    def follow(self, slot: Supervised) -> None:
        """Follow ``slot``'s watermark: windows wait for it until it ends (:meth:`forget`)."""
        self.clock.add(slot.tag, slot.lateness, live=not slot.replay)
        self.running.add(slot)

    def start(self, slot: Supervised) -> None:
        """Follow ``slot``'s watermark and start its thread."""
        self.follow(slot)
        slot.start(self.items)

    def forget(self, slot: Supervised) -> None:
        """Stop following ``slot`` (it ended, or a reload removed it); windows no longer wait for it."""
        self.running.discard(slot)
        if not any(s.tag == slot.tag for s in self.running):
            self.clock.remove(slot.tag)
        if slot in self.stages.sources:
            self.stages.sources.remove(slot)

    def handle(self, tag: str, item: Item) -> None:
        """Decode and aggregate one item of source ``tag``; deliver what its watermark closes."""
        if isinstance(item, Watermark):
            self.clock.watermark(tag, item.time)
        else:
            if isinstance(item, Frames):
                rows, index = decode_with_index(item)
                for keep in self.stages.inline("frames"):
                    keep(item, rows, index)
            else:
                rows = item.rows
            newest = self.stages.aggregator.insert(rows)
            if newest is None:
                self.clock.heard(tag)
            else:
                self.clock.rows(tag, newest)
        self.close_windows()

    def close_windows(self) -> None:
        """Close every window all followed sources have passed."""
        watermark = self.clock.minimum()
        if math.isfinite(watermark):
            for intervals in self.stages.aggregator.advance(watermark):
                deliver(self.stages, self.stages.engine.process(intervals), self.summary)

    def run(self, stop: threading.Event, between: Callable[[], None] | None = None) -> Summary:
        """Run the sources until they end (a replay) or ``stop`` is set (live), then flush
        the open windows, save the models and close the sinks. ``between`` runs in this
        thread between items (a service's reload, which may start sources of any kind).

        Without ``between``, when every source is a replay (files: bounded input, no live
        deadline), the sources are read in this thread (:meth:`read_replays`); otherwise
        each runs in its own thread (:meth:`serve`)."""
        try:
            if between is None and self.stages.sources and all(slot.replay for slot in self.stages.sources):
                self.read_replays(stop)
            else:
                self.serve(stop, between or (lambda: None))
            self.finish()
        finally:
            self.shutdown()
        return self.summary

    def read_replays(self, stop: threading.Event) -> None:
        """Read every (replay) source in this thread, one item of each in turn, until all have
        ended or ``stop`` is set (a replay stopped is not drained: its files are simply not read
        further). Nothing is handed between threads but the scored intervals to the sinks: no
        queue wake-up or GIL hand-over per batch."""
        readers: dict[Supervised, Iterator[Item]] = {}
        for slot in list(self.stages.sources):
            self.follow(slot)
            readers[slot] = slot.read()
        while readers and not stop.is_set():
            for slot, items in list(readers.items()):
                item = next(items, None)
                if item is None:
                    del readers[slot]
                    self.ended(slot)
                else:
                    self.handle(slot.tag, item)

    def serve(self, stop: threading.Event, between: Callable[[], None]) -> None:
        """Run each source in its own thread, feeding one bounded queue, until they end or
        ``stop`` is set. Sources asked to stop get ``STOP_TIMEOUT`` seconds to drain; one that
        has not ended by then is closed (by :meth:`shutdown`), so shutdown always completes."""
        stopping = math.inf
        for slot in list(self.stages.sources):
            self.start(slot)
        while self.running:
            between()
            if stop.is_set() and stopping == math.inf:
                stopping = time.monotonic() + STOP_TIMEOUT
                for slot in self.running:
                    slot.stop()
            if time.monotonic() > stopping:
                log.warning("sources did not end after stop; closing them", sources=[s.tag for s in self.running])
                return
            try:
                slot, item = self.items.get(timeout=0.5)
            except queue.Empty:
                self.close_windows()  # a source may have gone silent: stop waiting for it
                continue
            if isinstance(item, Ended):
                self.ended(slot)
                continue
            self.handle(slot.tag, item)

    def ended(self, slot: Supervised) -> None:
        """``slot``'s input ended (or it failed and is not restarted): note a failure, release what
        it holds (an attached eBPF program) at once, and stop following it."""
        if slot.failed and slot in self.running:
            self.summary.failed_sources.append(slot.tag)
        slot.close()
        self.forget(slot)

    def finish(self) -> None:
        """Close every open window (the end of a replay, or shutdown)."""
        for intervals in self.stages.aggregator.flush():
            deliver(self.stages, self.stages.engine.process(intervals), self.summary)

    def shutdown(self) -> None:
        """Save model state, hand the sinks what is queued and close them, release the sources."""
        try:
            self.stages.engine.save()
        finally:
            for sink in self.stages.sinks:
                sink.close()
            for slot in list(self.stages.sources) + list(self.running):
                slot.close()


def run_items(stages: Stages, items: Iterable[Item], summary: Summary | None = None,
              lateness: float | None = None) -> Summary:
    """Push items of one source (already read, e.g. an evaluation's simulation) through decode,
    aggregate, detect and the sinks; flush at the end. ``lateness`` defaults to the aggregator's."""
    runner = Pipeline(stages, summary)
    tag = "items"
    runner.clock.add(tag, stages.aggregator.lateness if lateness is None else lateness, live=False)
    try:
        for item in items:
            runner.handle(tag, item)
        runner.finish()
    finally:
        runner.shutdown()
    return runner.summary


def run(stages: Stages, stop: threading.Event | None = None, summary: Summary | None = None) -> Summary:
    """Run every source to its end (a replay) or until ``stop`` is set (live)."""
    return Pipeline(stages, summary).run(stop or threading.Event())
