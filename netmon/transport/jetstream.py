"""NATS JetStream as the log between collectors and scorers (transport ``jetstream``).

What lives in JetStream, all named from ``[cluster] prefix`` (P below):

* stream ``P-obs``, subjects ``P.obs.<partition>``: observation messages
  (:mod:`netmon.transport.wire`). A message stays until the scorer owning its
  partition purges it, which it does only once a checkpoint covers it (deleting a
  consumer then never loses a message, unlike work-queue or interest retention);
  ``max_bytes`` and ``max_age`` bound the stream and a full one refuses new
  messages (``discard = new``), so a slow scorer makes collectors wait and count
  (``transport.publish.retries``, gauge ``transport.publish.blocked_seconds``), never
  grow memory: a collector has at most one batch and ``in_flight`` messages pending.
  Each message carries a ``Nats-Msg-Id`` so a publish retried after a lost ack is
  stored once (the stream's duplicate window).
* one pull consumer per partition and owner, acknowledge-all (its acknowledgements say
  how far the owner's checkpoints got), made by each owner from the sequence after its
  checkpoint and deleted by the server a minute after its last fetch (never shared: a
  former owner's fetches cannot take the new owner's messages);
* key-value bucket ``P-leases``: key ``p<partition>`` = the owning scorer, the
  lease's expiry (UNIX s), the token of its taking and the name of the partition's
  committed checkpoint, changed only by revision-checked updates (compare and set;
  a released lease stays, expired, to keep that name); key ``m-<scorer>`` = a
  scorer's membership, for the fair share;
* key-value bucket ``P-alerts``: one key per alert notification a scorer's hook sent
  (:func:`netmon.sinks.alerts.notification_key`), kept ``max_age`` (no message older is
  ever scored again), so a takeover does not send it again (:class:`Ledger`);
* object store ``P-state``: objects ``p<partition>-<id>`` = checkpoints, the one its
  lease names committed (:meth:`Leases.commit`), the others on their way out.

Every call goes through :class:`Link`: one connection served by an asyncio loop in
its own thread, reconnecting forever, so callers stay plain synchronous code.
``nats`` is imported here only: a single-process netmon never loads it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import queue
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import nats
import nats.errors
import nats.js.errors
import structlog
from nats.js import api

from netmon import health
from netmon.config import Cluster, redact_url
from netmon.retry import Backoff
from netmon.transport import wire

log = structlog.get_logger(__name__)

#: Messages one partition's fetch asks for at a time (up to ~0.5 MB each: a fetch must be read
#: off the socket within the server's write deadline, even while the scorer's thread is busy).
FETCH = 16
#: Items the consumer may have queued for the scorer's thread before it stops fetching.
QUEUE_ITEMS = 64
#: Seconds one JetStream request may take before it is retried.
REQUEST_TIMEOUT = 5.0
#: Seconds a partition's consumer lives on once nobody fetches from it (its scorer died or gave it up).
INACTIVE = 60.0


class TransportError(RuntimeError):
    """The log cannot be used (unreachable at start, refused a setting); the text names the server redacted."""


def stream_name(cfg: Cluster) -> str:
    return f"{cfg.prefix}-obs"


def subject(cfg: Cluster, partition: int) -> str:
    return f"{cfg.prefix}.obs.{partition}"


class Link:
    """One NATS connection and its asyncio loop in a daemon thread; :meth:`call` runs a coroutine there."""

    def __init__(self, cfg: Cluster, name: str, stop: threading.Event) -> None:
        self.cfg = cfg
        self.stop = stop
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=f"nats-{name}", daemon=True)
        self._thread.start()
        self.nc: Any = None
        self.js: Any = None
        self._closing = False
        self._buckets: dict[str, Any] = {}
        self.generation = 0  # reconnections so far: a consumer then resumes from what it last received
        self._connect(name)

    def _connect(self, name: str) -> None:
        """Connect, trying again with backoff while the server is not there yet (until stopped)."""
        backoff = Backoff(0.5, 10.0)
        failures = 0
        where = ", ".join(redact_url(u) for u in self.cfg.urls)
        while True:
            try:
                self.nc = self.call(nats.connect(servers=list(self.cfg.urls), name=name, max_reconnect_attempts=-1,
                                                 reconnect_time_wait=0.5, connect_timeout=2,
                                                 error_cb=self._error, disconnected_cb=self._down,
                                                 reconnected_cb=self._up), timeout=30)
                break
            except Exception as exc:  # noqa: BLE001 - any connect failure: the server may come up later
                failures += 1
                health.count("transport.connect.failed")
                log.warning("NATS not reachable; trying again", servers=where, error=type(exc).__name__)
                if self.stop.wait(backoff.delay(failures)):
                    self.close()
                    raise TransportError(f"stopped before NATS ({where}) was reachable") from None
        self.js = self.nc.jetstream(timeout=REQUEST_TIMEOUT)
        log.info("connected to NATS", servers=where)

    async def _error(self, exc: Exception) -> None:
        log.debug("NATS client error", error=type(exc).__name__)

    async def _down(self) -> None:
        if self._closing:
            return
        health.count("transport.disconnects")
        log.warning("NATS connection lost; reconnecting")

    async def _up(self) -> None:
        self.generation += 1
        log.info("NATS connection back")

    def call(self, coro: Coroutine[Any, Any, Any], timeout: float | None = None) -> Any:
        """Run ``coro`` on the loop and wait for its result (its exception raised here)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def submit(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Run ``coro`` on the loop without waiting (a concurrent.futures.Future)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    async def bucket(self, name: str, objects: bool = False) -> Any:
        """The ``<prefix>-<name>`` key-value bucket (object store if ``objects``), looked up once per link."""
        if name not in self._buckets:
            lookup = self.js.object_store if objects else self.js.key_value
            self._buckets[name] = await lookup(f"{self.cfg.prefix}-{name}")
        return self._buckets[name]

    def close(self) -> None:
        self._closing = True
        if self.nc is not None:
            try:
                self.call(self.nc.close(), timeout=5)
            except Exception as exc:  # noqa: BLE001 - closing a broken connection may fail too
                log.debug("NATS close failed", error=type(exc).__name__)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


def ensure(link: Link) -> None:
    """Create (or bring to the config) the stream, the lease bucket and the state store."""
    cfg = link.cfg
    config = api.StreamConfig(name=stream_name(cfg), subjects=[f"{cfg.prefix}.obs.>"],
                              retention=api.RetentionPolicy.LIMITS, discard=api.DiscardPolicy.NEW,
                              max_bytes=cfg.max_bytes, max_age=cfg.max_age, storage=api.StorageType.FILE,
                              duplicate_window=120.0)

    async def setup() -> None:
        try:
            await link.js.add_stream(config)
        except nats.js.errors.BadRequestError:  # exists with other limits: take the config's
            await link.js.update_stream(config)
        await link.js.create_key_value(bucket=f"{cfg.prefix}-leases", history=1)
        await link.js.create_object_store(bucket=f"{cfg.prefix}-state")
        try:
            await link.js.create_key_value(bucket=f"{cfg.prefix}-alerts", history=1, ttl=cfg.max_age)
        except nats.js.errors.BadRequestError:  # exists, kept for another max_age: records are still kept
            log.info("alerts ledger kept with its own age limit", bucket=f"{cfg.prefix}-alerts")

    try:
        link.call(setup(), timeout=30)
    except Exception as exc:  # noqa: BLE001 - one clear line, never the URL's credentials
        raise TransportError(f"cannot set up JetStream stream {stream_name(cfg)}: {type(exc).__name__}: "
                             f"{str(exc)[:200]}") from None


class Publisher:
    """Sends messages, each subject's in order, at most ``in_flight`` unacknowledged; returns
    once every one is stored. A refusal (stream full, server down) is retried with backoff
    until stored or ``stop`` has been set for ``give_up`` seconds (then counted lost)."""

    def __init__(self, link: Link, give_up: float = 30.0) -> None:
        self.link = link
        self.give_up = give_up
        self._window = asyncio.Semaphore(link.cfg.in_flight)
        health.count("transport.publish.retries", 0)
        health.count("transport.publish.lost", 0)
        health.gauge("transport.publish.blocked_seconds", 0.0)

    def send(self, messages: list[tuple[int, str, wire.Payload]]) -> None:
        """Store ``(partition, message id, payload)`` messages; per partition in list order."""
        by_subject: dict[str, list[tuple[str, wire.Payload]]] = {}
        for part, ident, payload in messages:
            by_subject.setdefault(subject(self.link.cfg, part), []).append((ident, payload))
        self.link.call(self._send(by_subject))

    async def _send(self, by_subject: dict[str, list[tuple[str, wire.Payload]]]) -> None:
        await asyncio.gather(*(self._in_order(subj, items) for subj, items in by_subject.items()))

    async def _in_order(self, subj: str, items: list[tuple[str, wire.Payload]]) -> None:
        for ident, payload in items:
            async with self._window:
                await self._one(subj, ident, payload)

    async def _one(self, subj: str, ident: str, payload: wire.Payload) -> None:
        backoff = Backoff(0.1, 5.0)
        started = time.monotonic()
        stopping_since = math.inf
        failures = 0
        while True:
            try:
                await self.link.js.publish(subj, payload, timeout=REQUEST_TIMEOUT, stream=stream_name(self.link.cfg),
                                           headers={"Nats-Msg-Id": ident})
                if failures:
                    health.gauge("transport.publish.blocked_seconds", 0.0)
                    log.info("publishing again", subject=subj, blocked_seconds=round(time.monotonic() - started, 1))
                return
            except (nats.errors.Error, asyncio.TimeoutError) as exc:
                failures += 1
                health.count("transport.publish.retries")
                health.gauge("transport.publish.blocked_seconds", time.monotonic() - started)
                if failures == 1:
                    log.warning("publish refused or unanswered; waiting (stream full or server away)",
                                subject=subj, error=type(exc).__name__, detail=str(exc)[:200])
            if self.link.stop.is_set():
                stopping_since = min(stopping_since, time.monotonic())
                if time.monotonic() - stopping_since > self.give_up:
                    health.count("transport.publish.lost")
                    log.error("stopping: message not stored, given up", subject=subj)
                    return
            await asyncio.sleep(backoff.delay(failures))


@dataclass
class Delivery:
    """One consumed message: its partition, stream sequence, bytes and the handle to acknowledge
    it; when the stream stored it (UNIX s) and how many of the partition's messages were still
    waiting after it (the consumer is behind when any were); which opening of the partition
    fetched it (:meth:`Feed.current`)."""

    partition: int
    seq: int
    data: bytes
    msg: Any
    stored: float
    pending: int
    opening: int


class Feed:
    """The scorer's consumers, one per owned partition, feeding one bounded queue of :class:`Delivery`."""

    def __init__(self, link: Link, holds: Callable[[int], bool] = lambda part: True) -> None:
        self.link = link
        self.holds = holds  # whether the lease of a partition is still this scorer's (Leases.holds)
        self.out: queue.Queue[Delivery] = queue.Queue()
        self._tasks: dict[int, Any] = {}
        self._consumers: dict[int, str] = {}  # partition -> the name of this scorer's consumer of it
        self._openings = itertools.count()
        self._opened: dict[int, int] = {}  # partition -> its opening now consumed (Delivery.opening)

    def open(self, partition: int, after: int) -> None:
        """Consume ``partition`` from stream sequence ``after + 1`` on."""
        opening = self._opened[partition] = next(self._openings)
        self._tasks[partition] = self.link.call(self._open(partition, after, opening), timeout=60)

    def current(self, delivery: Delivery) -> bool:
        """Whether ``delivery`` comes from the partition's opening now consumed, not from one
        closed since (its fetches still queued): after a partition is lost and taken again,
        those would run ahead of the new opening's messages from the checkpoint and make
        the messages between look like duplicates."""
        return self._opened.get(delivery.partition) == delivery.opening

    async def _open(self, partition: int, after: int, opening: int) -> asyncio.Task[None]:
        sub = await self._subscribe(partition, after)
        return asyncio.get_running_loop().create_task(self._fetch(partition, sub, after, opening))

    async def _subscribe(self, partition: int, after: int) -> Any:
        """A consumer of the partition of this scorer's own, starting after stream sequence
        ``after``. Never one shared by name: a former owner that has not yet seen its lease
        go would fetch from it too and take messages the new owner then never receives.
        The server deletes it once nobody fetched from it for :data:`INACTIVE` seconds."""
        cfg = self.link.cfg
        name = f"p{partition}-{uuid.uuid4().hex}"
        config = api.ConsumerConfig(name=name, filter_subject=subject(cfg, partition), ack_policy=api.AckPolicy.ALL,
                                    ack_wait=3600.0, max_ack_pending=-1, inactive_threshold=INACTIVE,
                                    deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=after + 1)
        await self.link.js.add_consumer(stream_name(cfg), config=config)
        self._consumers[partition] = name
        return await self.link.js.pull_subscribe_bind(consumer=name, stream=stream_name(cfg))

    async def _fetch(self, partition: int, sub: Any, last: int, opening: int) -> None:
        """Fetch in order into the queue. Messages a lost connection swallowed would only come
        back after the acknowledgement wait, so after a reconnection or a failed fetch the
        consumer is made anew from the last sequence received: nothing is skipped."""
        backoff = Backoff(0.2, 5.0)
        failures = 0
        generation = self.link.generation
        try:
            while True:
                if self.out.qsize() >= QUEUE_ITEMS:
                    await asyncio.sleep(0.02)
                    continue
                try:
                    if failures or generation != self.link.generation:
                        if not self.holds(partition):  # another owner may have made the consumer anew: leave it
                            await asyncio.sleep(0.5)
                            continue
                        generation = self.link.generation
                        await _unsubscribe(sub)  # the replaced consumer's inbox, else one more per reconnection
                        sub = await self._subscribe(partition, last)
                        failures = 0
                    msgs = await sub.fetch(FETCH, timeout=1.0)
                except asyncio.CancelledError:
                    raise
                except (nats.errors.TimeoutError, asyncio.TimeoutError):
                    continue
                except Exception as exc:  # noqa: BLE001 - a server restart: fetch again after a pause
                    failures += 1
                    health.count("transport.fetch.errors")
                    log.warning("fetch failed; resuming after the last message received", partition=partition,
                                after=last, error=type(exc).__name__)
                    await asyncio.sleep(backoff.delay(failures))
                    continue
                for msg in msgs:
                    meta = msg.metadata
                    if meta.sequence.stream > last:
                        last = meta.sequence.stream
                        self.out.put(Delivery(partition, last, msg.data, msg, meta.timestamp.timestamp(),
                                              meta.num_pending, opening))
        finally:  # cancelled (the partition closed): its inbox subscription goes too
            await _unsubscribe(sub)

    def close(self, partition: int) -> None:
        """Stop consuming ``partition`` and delete this scorer's consumer of it (not waited for:
        one left behind is deleted by the server once idle)."""
        self._opened.pop(partition, None)
        task = self._tasks.pop(partition, None)
        if task is not None:
            self.link.loop.call_soon_threadsafe(task.cancel)
        name = self._consumers.pop(partition, None)
        if name is not None:
            async def delete() -> None:
                try:
                    await self.link.js.delete_consumer(stream_name(self.link.cfg), name)
                except Exception as exc:  # noqa: BLE001 - see above
                    log.debug("consumer not deleted", partition=partition, error=type(exc).__name__)

            self.link.submit(delete())

    def ack(self, delivery: Delivery) -> None:
        """``delivery`` and everything before it on its partition are checkpointed: acknowledge
        them and purge them from the stream (not waited for: one lost only leaves messages the
        next owner skips by its checkpoint's sequence, and the next purge removes them)."""
        cfg = self.link.cfg

        async def ack() -> None:
            try:
                await delivery.msg.ack()
                await self.link.js.purge_stream(stream_name(cfg), seq=delivery.seq + 1,
                                                subject=subject(cfg, delivery.partition))
            except Exception as exc:  # noqa: BLE001 - see above
                log.debug("ack or purge not done", partition=delivery.partition, error=type(exc).__name__)

        self.link.submit(ack())


async def _unsubscribe(sub: Any) -> None:
    """Drop a pull subscription's inbox on this client: the client keeps (and re-subscribes after a
    reconnection) every inbox until it is dropped."""
    try:
        await sub.unsubscribe()
    except Exception as exc:  # noqa: BLE001 - closed or reconnecting: nothing left to drop
        log.debug("subscription not dropped", error=type(exc).__name__)


@dataclass(frozen=True)
class Plan:
    """What a lease round decided: partitions newly owned, lost (taken by another: drop
    without a checkpoint) and surplus (above the fair share: checkpoint, then release)."""

    gained: list[int]
    lost: list[int]
    surplus: list[int]


@dataclass
class _Hold:
    """A lease this scorer holds: the revision it last wrote, the token of this taking of it
    (told from a former taking by the same scorer), and the checkpoint object it names."""

    revision: int
    token: str
    checkpoint: str


class Leases:
    """Partition ownership by compare-and-set in the ``P-leases`` bucket; see the module docstring.

    Held leases are renewed by a task of their own on the connection's loop (:meth:`start`),
    every quarter of the lease timeout (a quarter to spare before :meth:`holds` ends),
    however long the scorer's thread spends scoring: a loaded scorer keeps what it is using. Every write of a lease is an update at the revision
    this scorer last wrote, so one taken over meanwhile is never written again, and the
    partition is fenced (:meth:`holds` false) at once. A lease also names its partition's
    committed checkpoint (:meth:`commit`), so a checkpoint becomes visible only by a write
    the lease's revision fences: a former owner's late checkpoint can never land."""

    def __init__(self, link: Link, me: str) -> None:
        self.link = link
        self.me = me
        self.cfg = link.cfg
        self._held: dict[int, _Hold] = {}
        self._valid: dict[int, float] = {}  # partition -> monotonic time this scorer's hold ends, for fencing
        self._free: dict[int, str] = {}  # partition -> checkpoint named by its free lease, as last read
        self._writes = asyncio.Lock()  # one lease write at a time: a renewal and a commit share revisions
        self._renewer: Any = None
        health.count("cluster.scorer.renewals", 0)
        health.count("cluster.scorer.renewals_failed", 0)

    def start(self) -> None:
        """Renew held leases from now on, on the connection's loop (until the link closes)."""
        if self._renewer is None:
            self._renewer = self.link.submit(self._renewing())

    async def _renewing(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.lease_timeout / 4)
            try:
                await self._renew()
            except Exception as exc:  # noqa: BLE001 - the log away: holds() runs out, the next round tries
                health.count("cluster.scorer.renewals_failed")
                log.warning("lease renewal failed", error=type(exc).__name__, detail=str(exc)[:200])

    async def _renew(self) -> None:
        kv = await self.link.bucket("leases")
        await kv.put(f"m-{self.me}", self._value("", time.time()))
        for part in list(self._held):
            if not await self._write(kv, part):
                log.warning("partition lease taken by another scorer; writing nothing more for it", partition=part)
        health.count("cluster.scorer.renewals")

    def tick(self, owned: set[int]) -> Plan:
        """Say which of ``owned`` were lost; take free or expired partitions up to the fair share
        (gained: those, and any held lease not in ``owned``)."""
        return self.link.call(self._tick(owned), timeout=60)

    def _value(self, checkpoint: str, now: float, token: str = "") -> bytes:
        return json.dumps({"owner": self.me, "until": now + self.cfg.lease_timeout, "token": token,
                           "checkpoint": checkpoint}).encode()

    async def _tick(self, owned: set[int]) -> Plan:
        kv = await self.link.bucket("leases")
        now = time.time()
        await kv.put(f"m-{self.me}", self._value("", now))
        members = 0
        for key in await _keys(kv, "m-"):
            value = _lease(await _get(kv, key))
            members += value is not None and value["until"] > now
        fair = math.ceil(self.cfg.partitions / max(1, members))
        lost = sorted(part for part in owned if part not in self._held)
        # held but not owned: taken by a round whose answer never reached the scorer (renewed since)
        gained = sorted(part for part in self._held if part not in owned)
        holding = set(owned) - set(lost) | set(gained)
        for part in range(self.cfg.partitions):
            if part in owned or part in holding or len(holding) >= fair:
                continue
            entry = await _get(kv, f"p{part}")
            lease = _lease(entry)
            if lease is not None and lease["until"] > now:
                continue
            if await self._take(kv, part, entry, lease):
                gained.append(part)
                holding.add(part)
        surplus = sorted(holding - set(gained))[fair:] if len(holding) > fair else []
        return Plan(gained, lost, surplus)

    async def _take(self, kv: Any, part: int, entry: Any, lease: dict[str, Any] | None) -> bool:
        """Take free lease ``part`` iff it is still at ``entry``'s revision (absent: create),
        keeping the checkpoint it names (the partition's before this release: object ``p<part>``)."""
        checkpoint = lease["checkpoint"] if lease is not None else f"p{part}"
        token = uuid.uuid4().hex
        async with self._writes:
            asked = time.monotonic()
            value = self._value(checkpoint, time.time(), token)
            try:
                if entry is None or entry.value is None or entry.operation is not None:
                    revision = await kv.create(f"p{part}", value)
                else:
                    revision = await kv.update(f"p{part}", value, last=entry.revision)
            except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.BadRequestError):
                return False
            self._held[part] = _Hold(revision, token, checkpoint)
            self._valid[part] = asked + self.cfg.lease_timeout / 2
            return True

    async def _write(self, kv: Any, part: int, checkpoint: str | None = None) -> bool:
        """Renew held lease ``part`` (naming ``checkpoint`` from now on, when given) at the
        revision last written; False, and the partition dropped, when another scorer wrote it
        since. A write whose answer was lost is recognised by this taking's token."""
        async with self._writes:
            hold = self._held.get(part)
            if hold is None:
                return False
            name = hold.checkpoint if checkpoint is None else checkpoint
            asked = time.monotonic()
            value = self._value(name, time.time(), hold.token)
            try:
                hold.revision = await kv.update(f"p{part}", value, last=hold.revision)
            except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.BadRequestError):
                entry = await _get(kv, f"p{part}")
                lease = _lease(entry)
                if lease is None or lease["owner"] != self.me or lease["token"] != hold.token:
                    self._held.pop(part, None)
                    self._valid.pop(part, None)
                    return False
                hold.revision = await kv.update(f"p{part}", value, last=entry.revision)
            hold.checkpoint = name
            self._valid[part] = asked + self.cfg.lease_timeout / 2
            return True

    def holds(self, part: int) -> bool:
        """Whether this scorer may still write for ``part`` (checkpoint, purge): until half the
        lease timeout after its last renewal was asked for, while others take it over only
        after the whole timeout (by the lease's wall-clock expiry), so a scorer whose renewals
        stalled past its lease never purges what the next owner still needs."""
        return time.monotonic() < self._valid.get(part, -math.inf)

    def lost(self, part: int) -> bool:
        """Whether ``part`` is not (or no longer) this scorer's: never taken, released, or found
        taken by another scorer at a renewal or commit."""
        return part not in self._held

    def checkpoint(self, part: int) -> str:
        """The object name of held partition ``part``'s committed checkpoint ("" when none)."""
        hold = self._held.get(part)
        return hold.checkpoint if hold is not None else ""

    def commit(self, part: int, checkpoint: str) -> bool:
        """Make object ``checkpoint`` the partition's checkpoint, by a renewal of its lease at the
        revision this scorer last wrote; False when the lease is no longer this scorer's."""
        async def commit() -> bool:
            return await self._write(await self.link.bucket("leases"), part, checkpoint)

        return bool(self.link.call(commit(), timeout=30))

    def release(self, part: int) -> None:
        """Give ``part`` up now (after its checkpoint), so another scorer may take it at once;
        the lease stays, expired, naming the checkpoint."""
        async def release() -> None:
            kv = await self.link.bucket("leases")
            async with self._writes:
                hold = self._held.pop(part, None)
                self._valid.pop(part, None)
                if hold is not None:
                    value = json.dumps({"owner": self.me, "until": 0.0, "token": "",
                                        "checkpoint": hold.checkpoint}).encode()
                    await kv.update(f"p{part}", value, last=hold.revision)

        try:
            self.link.call(release(), timeout=30)
        except Exception as exc:  # noqa: BLE001 - the lease then expires on its own
            log.warning("lease not released; it expires by itself", partition=part, error=type(exc).__name__)

    def leave(self, owned: set[int]) -> None:
        """Stop renewing; release every partition in ``owned`` and the membership (a clean stop)."""
        if self._renewer is not None:
            self._renewer.cancel()
        for part in sorted(owned):
            self.release(part)

        async def leave() -> None:
            await (await self.link.bucket("leases")).delete(f"m-{self.me}")

        try:
            self.link.call(leave(), timeout=30)
        except Exception as exc:  # noqa: BLE001 - the membership then expires on its own
            log.warning("membership not removed; it expires by itself", error=type(exc).__name__)


