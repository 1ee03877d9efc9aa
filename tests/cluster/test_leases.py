"""Leases over a real nats-server: renewed apart from the scoring work, and fencing every write.

A :class:`~netmon.cluster.scorer.Scorer` is built in the test's process, so its thread
can be held busy (as by a long scoring step) while its connection's loop runs on.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from pathlib import Path

import nats.js.errors
import pytest

from netmon import health
from netmon.cluster.scorer import Scorer, Unit
from netmon.config import validate
from netmon.detect import checkpoint
from netmon.transport import jetstream
from tests.support.lab import wait_for
from tests.support.nats import BINARY, NatsServer

pytestmark = pytest.mark.skipif(not os.path.exists(BINARY), reason="needs nats-server (Debian nats-server)")

PARTITIONS = 2


def settings(nats: NatsServer, tmp: Path, node: str, lease_timeout: float):
    return validate({"campus": {"internal": ["10.0.0.0/8"]},
                     "detect": {"detectors": ["rules"], "checkpoint": ""},
                     "cluster": {"urls": [nats.url], "partitions": PARTITIONS, "lease_timeout": lease_timeout,
                                 "node_id": node},
                     "sinks": [{"type": "store", "path": str(tmp / f"{node}.db")}]})


def lease(link: jetstream.Link, part: int) -> dict:
    async def read() -> dict:
        kv = await link.js.key_value("netmon-leases")
        return json.loads((await kv.get(f"p{part}")).value)

    return link.call(read(), timeout=10)


def shut(scorer: Scorer) -> None:
    """Stop a scorer built in the test's process (its loop never ran): its connection, its sinks."""
    scorer.stop.set()
    scorer.link.close()
    for sink in scorer.sinks:
        sink.close()


def objects(link: jetstream.Link) -> list[str]:
    """Names of the objects in the state store (a read never racing a delete, unlike a get)."""
    async def names() -> list[str]:
        store = await link.js.object_store("netmon-state")
        try:
            return [info.name for info in await store.list(ignore_deletes=True)]
        except nats.js.errors.NotFoundError:  # none left
            return []

    return link.call(names(), timeout=30)


def test_a_scorer_busy_past_its_lease_timeout_keeps_its_leases_and_may_still_checkpoint(tmp_path: Path):
    """The scorer's thread does nothing after taking its partitions (stuck in a long scoring
    step): its leases are renewed anyway, another scorer takes none of them, and its
    checkpoints are still committed (before, renewals ran in that thread and lapsed)."""
    with NatsServer(tmp_path / "nats") as nats:
        busy = Scorer(settings(nats, tmp_path, "scorer-busy", 2.0), threading.Event())
        other_link = None
        try:
            busy.rebalance()
            assert sorted(busy.units) == list(range(PARTITIONS)), "the only scorer should take every partition"
            first = {part: lease(busy.link, part)["until"] for part in busy.units}
            renewed = wait_for(lambda: all(lease(busy.link, p)["until"] > first[p] + 2.0 for p in first), timeout=30)
            assert renewed, "leases were not renewed past their first expiry while the scorer's thread was busy"
            other_link = jetstream.Link(busy.cfg, "scorer-other", threading.Event())
            plan = jetstream.Leases(other_link, "scorer-other").tick(set())
            assert plan.gained == [], f"another scorer took {plan.gained} from a live, busy scorer"
            assert all(busy.leases.holds(p) for p in busy.units), "a renewed lease must let its scorer write"
            before = health.snapshot().get("cluster.scorer.checkpoints", 0)
            busy.save(busy.units[0])
            assert health.snapshot().get("cluster.scorer.checkpoints", 0) == before + 1, "checkpoint not committed"
        finally:
            if other_link is not None:
                other_link.close()
            shut(busy)


