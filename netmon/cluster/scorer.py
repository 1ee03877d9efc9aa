"""The scorer role: the partitions this process leases -> aggregate -> detect -> sinks.

Each owned partition is a :class:`Unit`: its own aggregator, detectors and
:class:`~netmon.runtime.clock.Clock`, where every collector is a tag added at first
sight. A collector's watermark is the one its messages carry (its own pipeline's minimum
over its sources, each with its lateness), never derived here from its rows' times, which
would apply one lateness to all its sources. A window closes when every live collector's
watermark has passed it; a collector silent for ``[cluster] dead_collector`` seconds
is left out (counted ``pipeline.source.<collector>.stalled``), one that stopped
cleanly (END) no longer holds anything, and when every collector a partition knows
has ended, its open windows close.

Exactly once, by construction: a unit's checkpoint (aggregator with its open
windows, detectors, collectors' watermarks, and the last stream sequence it
consumed) is written to the log, and only then are the messages it covers
acknowledged (removed). A takeover restores it and consumes from the next
sequence, so the same messages meet the same state and give the same intervals:
the sinks' writes are idempotent (store rows and Influx points keyed by host and
interval start), and nothing is scored from a message twice into the state. Alerts
follow the partition too (:mod:`netmon.cluster.alerting`): its lifecycles are in the
checkpoint, and the hooks skip a notification the log's ledger says was sent.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import structlog

from netmon import health, pipeline, registry
from netmon.aggregate import Aggregator
from netmon.aggregate.keys import PrefixSet
from netmon.batch import HostIntervals
from netmon.cluster.alerting import PartitionAlerts
from netmon.cluster.collector import node_id
from netmon.config import Settings
from netmon.detect import checkpoint
from netmon.detect.engine import Engine
from netmon.runtime.clock import Clock
from netmon.transport import partition, wire

log = structlog.get_logger(__name__)


def own_hosts(intervals: HostIntervals, part: int, owners: partition.Owners) -> HostIntervals:
    """The rows of ``intervals`` whose host is in partition ``part`` (a campus-to-campus row
    also gave features to the other end, which its own partition's scorer reports)."""
    if not len(intervals):
        return intervals
    keep = owners(intervals.host.tolist()) == part
    if keep.all():
        return intervals
    hosts = set(intervals.host[keep].tolist())
    return HostIntervals(start=intervals.start, end=intervals.end, host=intervals.host[keep],
                         group=intervals.group[keep], role=intervals.role[keep],
                         features={k: v[keep] for k, v in intervals.features.items()},
                         servers_by_host={h: s for h, s in intervals.servers_by_host.items() if h in hosts})


class Unit:
    """One owned partition's stages and progress (``seq``: the last stream sequence consumed).

    A collector's silence is measured on the log's time (:meth:`now`), not on how long this
    scorer took to read: behind on a backlog, it would otherwise find a live collector silent
    while that collector's messages wait in the stream, close windows without it, and count
    its rows late (what one process on the merged capture never does)."""

    def __init__(self, part: int, settings: Settings, wall: Callable[[], float] = time.time) -> None:
        self.part = part
        self.aggregator = Aggregator(settings.campus, settings.aggregate)
        self.engine = Engine(settings.detect.model_copy(update={"checkpoint": ""}), restore=False)
        self.wall = wall
        self.stored = -math.inf  # when the stream stored the message being read (UNIX s)
        self.behind = False  # more messages waited after it: of the partition, or any in the scorer's queue
        self.clock = Clock(settings.cluster.dead_collector, now=self.now)
        self.expected = list(settings.cluster.collectors)
        self.lateness = settings.aggregate.lateness  # a clock source's; unused: it is given watermarks, never rows
        self.heard_any = False
        self.internal = PrefixSet(settings.campus.internal)
        self.both_ends = False  # seen a campus-to-campus row: closed intervals may hold other partitions' hosts
        self.seq = 0
        self.saved_seq = 0
        self.last: Any = None  # the delivery of ``seq``, to acknowledge after a checkpoint
        self.saved_at = time.monotonic()

    def now(self) -> float:
        """The log's time (UNIX s): when the message being read was stored while more wait
        behind it, else the wall clock (caught up, silence is silence now)."""
        return self.stored if self.behind else self.wall()

    def take(self, message: wire.Message) -> None:
        """One message of a collector: its rows into windows, its watermark onto the clock."""
        tag = message.collector
        if not self.heard_any:  # the wait for the expected collectors starts with the first message
            self.heard_any = True
            self.expect()
        mark = self.clock.marks.get(tag)
        if mark is None or (not mark.live and message.kind != wire.END):  # new, or restarted after its END
            self.clock.add(tag, self.lateness, live=True)
            log.info("collector seen", partition=self.part, collector=tag)
        if message.kind == wire.ROWS:
            rows = message.rows
            if not self.both_ends:  # a campus-to-campus row gives the other end's host features too
                self.both_ends = bool((self.internal.contains(rows["src_hi"], rows["src_lo"])
                                       & self.internal.contains(rows["dst_hi"], rows["dst_lo"])).any())
            self.aggregator.insert(rows)  # its time moves nothing: the header's watermark below does
            self.clock.heard(tag)
        if message.kind == wire.END:  # stopped cleanly: nothing more from it, and never "dead"
            self.clock.add(tag, self.lateness, live=False)
            self.clock.watermark(tag, math.inf)
        else:
            self.clock.watermark(tag, message.watermark)

    def expect(self) -> None:
        """Follow every expected collector (``[cluster] collectors``) not followed yet; each then
        holds windows until it speaks or ``dead_collector`` seconds pass from now."""
        for tag in self.expected:
            if tag not in self.clock.marks:
                self.clock.add(tag, self.lateness, live=True)

    def closed(self) -> list[HostIntervals]:
        """The windows every live collector has passed (all, when every collector has ended)."""
        watermark = self.clock.minimum()
        if watermark == math.inf:
            return self.aggregator.flush()
        return self.aggregator.advance(watermark) if math.isfinite(watermark) else []

    def state(self) -> dict[str, Any]:
        marks = {tag: {"lateness": m.lateness, "watermark": m.watermark, "live": m.live}
                 for tag, m in self.clock.marks.items()}
        return {"partition": self.part, "seq": self.seq, "both_ends": self.both_ends,
                "aggregate": self.aggregator.state(),
                "detectors": self.engine.state(), "collectors": marks}

    def load_state(self, state: dict[str, Any]) -> None:
        if int(state["partition"]) != self.part:
            raise ValueError(f"checkpoint of partition {state['partition']}, not {self.part}")
        self.aggregator.load_state(state["aggregate"])
        self.both_ends = bool(state["both_ends"])
        self.engine.load_state(state["detectors"])
        for tag, mark in state["collectors"].items():
            self.clock.add(tag, float(mark["lateness"]), live=bool(mark["live"]))
            self.clock.watermark(tag, float(mark["watermark"]))
        self.heard_any = bool(state["collectors"])
        if self.heard_any:
            self.expect()
        self.seq = self.saved_seq = int(state["seq"])


class Scorer:
    """One scorer process: leases, consumers, units and the shared sinks; see the module docstring."""

    def __init__(self, settings: Settings, stop: threading.Event) -> None:
        jetstream = registry.plugin("transport", settings.cluster.transport)
        self.settings = settings
        self.cfg = settings.cluster
        self.stop = stop
        self.me = node_id(settings, "scorer")
        self.sinks = pipeline.build_sinks(settings)
        # alerts sinks are written by each partition with its own lifecycles (PartitionAlerts)
        self.alerts = [sink.sink for sink in self.sinks if sink.config is not None and sink.config.type == "alerts"]
        # what pipeline.deliver needs: the other sinks (each partition has its own aggregator and engine)
        self.stages = pipeline.Stages(sources=[], aggregator=None, engine=None,  # type: ignore[arg-type]
                                      sinks=[sink for sink in self.sinks if sink.sink not in self.alerts])
        self.summary = pipeline.Summary(keep=pipeline.SERVICE_KEEP)
        try:
            self.link = jetstream.Link(self.cfg, self.me, stop)
            jetstream.ensure(self.link)
        except BaseException:
            for sink in self.sinks:
                sink.close()
            raise
        self.leases = jetstream.Leases(self.link, self.me)
        for alerts in self.alerts:
            alerts.dedupe(jetstream.Ledger(self.link, self.me))
        self.states = jetstream.States(self.link)
        self.feed = jetstream.Feed(self.link, self.leases.holds)
        self.leases.start()
        self.units: dict[int, Unit] = {}
        self.alerting: dict[int, PartitionAlerts] = {}
        self.owners = partition.Owners(self.cfg.partitions)  # hosts' partitions, shared by the units
        for name in ("duplicates", "skipped", "checkpoints", "takeovers", "fenced"):
            health.count(f"cluster.scorer.{name}", 0)

    def run(self) -> pipeline.Summary:
        """Score until ``stop``; then checkpoint every partition, release the leases, close the sinks."""
        log.info("scorer running", scorer=self.me, partitions=self.cfg.partitions)
        due = 0.0
        try:
            while not self.stop.is_set():
                if time.monotonic() >= due:
                    self.rebalance()
                    due = time.monotonic() + self.cfg.lease_timeout / 3
                try:
                    delivery = self.feed.out.get(timeout=0.2)
                except queue.Empty:
                    for unit in list(self.units.values()):
                        unit.behind = False  # nothing waits: silence is measured on the wall clock again
                        self.close_windows(unit, idle=True)
                    continue
                self.consume(delivery)
            for part in list(self.units):
                self.feed.close(part)
                self.save(self.units[part])
            self.leases.leave(set(self.units))
        finally:
            for sink in self.sinks:
                sink.close()
            self.link.close()
        log.info("scorer stopped", scorer=self.me, intervals=self.summary.intervals,
                 findings=self.summary.finding_count)
        return self.summary

    def consume(self, delivery: Any) -> None:
        unit = self.units.get(delivery.partition)
        if unit is None or not self.feed.current(delivery):  # queued before the partition was given up
            return
        if delivery.seq <= unit.seq:
            health.count("cluster.scorer.duplicates")
            return
        unit.seq, unit.last = delivery.seq, delivery
        unit.stored, unit.behind = delivery.stored, delivery.pending > 0 or not self.feed.out.empty()
        try:
            message = wire.decode(delivery.data)
        except wire.WireError as exc:
            health.count("cluster.scorer.skipped")
            log.warning("message skipped", partition=unit.part, seq=delivery.seq, reason=str(exc))
            return
        unit.take(message)
        self.close_windows(unit)

    def drop(self, part: int) -> None:
        """Stop scoring ``part``, whose lease another scorer took: no checkpoint, nothing more delivered."""
        self.feed.close(part)
        self.units.pop(part, None)
        self.alerting.pop(part, None)
        log.warning("partition lease lost to another scorer", partition=part)

    def close_windows(self, unit: Unit, idle: bool = False) -> None:
        """Score and deliver what ``unit`` may close; checkpoint when it is time and one closed
        or nothing is waiting (``idle``). A partition whose lease the renewal task found taken
        is dropped here at once, not at the next lease round of this (maybe busy) thread."""
        if self.leases.lost(unit.part):
            self.drop(unit.part)
            return
        closed = unit.closed()
        for intervals in closed:
            if unit.both_ends:
                intervals = own_hosts(intervals, unit.part, self.owners)
            if len(intervals):
                scored = unit.engine.process(intervals)
                pipeline.deliver(self.stages, scored, self.summary)
                self.alerting[unit.part].write(scored)
        every = self.cfg.checkpoint_every
        if unit.seq > unit.saved_seq and (closed or idle) and time.monotonic() - unit.saved_at >= every:
            self.save(unit)

    def save(self, unit: Unit) -> None:
        """Checkpoint ``unit`` into the log, commit it by its lease, then acknowledge what it
        covers; nothing committed nor acknowledged when the lease may have passed to another
        scorer meanwhile (its renewal task says, or the commit's compare-and-set does)."""
        if not self.leases.holds(unit.part):
            health.count("cluster.scorer.fenced")
            log.warning("lease not renewed in time; no checkpoint until it is", partition=unit.part)
            return
        previous = self.leases.checkpoint(unit.part)
        try:
            state = {**unit.state(), "alerts": self.alerting[unit.part].state()}
            name = self.states.save(unit.part, checkpoint.dumps(state))
            committed = self.leases.commit(unit.part, name)
        except Exception as exc:  # noqa: BLE001 - the log away: keep scoring, the next checkpoint covers it
            health.count("detect.checkpoint.failed")
            log.error("partition checkpoint not written; trying again later", partition=unit.part,
                      error=type(exc).__name__, detail=str(exc)[:200])
            return
        if not committed:
            health.count("cluster.scorer.fenced")
            log.warning("partition lease taken by another scorer; checkpoint not committed", partition=unit.part)
            self.states.delete(name)
            return
        if previous and previous != name:
            self.states.delete(previous)
        unit.saved_at, unit.saved_seq = time.monotonic(), unit.seq
        health.count("cluster.scorer.checkpoints")
        if unit.last is not None:
            self.feed.ack(unit.last)

    def restore(self, part: int) -> Unit:
        """A unit for ``part``, from the checkpoint its lease names when there is one, and the
        partition's alerts (:attr:`alerting`) from the same checkpoint."""
        unit = Unit(part, self.settings)
        alerting = self.alerting[part] = PartitionAlerts(self.alerts)
        name = self.leases.checkpoint(part)
        self.states.prune(part, name)
        data = self.states.load(name) if name else None
        if data is not None:
            try:
                state = checkpoint.loads(data)
                unit.load_state(state)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:  # CheckpointError, or one not of ours
                health.count(f"detect.checkpoint.{getattr(exc, 'kind', 'foreign')}")
                log.error("partition checkpoint unusable; the partition starts cold from its stream",
                          partition=part, name=name, reason=f"{type(exc).__name__}: {exc}"[:200])
                return Unit(part, self.settings)  # nothing half-loaded
            try:
                alerting.load(state.get("alerts", {}))
            except (ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
                self.alerting[part] = PartitionAlerts(self.alerts)  # nothing half-loaded
                health.count("alerts.state.unreadable")
                log.error("partition alert state unreadable; its alerts start with none open", partition=part,
                          error=str(exc)[:200])
        return unit

    def rebalance(self) -> None:
        """One lease round: drop what was lost, hand over the surplus, take what is free (the leases
        themselves are renewed by their own task, :meth:`jetstream.Leases.start`)."""
        try:
            plan = self.leases.tick(set(self.units))
        except Exception as exc:  # noqa: BLE001 - the log away: keep what is held, try next round
            health.count("cluster.scorer.lease_errors")
            log.warning("lease round failed", error=type(exc).__name__, detail=str(exc)[:200])
            return
        for part in plan.lost:
            self.drop(part)
        for part in plan.surplus:
            self.feed.close(part)
            self.save(self.units.pop(part))
            self.alerting.pop(part, None)
            self.leases.release(part)
            log.info("partition handed over (above the fair share)", partition=part)
        for part in plan.gained:
            unit = self.restore(part)
            self.units[part] = unit
            self.feed.open(part, unit.seq)
            health.count("cluster.scorer.takeovers")
            log.info("partition taken", partition=part, from_seq=unit.seq + 1)
        health.gauge("cluster.scorer.partitions", len(self.units))


def run(settings: Settings, stop: threading.Event) -> pipeline.Summary:
    """Run one scorer until ``stop`` is set."""
    return Scorer(settings, stop).run()