async def _get(kv: Any, key: str) -> Any:
    try:
        return await kv.get(key)
    except nats.js.errors.KeyNotFoundError:  # KeyDeletedError included
        return None


async def _keys(kv: Any, prefix: str) -> list[str]:
    """Keys of ``kv`` starting with ``prefix`` (filtered here: nats-server 2.9 ignores key filters)."""
    try:
        return [key for key in await kv.keys() if key.startswith(prefix)]
    except nats.js.errors.NoKeysError:
        return []


def _lease(entry: Any) -> dict[str, Any] | None:
    """A lease's value, or None when absent, deleted or not a lease (a foreign value). A
    lease of a release before leases named checkpoints names the object ``p<partition>``."""
    if entry is None or not entry.value or entry.operation is not None:
        return None
    try:
        value = json.loads(entry.value)
        part = entry.key[1:] if entry.key.startswith("p") else ""
        return {"owner": str(value["owner"]), "until": float(value["until"]), "token": str(value.get("token", "")),
                "checkpoint": str(value.get("checkpoint", f"p{part}"))}
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


class States:
    """Partition checkpoints in the ``P-state`` object store (bytes in the checkpoint format),
    each under a name of its own; the partition's lease names the one committed."""

    def __init__(self, link: Link) -> None:
        self.link = link

    def save(self, partition: int, data: bytes) -> str:
        """Store ``data`` as a new object; its name (not the partition's checkpoint until committed)."""
        name = f"p{partition}-{uuid.uuid4().hex}"

        async def save() -> None:
            await (await self.link.bucket("state", objects=True)).put(name, data)

        self.link.call(save(), timeout=120)
        return name

    def load(self, name: str) -> bytes | None:
        async def load() -> bytes | None:
            try:
                return (await (await self.link.bucket("state", objects=True)).get(name)).data
            except nats.js.errors.NotFoundError:
                return None

        return self.link.call(load(), timeout=120)

    def prune(self, partition: int, keep: str) -> None:
        """Remove the partition's checkpoints other than ``keep`` (the committed one): those of a
        scorer killed between writing one and committing it. For the partition's new owner only
        (none other is ever read), before its first checkpoint: the store is listed before this
        returns, as a listing still running then would take that checkpoint for one more to
        remove; the removals are not waited for."""
        async def uncommitted() -> list[str]:
            try:
                infos = await (await self.link.bucket("state", objects=True)).list(ignore_deletes=True)
            except nats.js.errors.NotFoundError:  # an empty store
                return []
            return [info.name for info in infos
                    if info.name != keep and (info.name == f"p{partition}" or info.name.startswith(f"p{partition}-"))]

        try:
            names = self.link.call(uncommitted(), timeout=60)
        except Exception as exc:  # noqa: BLE001 - left for the next owner to remove
            log.debug("checkpoints not pruned", partition=partition, error=type(exc).__name__)
            return
        for name in names:
            log.info("removing an uncommitted checkpoint", partition=partition, name=name)
            self.delete(name)

    def delete(self, name: str) -> None:
        """Remove object ``name`` (a checkpoint replaced, or one never committed); not waited for:
        one left behind only takes room."""
        async def delete() -> None:
            try:
                await (await self.link.bucket("state", objects=True)).delete(name)
            except Exception as exc:  # noqa: BLE001 - see above
                log.debug("checkpoint object not deleted", name=name, error=type(exc).__name__)

        self.link.submit(delete())


class Ledger:
    """The alert notifications scorers' hooks sent, in the ``P-alerts`` bucket (an alerts sink's ledger)."""

    def __init__(self, link: Link, me: str) -> None:
        self.link = link
        self.me = me

    def sent(self, key: str) -> bool:
        async def sent() -> bool:
            return await _get(await self.link.bucket("alerts"), key) is not None

        return bool(self.link.call(sent(), timeout=30))

    def mark(self, key: str) -> None:
        async def mark() -> None:
            await (await self.link.bucket("alerts")).put(key, self.me.encode())

        self.link.call(mark(), timeout=30)