def test_a_checkpoint_of_a_former_owner_never_becomes_the_partitions_checkpoint(tmp_path: Path):
    """The lease of partition 0 passes to another scorer (which dies before checkpointing) while
    the former owner still believes it holds it and checkpoints: that late checkpoint must not
    be what the next owner restores, nor purge anything (the stale-checkpoint race)."""
    with NatsServer(tmp_path / "nats") as nats:
        old = Scorer(settings(nats, tmp_path, "scorer-old", 60.0), threading.Event())  # renews every 20 s
        new = None
        try:
            old.rebalance()
            unit = old.units[0]
            unit.seq = 7  # it consumed up to sequence 7 (as the stale checkpoint would say)

            async def taken_over() -> None:  # the lease expired; an intruder took it, then died
                kv = await old.link.js.key_value("netmon-leases")
                value = {"owner": "scorer-gone", "until": time.time() - 1, "token": "t", "checkpoint": ""}
                await kv.put("p0", json.dumps(value).encode())

            old.link.call(taken_over(), timeout=10)
            assert old.leases.holds(0), "the former owner should not have seen its lease go yet"
            fenced = health.snapshot().get("cluster.scorer.fenced", 0)
            old.save(unit)
            assert health.snapshot().get("cluster.scorer.fenced", 0) == fenced + 1, \
                "a checkpoint after the lease was taken must be refused (fenced)"
            assert not old.leases.holds(0), "a refused commit must stop every write for the partition"
            old.close_windows(unit, idle=True)
            assert 0 not in old.units, "a partition found taken must be dropped at once, not at the next lease round"
            orphan = old.states.save(0, b"written, then its scorer was killed before committing it")
            new = Scorer(settings(nats, tmp_path, "scorer-new", 60.0), threading.Event())
            new.rebalance()
            assert 0 in new.units, "the next scorer should take the expired partition"
            assert new.units[0].seq == 0, \
                f"the next owner restored the former owner's late checkpoint (sequence {new.units[0].seq})"
            assert wait_for(lambda: orphan not in objects(new.link), timeout=30), \
                "the new owner should remove checkpoints never committed"
        finally:
            for scorer in (old, new):
                if scorer is not None:
                    shut(scorer)


def test_a_scorer_starts_when_the_log_was_set_up_with_another_max_age(tmp_path: Path):
    """The alerts ledger's age limit follows ``max_age`` when made; a later config with another
    one must not stop the cluster from starting (the bucket is kept as it is)."""
    with NatsServer(tmp_path / "nats") as nats:
        for max_age in (3600.0, 7200.0):
            cfg = validate({"cluster": {"urls": [nats.url], "max_age": max_age}}).cluster
            link = jetstream.Link(cfg, "scorer-0", threading.Event())
            try:
                jetstream.ensure(link)
            finally:
                link.close()


def test_a_partition_taken_in_a_lease_round_whose_answer_was_lost_is_scored_at_the_next_round(tmp_path: Path):
    """A lease round takes the partitions, but its answer comes after the round's timeout (a
    slow or restarting nats-server): the scorer never learnt it took them, while its renewal
    task keeps their leases alive. The next round must hand them to the scorer, else nobody
    scores them and their stream only grows."""
    with NatsServer(tmp_path / "nats") as nats:
        scorer = Scorer(settings(nats, tmp_path, "scorer-late", 60.0), threading.Event())
        try:
            call = scorer.link.call

            def answered_too_late(coro, timeout=None):
                call(coro, timeout)
                raise TimeoutError("the lease round's answer came after its timeout")

            scorer.link.call = answered_too_late
            scorer.rebalance()
            del scorer.link.call
            assert not scorer.units, "a failed lease round should have given the scorer no partition"
            scorer.rebalance()
            assert sorted(scorer.units) == list(range(PARTITIONS)), \
                f"partitions leased in the lost round were left unscored (scoring {sorted(scorer.units)})"
        finally:
            shut(scorer)


