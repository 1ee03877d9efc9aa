"""The collector role: the single-process pipeline with the aggregator replaced by an outbox.

:class:`Outbox` takes the aggregator's place in :class:`netmon.pipeline.Stages`, so
sources, supervision, decode, per-source watermarks and shutdown are the pipeline's
own: rows go out by partition instead of into windows, the sources' combined
watermark goes to every partition (when it crosses an interval boundary, and as a
heartbeat every few seconds, so a scorer never waits on a quiet collector nor takes
it for dead), and the end of the run (a replay's end, a clean stop) says so. Of the
config's sinks a collector runs only ``metrics`` (its own health: publish retries and
lag, sources), as it scores nothing.
"""

from __future__ import annotations

import math
import os
import socket
import threading
import time
from collections.abc import Callable

import numpy as np
import structlog

from netmon import health, pipeline, registry
from netmon.aggregate import MAX_AHEAD, MAX_TIME, dated, too_far_ahead
from netmon.aggregate.keys import PrefixSet
from netmon.config import Settings
from netmon.detect.engine import Engine
from netmon.transport import partition, wire

log = structlog.get_logger(__name__)


def node_id(settings: Settings, role: str) -> str:
    """``[cluster] node_id``, or ``<role>-<host name>-<pid>``."""
    return settings.cluster.node_id or f"{role}-{socket.gethostname()}-{os.getpid()}"


def _newest(times: np.ndarray) -> float | None:
    """The newest time (UNIX s) of the rows the scorers' aggregators will keep: dated and not
    too far ahead (they count and skip the others). When the whole batch is dated and spans
    no more than :data:`MAX_AHEAD`, no row can be ahead of the median by more, so the
    plain maximum is it, found without the median (8-16 ns a row instead of 24-34, measured)."""
    first, last = float(times.min()), float(times.max())  # NaN in either: some row is not dated
    if abs(first) < MAX_TIME and abs(last) < MAX_TIME and last - first <= MAX_AHEAD:
        return last
    times = times[dated(times)]
    times = times[~too_far_ahead(times)]
    return float(times.max()) if times.shape[0] else None


class Outbox:
    """Publishes what the aggregator would have kept; see the module docstring.

    ``send`` stores a list of ``(partition, message id, bytes)`` (a transport's publisher)."""

    def __init__(self, settings: Settings, send: Callable[[list[tuple[int, str, wire.Payload]]], None], me: str) -> None:
        self.cfg = settings.cluster
        self.internal = PrefixSet(settings.campus.internal)
        self.bits = settings.campus.ipv6_prefix
        self.interval = settings.aggregate.interval
        self.send = send
        self.me = me
        self._run = f"{me}-{time.time_ns()}"  # message ids unique across restarts of one node id
        self.seq = 0
        self.mark = -math.inf
        self._sent_mark = -math.inf
        self._sent_at = time.monotonic()
        self._heartbeat = min(5.0, self.cfg.dead_collector / 4)

    def _message(self, part: int, kind: int) -> tuple[int, str, wire.Payload]:
        self.seq += 1
        return part, f"{self._run}-{self.seq}", wire.encode(kind, self.me, self.seq, self.mark)

    def insert(self, rows: np.ndarray) -> float | None:
        """Publish ``rows`` to their hosts' partitions; the newest plausible event time (UNIX s)."""
        if rows.shape[0] == 0:
            return None
        newest = _newest(np.ascontiguousarray(rows["time"]))  # one strided read of the rows, then contiguous work
        index, spans = partition.route(rows, self.internal, self.bits, self.cfg.partitions)
        parts, chunks = [], []
        for part, (a, b) in spans.items():
            for start in range(a, b, wire.CHUNK_ROWS):
                parts.append(part)
                chunks.append(index[start:min(b, start + wire.CHUNK_ROWS)])
        payloads = wire.pack(self.me, self.seq + 1, self.mark, rows, chunks)
        messages = [(part, f"{self._run}-{seq}", payload)
                    for seq, (part, payload) in enumerate(zip(parts, payloads), start=self.seq + 1)]
        self.seq += len(messages)
        if messages:
            self.send(messages)
            health.count("transport.published.rows", int(rows.shape[0]))
            health.count("transport.published.messages", len(messages))
        return newest

    def advance(self, watermark: float) -> list:
        """The sources' combined watermark: to every partition at a new interval or a heartbeat."""
        self.mark = max(self.mark, watermark)
        crossed = math.floor(self.mark / self.interval) != math.floor(self._sent_mark / self.interval) \
            if math.isfinite(self._sent_mark) else math.isfinite(self.mark)
        if crossed or time.monotonic() - self._sent_at >= self._heartbeat:
            self._everywhere(wire.MARK)
            self._sent_mark = self.mark
        return []

    def flush(self) -> list:
        """The run ended: tell every partition nothing more follows from this collector."""
        self._everywhere(wire.END)
        return []

    def _everywhere(self, kind: int) -> None:
        self.send([self._message(part, kind) for part in range(self.cfg.partitions)])
        self._sent_at = time.monotonic()


def run(settings: Settings, stop: threading.Event) -> pipeline.Summary:
    """Run the configured sources into the log until they end (a replay) or ``stop`` is set."""
    jetstream = registry.plugin("transport", settings.cluster.transport)
    me = node_id(settings, "collector")
    sources = pipeline.build_sources(settings)
    link = None
    try:
        link = jetstream.Link(settings.cluster, me, stop)
        jetstream.ensure(link)
        publisher = jetstream.Publisher(link)
        outbox = Outbox(settings, publisher.send, me)
        engine = Engine(settings.detect.model_copy(update={"detectors": [], "checkpoint": ""}), restore=False)
        health_sinks = pipeline.build_sinks(settings, types=("metrics",))  # its own health: lag, retries, sources
        stages = pipeline.Stages(sources=sources, aggregator=outbox,  # type: ignore[arg-type]
                                 engine=engine, sinks=health_sinks, runtime=settings.pipeline)
        log.info("collector running", collector=me, sources=[s.tag for s in sources],
                 partitions=settings.cluster.partitions)
        summary = pipeline.Pipeline(stages).run(stop)
        log.info("collector stopped", collector=me, messages=outbox.seq)
        return summary
    except BaseException:
        for slot in sources:
            slot.close()
        raise
    finally:
        if link is not None:
            link.close()