def test_renewals_failing_while_nats_server_is_down_are_counted_fence_the_scorer_and_resume_after(tmp_path: Path):
    """nats-server stops under a scorer: each failed renewal round is counted, its checkpoints
    are refused (fenced) once its hold runs out, and when the server is back the same task
    renews the same leases (nobody took them) and checkpoints are committed again."""
    with NatsServer(tmp_path / "nats") as nats:
        scorer = Scorer(settings(nats, tmp_path, "scorer-0", 2.0), threading.Event())  # renews every 0.5 s
        try:
            scorer.rebalance()
            unit = scorer.units[0]
            failed = health.snapshot().get("cluster.scorer.renewals_failed", 0)
            nats.stop()
            assert wait_for(lambda: health.snapshot().get("cluster.scorer.renewals_failed", 0) > failed
                            and not scorer.leases.holds(0), timeout=30), \
                "renewals failing with the server down should be counted and end the scorer's hold"
            unit.seq = 3
            fenced = health.snapshot().get("cluster.scorer.fenced", 0)
            scorer.save(unit)
            assert health.snapshot().get("cluster.scorer.fenced", 0) == fenced + 1, \
                "a checkpoint without a renewed lease must be refused"
            nats.start()
            assert wait_for(lambda: scorer.leases.holds(0), timeout=60), \
                "the renewal task should renew the lease once the server is back"
            assert not scorer.leases.lost(0), "a lease nobody took should still be the scorer's"
            checkpoints = health.snapshot().get("cluster.scorer.checkpoints", 0)
            scorer.save(unit)
            assert health.snapshot().get("cluster.scorer.checkpoints", 0) == checkpoints + 1, \
                "a checkpoint after the renewals resumed should be committed"
            assert lease(scorer.link, 0)["checkpoint"] == scorer.leases.checkpoint(0), \
                "the lease should name the checkpoint just committed"
        finally:
            shut(scorer)


def test_a_new_owners_first_checkpoint_survives_its_removal_of_uncommitted_ones(tmp_path: Path):
    """The next owner of a partition removes the checkpoints a killed scorer never committed,
    and commits its own first checkpoint soon after: that one must stay, even when listing the
    store is slow (a listing still running then saw it too and removed it as one more orphan,
    leaving the lease naming a removed checkpoint: the next owner would start cold)."""
    with NatsServer(tmp_path / "nats") as nats:
        scorer = Scorer(settings(nats, tmp_path, "scorer-new", 60.0), threading.Event())
        try:
            orphan = scorer.states.save(0, b"written, then its scorer was killed before committing it")
            store = scorer.link.call(scorer.link.bucket("state", objects=True), timeout=10)
            listing = store.list

            async def slow_listing(**options):  # a busy server or loop: the listing starts late
                await asyncio.sleep(1.0)
                return await listing(**options)

            store.list = slow_listing
            scorer.rebalance()
            unit = scorer.units[0]
            unit.seq = 7
            scorer.save(unit)
            committed = scorer.leases.checkpoint(0)
            assert committed != orphan, "the first checkpoint should have been committed"
            assert wait_for(lambda: orphan not in objects(scorer.link), timeout=30), \
                "the new owner should remove checkpoints never committed"
            assert committed in objects(scorer.link), \
                "the removal of uncommitted checkpoints took the one just committed"
        finally:
            shut(scorer)


def test_a_lease_naming_a_checkpoint_of_another_partition_starts_the_partition_cold_not_the_scorer_crashing(
        tmp_path: Path):
    """A lease names its checkpoint by a name anyone with the bucket may write: one naming a
    sound checkpoint of another partition must be counted unusable and the partition start
    cold from its stream (it raised out of the lease round and stopped the scorer, at every
    restart again)."""
    with NatsServer(tmp_path / "nats") as nats:
        cfg = settings(nats, tmp_path, "scorer-0", 60.0)
        scorer = Scorer(cfg, threading.Event())
        try:
            other = Unit(1, cfg)
            other.seq = 9
            name = scorer.states.save(1, checkpoint.dumps(other.state()))

            async def foreign_lease() -> None:  # free (expired), naming partition 1's checkpoint
                kv = await scorer.link.js.key_value("netmon-leases")
                value = {"owner": "scorer-gone", "until": time.time() - 1, "token": "t", "checkpoint": name}
                await kv.put("p0", json.dumps(value).encode())

            scorer.link.call(foreign_lease(), timeout=10)
            foreign = health.snapshot().get("detect.checkpoint.foreign", 0)
            scorer.rebalance()
            assert 0 in scorer.units, "the scorer should take the partition whose lease expired"
            assert scorer.units[0].seq == 0, "a checkpoint of another partition must not be restored"
            assert health.snapshot().get("detect.checkpoint.foreign", 0) == foreign + 1, \
                "the unusable checkpoint should be counted"
        finally:
            shut(scorer)
