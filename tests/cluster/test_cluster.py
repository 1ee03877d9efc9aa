"""Collectors and scorers over a real nats-server (JetStream) give one process's answers.

The capture (deploy/samples/campus-runaway) is split packet by packet between two
collectors, as a host whose traffic crosses two border routers; two scorers share
the partitions by leases and write one store. What is promised (netmon/cluster):
host-intervals and per-host findings equal one process on the whole capture; the
population-level views equal one process on each partition's hosts.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import sqlite3
import struct
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from netmon import pipeline
from netmon.config import validate
from netmon.transport import partition
from tests.alerts.receivers import HttpReceiver, Received
from tests.support.lab import wait_for
from tests.support.nats import BINARY, NatsServer, free_port

pytestmark = pytest.mark.skipif(not os.path.exists(BINARY), reason="needs nats-server (Debian nats-server)")

SAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "samples" / "campus-runaway.pcap.gz"
CAMPUS = {"internal": ["10.20.0.0/16"]}
PER_HOST = ["rules", "baseline", "drift"]
PARTITIONS = 4


def split_capture(out: Path, ways: int = 2, capture: Path = SAMPLE) -> list[Path]:
    """The capture's packets (pcap, gzipped or not) dealt round-robin into ``ways`` pcap files,
    read and written record by record (a week-long simulation is gigabytes)."""
    opener = gzip.open if capture.suffix == ".gz" else open
    paths = [out / f"part{i}.pcap" for i in range(ways)]
    with opener(capture, "rb") as data:
        head = data.read(24)
        endian = "<" if head[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
        outs = [path.open("wb") for path in paths]
        try:
            for part in outs:
                part.write(head)
            n = 0
            while len(record := data.read(16)) == 16:
                caplen = struct.unpack_from(f"{endian}I", record, 8)[0]
                outs[n % ways].write(record + data.read(caplen))
                n += 1
        finally:
            for part in outs:
                part.close()
    return paths


def toml(value: object) -> str:
    if isinstance(value, dict):
        raise TypeError("tables are written by write_config")
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ", ".join(toml(v) for v in value) + "]"
    return repr(value)


def write_config(path: Path, nats: NatsServer, node: str, store: Path, detectors: list[str],
                 sources: list[Path] = (), metrics: int = 0, campus: dict = CAMPUS, alerts: str = "",
                 **cluster: object) -> Path:
    """A node's config; ``alerts``: the URL of a webhook its alerts go to, each request naming the node
    in header ``X-Node``."""
    settings = {"urls": [nats.url], "partitions": PARTITIONS, "lease_timeout": 5.0, "dead_collector": 60.0,
                "checkpoint_every": 0.0, "node_id": node, "collectors": ["collector-0", "collector-1"], **cluster}
    lines = ["[campus]", f"internal = {toml(campus['internal'])}", "[detect]", f"detectors = {toml(detectors)}",
             'checkpoint = ""', "[logging]", 'format = "json"', "[cluster]"]
    lines += [f"{k} = {toml(v)}" for k, v in settings.items()]
    for source in sources:
        lines += ["[[sources]]", 'type = "pcap"', f"paths = [{toml(str(source))}]"]
    lines += ["[[sinks]]", 'type = "store"', f"path = {toml(str(store))}"]
    if metrics:
        lines += ["[[sinks]]", 'type = "metrics"', f'listen = "127.0.0.1:{metrics}"']
    if alerts:
        lines += ["[[sinks]]", 'type = "alerts"', "backoff = 0.2", "backoff_max = 1.0", "[[sinks.hooks]]",
                  'kind = "webhook"', f"url = {toml(alerts)}", f"headers = {{ X-Node = {toml(node)} }}"]
    path.write_text("\n".join(lines) + "\n")
    return path


class Node:
    """One ``netmon run --role`` process, stopped by its PID."""

    def __init__(self, role: str, config: Path, log: Path) -> None:
        self.log = log
        self.proc = subprocess.Popen([sys.executable, "-m", "netmon", "run", "--role", role, "--config", str(config)],
                                     stdout=log.open("wb"), stderr=subprocess.STDOUT)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def text(self) -> str:
        return self.log.read_text(errors="replace")


def one_process(tmp: Path, detectors: list[str], hosts: set[str] | None = None,
                capture: Path = SAMPLE, campus: dict = CAMPUS) -> tuple[list, list]:
    """Host-intervals and findings of one process on the whole capture (only ``hosts``' rows
    when given: what one process on one partition's hosts sees)."""
    def only(stages: pipeline.Stages) -> None:
        if hosts is not None:
            stages.aggregator = OnlyHosts(stages.aggregator, hosts)

    return read_store(single_store(tmp, detectors, capture, campus, only))


def single_store(tmp: Path, detectors: list[str], capture: Path = SAMPLE, campus: dict = CAMPUS,
                 adapt: Callable[[pipeline.Stages], None] = lambda stages: None) -> Path:
    """The store one process writes from the capture; ``adapt`` may replace its stages first."""
    store = tmp / f"single-{len(list(tmp.glob('single-*.db')))}.db"
    settings = validate({"campus": campus, "detect": {"detectors": detectors, "checkpoint": ""},
                         "sources": [{"type": "pcap", "paths": [str(capture)]}],
                         "sinks": [{"type": "store", "path": str(store)}]})
    stages = pipeline.build(settings, restore=False)
    adapt(stages)
    pipeline.run(stages)
    return store


class OnlyHosts:
    """An aggregator that keeps only ``hosts``' intervals (one partition's view)."""

    def __init__(self, inner, hosts: set[str]) -> None:
        self.inner, self.hosts = inner, hosts
        self.lateness = inner.lateness

    def insert(self, rows):
        return self.inner.insert(rows)

    def _only(self, closed):
        out = [_subset(iv, [h in self.hosts for h in iv.host.tolist()]) for iv in closed]
        return [iv for iv in out if len(iv)]

    def advance(self, time):
        return self._only(self.inner.advance(time))

    def flush(self):
        return self._only(self.inner.flush())


def _subset(iv, keep):
    import numpy as np

    from netmon.batch import HostIntervals

    keep = np.asarray(keep, dtype=bool)
    hosts = set(iv.host[keep].tolist())
    return HostIntervals(iv.start, iv.end, iv.host[keep], iv.group[keep], iv.role[keep],
                         {k: v[keep] for k, v in iv.features.items()},
                         {h: s for h, s in iv.servers_by_host.items() if h in hosts})


def read_store(*paths: Path) -> tuple[list, list]:
    """(host-interval rows without scores, findings), sorted, from store files; a row two stores
    hold (a partition's tail scored again after a takeover) counts once if it is the same in both,
    and fails the test if not."""
    intervals, findings = set(), set()
    for path in paths:
        db = sqlite3.connect(path)
        try:
            columns = [r[1] for r in db.execute("PRAGMA table_info(intervals)")]
            plain = [c for c in columns if not c.startswith("score")]
            intervals |= set(db.execute(f"SELECT {', '.join(plain)} FROM intervals").fetchall())
            findings |= set(db.execute("SELECT * FROM findings").fetchall())
        finally:
            db.close()
    twice = {key for key, n in Counter((row[0], row[3]) for row in intervals).items() if n > 1}
    assert not twice, f"host-intervals written twice with different values: {sorted(twice)[:5]}"
    return sorted(intervals, key=repr), sorted(findings, key=repr)


def scores(path: Path) -> dict[tuple[str, float], tuple]:
    db = sqlite3.connect(path)
    try:
        columns = [r[1] for r in db.execute("PRAGMA table_info(intervals)") if r[1].startswith("score")]
        rows = db.execute(f"SELECT host, start, {', '.join(columns)} FROM intervals").fetchall()
    finally:
        db.close()
    return {(r[0], r[1]): r[2:] for r in rows}


def cluster_run(tmp: Path, nats: NatsServer, detectors: list[str], between=None, after=None,
                scorer_settings: tuple[dict, dict] = ({}, {}), capture: Path = SAMPLE, patience: float = 1.0,
                during=None, **cluster: object) -> list[Path]:
    """Two collectors (half the packets each) and two scorers; the scorers' stores. With
    ``between(scorers)``, the collectors run one after the other, ``between`` in the middle
    (once the first collector's messages are consumed and checkpointed); ``during(scorers,
    start)`` runs while both collectors run (``start(i)`` starts scorer ``i`` again, its log
    numbered on; put it into ``scorers`` to have it stopped at the end); ``after(scorers)``
    runs once both collectors have ended, before waiting for the scorers to finish.
    ``patience`` multiplies the waits for the collectors and the scorers (a longer capture)."""
    stores = [tmp / f"scorer-{i}.db" for i in range(2)]
    parts = split_capture(tmp, capture=capture)
    started = Counter[int]()

    def scorer(i: int) -> Node:
        config = write_config(tmp / f"s{i}.toml", nats, f"scorer-{i}", stores[i], detectors,
                              **{**cluster, **scorer_settings[i]})
        started[i] += 1
        return Node("scorer", config, tmp / (f"scorer-{i}.log" if started[i] == 1 else f"scorer-{i}.{started[i]}.log"))

    scorers = [scorer(i) for i in range(2)]

    def collector(i: int) -> Node:
        config = write_config(tmp / f"c{i}.toml", nats, f"collector-{i}", stores[i], detectors, [parts[i]], **cluster)
        return Node("collector", config, tmp / f"collector-{i}.log")

    def finished(node: Node) -> None:
        assert node.proc.wait(120 * patience) == 0, f"collector failed:\n{node.text()[-3000:]}"

    try:
        assert wait_for(lambda: all("partition taken" in s.text() for s in scorers), timeout=60), \
            "both scorers should own partitions before the collectors start"
        if between is None:
            nodes = [collector(0), collector(1)]
            if during is not None:
                during(scorers, scorer)
            for node in nodes:
                finished(node)
        else:
            finished(collector(0))
            assert wait_for(lambda: consumed(nats), timeout=90), "scorers did not consume the first collector's part"
            between(scorers)
            finished(collector(1))
        if after is not None:
            after(scorers)
        assert wait_for(lambda: consumed(nats), timeout=90 * patience), "scorers did not consume every message"
    finally:
        for s in scorers:
            s.stop()
    return stores


def consumed(nats: NatsServer) -> bool:
    """Every published message consumed and checkpointed (scorers purge what their checkpoints cover)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{nats.monitor}/jsz?streams=true", timeout=2) as reply:
            info = json.load(reply)
    except OSError:  # restarting
        return False
    streams = [s for a in info.get("account_details", []) for s in a.get("stream_detail", [])
               if s["name"] == "netmon-obs"]
    return bool(streams) and streams[0]["state"]["messages"] == 0


def test_a_scorer_killed_mid_run_is_taken_over_within_the_lease_and_nothing_is_lost_or_written_twice(tmp_path: Path):
    expected_intervals, expected_findings = one_process(tmp_path, PER_HOST)
    killed: list[float] = []

    def kill(scorers: list[Node]) -> None:
        killed.append(time.time())
        scorers[0].stop(signal.SIGKILL)
        assert wait_for(lambda: taken_after(scorers[1], killed[0]) >= 2, timeout=30), \
            f"the surviving scorer took no partition of the killed one:\n{scorers[1].text()[-2000:]}"

    with NatsServer(tmp_path / "nats") as nats:
        stores = cluster_run(tmp_path, nats, PER_HOST, between=kill)
    intervals, findings = read_store(*stores)
    assert intervals == expected_intervals, "host-intervals after a takeover differ from one process"
    assert findings == expected_findings, "findings after a takeover differ from one process"
    took = first_taken_after(tmp_path / "scorer-1.log", killed[0]) - killed[0]
    assert took <= 5.0 + 5.0 / 3 + 3.0, f"takeover took {took:.1f} s; lease timeout 5 s, renewed every 1.7 s"


def test_a_tail_scored_again_after_a_takeover_writes_nothing_twice(tmp_path: Path):
    """scorer-0 checkpoints never (checkpoint_every one hour) and is killed after writing
    intervals: scorer-1 takes its partitions from their first checkpoint and scores the whole
    tail again; every host-interval both stores hold is the same in both, and the union is
    one process's answer."""
    expected_intervals, expected_findings = one_process(tmp_path, PER_HOST)

    def kill(scorers: list[Node]) -> None:
        assert wait_for(lambda: rows(tmp_path / "scorer-0.db") > 0, timeout=60), "scorer-0 wrote nothing"
        scorers[0].stop(signal.SIGKILL)

    with NatsServer(tmp_path / "nats") as nats:
        stores = cluster_run(tmp_path, nats, PER_HOST, after=kill, scorer_settings=({"checkpoint_every": 3600.0}, {}))
    intervals, findings = read_store(*stores)  # fails on a host-interval written twice with different values
    assert intervals == expected_intervals, "host-intervals after a replayed tail differ from one process"
    assert findings == expected_findings, "findings after a replayed tail differ from one process"
    twice = keys(stores[0]) & keys(stores[1])
    assert twice, "the killed scorer's intervals should have been scored again by the other (the replayed tail)"


def rows(store: Path) -> int:
    if not store.exists():
        return 0
    db = sqlite3.connect(store)
    try:
        return db.execute("SELECT count(*) FROM intervals").fetchone()[0]
    except sqlite3.OperationalError:  # no table yet
        return 0
    finally:
        db.close()


def keys(store: Path) -> set:
    db = sqlite3.connect(store)
    try:
        return set(db.execute("SELECT host, start FROM intervals").fetchall())
    finally:
        db.close()


def test_a_nats_server_restart_mid_run_loses_nothing(tmp_path: Path):
    expected_intervals, expected_findings = one_process(tmp_path, PER_HOST)
    with NatsServer(tmp_path / "nats") as nats:
        stores = cluster_run(tmp_path, nats, PER_HOST, between=lambda scorers: nats.restart())
    intervals, findings = read_store(*stores)
    assert intervals == expected_intervals, "host-intervals differ from one process after a nats-server restart"
    assert findings == expected_findings, "findings differ from one process after a nats-server restart"


def taken(log: str) -> list[float]:
    """When the scorer took partitions (UNIX s), from its JSON log lines."""
    from datetime import datetime

    times = []
    for line in log.splitlines():
        if line.startswith("{") and '"partition taken"' in line:
            stamp = json.loads(line)["timestamp"]
            times.append(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp())
    return times


def taken_after(node: Node, since: float) -> int:
    return sum(t > since for t in taken(node.text()))


def first_taken_after(log: Path, since: float) -> float:
    return min(t for t in taken(log.read_text()) if t > since)


def test_a_stopped_collector_holds_windows_only_until_its_timeout_and_health_says_so(tmp_path: Path):
    """collector-1 is expected but never speaks (its router died): the scorers wait
    ``dead_collector`` seconds for it, then close collector-0's windows alone and count it."""
    part0 = split_capture(tmp_path)[0]
    expected_intervals, expected_findings = one_process(tmp_path, PER_HOST, capture=part0)
    ports = [free_port(), free_port()]
    with NatsServer(tmp_path / "nats") as nats:
        stores = [tmp_path / f"scorer-{i}.db" for i in range(2)]
        scorers = [Node("scorer", write_config(tmp_path / f"s{i}.toml", nats, f"scorer-{i}", stores[i], PER_HOST,
                                               metrics=ports[i], dead_collector=5.0), tmp_path / f"scorer-{i}.log")
                   for i in range(2)]
        try:
            assert wait_for(lambda: all("partition taken" in s.text() for s in scorers), timeout=60)
            config = write_config(tmp_path / "c0.toml", nats, "collector-0", stores[0], PER_HOST, [part0])
            collector = Node("collector", config, tmp_path / "collector-0.log")
            assert collector.proc.wait(120) == 0, collector.text()[-3000:]
            assert wait_for(lambda: consumed(nats), timeout=60), "scorers did not consume collector-0's messages"
            assert wait_for(lambda: all(stalled(port, "collector-1") for port in ports), timeout=60), \
                "the scorers' health should count collector-1 as stalled (dead) after its timeout"
            def silent() -> int:
                return sum(s.text().count('"source": "collector-1", "seconds"') for s in scorers)

            assert wait_for(lambda: silent() >= PARTITIONS, timeout=60), \
                f"every partition should stop waiting for collector-1; {silent()} of {PARTITIONS} did"
        finally:
            for s in scorers:
                s.stop()
    intervals, findings = read_store(*stores)
    assert intervals == expected_intervals, "the live collector's host-intervals differ from one process on its part"
    assert findings == expected_findings


def metrics_text(port: int) -> str:
    """The /metrics page of the node listening on ``port`` ("" while unreachable)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as reply:
            return reply.read().decode()
    except OSError:
        return ""


def stalled(port: int, collector: str) -> bool:
    """Whether the scorer's /metrics counts ``collector`` stalled at least once."""
    text = metrics_text(port)
    return any(line.startswith("netmon_pipeline_source_stalled_total") and f'source="{collector}"' in line
               and float(line.rsplit(" ", 1)[1]) >= 1 for line in text.splitlines())


def test_two_collectors_and_two_scorers_equal_one_process_as_documented(tmp_path: Path):
    """The capture split packet by packet between two collectors, two scorers, every detector
    on: features and per-host findings as one process on the whole capture;
    the population forest and the hosts detector's group view as one process given only the
    hosts of each partition (what the partition's scorer sees): the documented promise."""
    everything = ["rules", "hosts", "population", "baseline", "drift"]
    whole_intervals, whole_findings = one_process(tmp_path, everything)
    hosts = {row[0] for row in whole_intervals}
    by_part: dict[int, set[str]] = {}
    for host, part in zip(sorted(hosts), partition.of_names(sorted(hosts), PARTITIONS).tolist()):
        by_part.setdefault(part, set()).add(host)
    expected_findings: set = set()
    expected_scores: dict = {}
    for part, members in by_part.items():
        _, findings = one_process(tmp_path, everything, hosts=members)
        expected_findings |= set(findings)
        expected_scores.update(scores(sorted(tmp_path.glob("single-*.db"))[-1]))
    with NatsServer(tmp_path / "nats") as nats:
        stores = cluster_run(tmp_path, nats, everything)
    intervals, findings = read_store(*stores)
    assert intervals == whole_intervals, "features must not depend on the partitioning"
    per_host = {f for f in findings if f[4].startswith("rule.") or f[4] in ("model.baseline", "model.drift")}
    whole_per_host = {f for f in whole_findings if f[4].startswith("rule.") or f[4] in ("model.baseline", "model.drift")}
    assert per_host == whole_per_host, "per-host findings must equal one process on the whole capture"
    assert set(findings) == expected_findings, "findings must equal one process on each partition's hosts"
    got = {}
    for store in stores:
        got.update(scores(store))
    assert got == expected_scores, "scores must equal one process on each partition's hosts"


def test_a_full_stream_makes_the_collector_wait_and_report_lag_then_nothing_is_lost(tmp_path: Path):
    """No scorer yet and a 1 MiB stream: the collector's publishes are refused, it waits and
    counts (its /metrics), holding no more than a batch; a scorer then drains the stream and
    the result is one process's."""
    expected_intervals, expected_findings = one_process(tmp_path, PER_HOST)
    port = free_port()
    store = tmp_path / "scorer.db"
    with NatsServer(tmp_path / "nats") as nats:
        limits = {"max_bytes": 1 << 20, "collectors": ["collector-0"]}
        config = write_config(tmp_path / "c.toml", nats, "collector-0", store, PER_HOST, [SAMPLE], metrics=port, **limits)
        collector = Node("collector", config, tmp_path / "collector.log")
        scorer = None
        try:
            assert wait_for(lambda: metric(port, "netmon_transport_publish_retries_total") > 0
                            and metric(port, "netmon_transport_publish_blocked_seconds") > 0, timeout=60), \
                f"a full stream should show as publish retries and lag:\n{collector.text()[-2000:]}"
            assert collector.proc.poll() is None, "the collector should wait, not end or drop"
            scorer = Node("scorer", write_config(tmp_path / "s.toml", nats, "scorer-0", store, PER_HOST, **limits),
                          tmp_path / "scorer.log")
            assert collector.proc.wait(120) == 0, collector.text()[-3000:]
            assert wait_for(lambda: consumed(nats), timeout=90), "the scorer did not consume every message"
        finally:
            collector.stop()
            if scorer is not None:
                scorer.stop()
    intervals, findings = read_store(store)
    assert intervals == expected_intervals, "host-intervals differ from one process after the stream was full"
    assert findings == expected_findings


def metric(port: int, name: str) -> float:
    """The value of metric ``name`` on /metrics (0 when absent or unreachable)."""
    text = metrics_text(port)
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.split("{")[0].split(" ")[0] == name)


def test_a_former_owners_consumer_takes_nothing_the_new_owner_needs(tmp_path: Path):
    """The old owner of a partition still fetches (it has not yet seen its lease go) while the
    new owner consumes from the same point: the new owner must receive every message. (With
    one consumer per partition shared by name, the old owner's fetches could take some.)"""
    import threading

    from netmon.transport import jetstream, wire

    with NatsServer(tmp_path / "nats") as nats:
        cfg = validate({"cluster": {"urls": [nats.url], "partitions": 1}}).cluster
        stop = threading.Event()
        links = [jetstream.Link(cfg, f"scorer-{i}", stop) for i in range(2)]
        try:
            jetstream.ensure(links[0])
            old, new = (jetstream.Feed(link) for link in links)
            old.open(0, 0)
            new.open(0, 0)
            jetstream.Publisher(links[0]).send([(0, f"m{i}", wire.encode(wire.MARK, "c", i, float(i)))
                                                for i in range(40)])
            got: list[int] = []

            def drained() -> bool:
                while not new.out.empty():
                    got.append(new.out.get().seq)
                return len(got) >= 40

            assert wait_for(drained, timeout=60), f"the new owner received {len(got)} of 40 messages"
            assert got == list(range(1, 41)), "the new owner must receive every message, in order"
        finally:
            stop.set()
            for link in links:
                link.close()


def test_a_partition_closed_and_opened_again_leaves_no_inbox_subscription_behind(tmp_path: Path):
    """Each open of a partition subscribes an inbox on the scorer's connection; its close (a
    lease lost, a takeover) must drop it, or every change of owner leaves one for good."""
    import threading

    from netmon.transport import jetstream

    with NatsServer(tmp_path / "nats") as nats:
        cfg = validate({"cluster": {"urls": [nats.url], "partitions": 1}}).cluster
        stop = threading.Event()
        link = jetstream.Link(cfg, "scorer-0", stop)

        def subscriptions() -> int:
            with urllib.request.urlopen(f"http://127.0.0.1:{nats.monitor}/connz?subs=1", timeout=5) as answer:
                return sum(len(c.get("subscriptions_list", [])) for c in json.load(answer)["connections"])

        try:
            jetstream.ensure(link)
            feed = jetstream.Feed(link)
            feed.open(0, 0)
            feed.close(0)  # the first open made the client's request inbox too: count from here
            assert wait_for(lambda: subscriptions() <= 1, timeout=30), "the first close left its inbox"
            before = subscriptions()
            for _ in range(3):
                feed.open(0, 0)
                feed.close(0)
            assert wait_for(lambda: subscriptions() == before, timeout=30), \
                f"{subscriptions() - before} inbox subscriptions left behind by 3 closed partitions"
        finally:
            stop.set()
            link.close()


def test_messages_fetched_before_a_partition_was_closed_are_told_from_those_of_its_new_opening(tmp_path: Path):
    """A partition lost and taken again while its old fetches still wait in the queue: the scorer
    restores from the checkpoint, and old fetches consumed first would make the messages from the
    checkpoint up to them look like duplicates (rows lost). Only the new opening's are current."""
    import threading

    from netmon.transport import jetstream, wire

    with NatsServer(tmp_path / "nats") as nats:
        cfg = validate({"cluster": {"urls": [nats.url], "partitions": 1}}).cluster
        stop = threading.Event()
        link = jetstream.Link(cfg, "scorer-0", stop)
        try:
            jetstream.ensure(link)
            feed = jetstream.Feed(link)
            jetstream.Publisher(link).send([(0, f"m{i}", wire.encode(wire.MARK, "c", i, float(i)))
                                            for i in range(20)])
            feed.open(0, 0)
            assert wait_for(lambda: feed.out.qsize() >= 20, timeout=60), "the first opening fetched too little"
            feed.close(0)
            feed.open(0, 0)  # taken again, from a checkpoint before all of them
            stale: list[int] = []
            fresh: list[int] = []

            def drained() -> bool:
                while not feed.out.empty():
                    delivery = feed.out.get()
                    (fresh if feed.current(delivery) else stale).append(delivery.seq)
                return len(fresh) >= 20

            assert wait_for(drained, timeout=60), f"the new opening delivered {len(fresh)} of 20 messages"
            assert stale[:20] == list(range(1, 21)), "the closed opening's fetches must not count as current"
            assert fresh == list(range(1, 21)), "the new opening must deliver every message from its start"
        finally:
            stop.set()
            link.close()


class FirstThenRefused(HttpReceiver):
    """A webhook that, while ``gate`` names a node, refuses every notification once that node's
    first arrived (HTTP 503: the node's next deliveries fail, as if it died right after the first)."""

    gate = ""

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                refused = bool(receiver.gate and receiver.sent_by(receiver.gate))
                if not refused:
                    receiver.received.append(Received(self.path, dict(self.headers), body))
                self.send_response(503 if refused else 200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = None
        self.handler = Handler

    def sent_by(self, node: str) -> int:
        return sum(r.headers.get("X-Node") == node for r in list(self.received))


def notifications(received: list) -> list[tuple]:
    """Each notification a webhook received: (alert id, event, updated_at), in arrival order."""
    return [(body["id"], body["event"], body["updated_at"]) for body in (r.json() for r in received)]


def one_process_notifications(tmp: Path, url: str, detectors: list[str]) -> None:
    """One process on the whole capture, its alerts to the webhook at ``url`` (delivered before it returns)."""
    settings = validate({"campus": CAMPUS, "detect": {"detectors": detectors, "checkpoint": ""},
                         "sources": [{"type": "pcap", "paths": [str(SAMPLE)]}],
                         "sinks": [{"type": "store", "path": str(tmp / "single-alerts.db")},
                                   {"type": "alerts", "hooks": [{"kind": "webhook", "url": url}]}]})
    pipeline.run(pipeline.build(settings, restore=False))


def ledger_marks(nats: NatsServer, node: str) -> int:
    """Notifications the alerts ledger (bucket netmon-alerts) records as sent by scorer ``node``."""
    import threading

    from netmon.transport import jetstream

    link = jetstream.Link(validate({"cluster": {"urls": [nats.url]}}).cluster, "test-reader", threading.Event())

    async def count() -> int:
        kv = await link.js.key_value("netmon-alerts")
        try:
            keys = await kv.keys()
        except Exception:  # noqa: BLE001 - no key yet
            return 0
        return [(await kv.get(key)).value for key in keys].count(node.encode())

    try:
        return link.call(count(), timeout=30)
    finally:
        link.close()


@pytest.mark.parametrize("checkpoint_every", [3600.0, 0.0], ids=["tail-scored-again", "checkpoint-each-interval"])
def test_a_scorer_killed_right_after_it_alerted_is_taken_over_without_any_alert_sent_twice(tmp_path: Path,
                                                                                          checkpoint_every: float):
    """scorer-0 owns every partition, alerts a real webhook, and is SIGKILLed once what it sent is
    recorded (its later deliveries refused meanwhile, as if it died right after). scorer-1 takes over
    from scorer-0's checkpoints (none: it scores the whole capture again; or one per interval:
    it restores the open alerts): the webhook then holds exactly one process's notifications, once each."""
    receiver = FirstThenRefused().start()
    try:
        one_process_notifications(tmp_path, receiver.url, PER_HOST)
        expected = notifications(receiver.received)
        assert len(set(expected)) == len(expected) >= 2, f"one process should alert more than once, once each: {expected}"
        receiver.received.clear()
        receiver.gate = "scorer-0"
        sent_by = receiver.sent_by

        parts = split_capture(tmp_path)
        stores = [tmp_path / f"scorer-{i}.db" for i in range(2)]
        with NatsServer(tmp_path / "nats") as nats:
            first = Node("scorer", write_config(tmp_path / "s0.toml", nats, "scorer-0", stores[0], PER_HOST,
                                                alerts=receiver.url, checkpoint_every=checkpoint_every),
                         tmp_path / "scorer-0.log")
            second = None
            try:
                assert wait_for(lambda: first.text().count("partition taken") == PARTITIONS, timeout=60), \
                    f"scorer-0 alone should take every partition:\n{first.text()[-2000:]}"
                for i in range(2):
                    config = write_config(tmp_path / f"c{i}.toml", nats, f"collector-{i}", stores[0], PER_HOST,
                                          [parts[i]])
                    collector = Node("collector", config, tmp_path / f"collector-{i}.log")
                    assert collector.proc.wait(120) == 0, collector.text()[-3000:]
                assert wait_for(lambda: sent_by("scorer-0") >= 1, timeout=90), \
                    f"scorer-0 sent no alert:\n{first.text()[-2000:]}"
                assert wait_for(lambda: ledger_marks(nats, "scorer-0") >= sent_by("scorer-0"), timeout=30), \
                    "scorer-0's delivered notifications should be recorded in the ledger"
                first.stop(signal.SIGKILL)
                receiver.gate = ""
                second = Node("scorer", write_config(tmp_path / "s1.toml", nats, "scorer-1", stores[1], PER_HOST,
                                                     alerts=receiver.url), tmp_path / "scorer-1.log")
                assert wait_for(lambda: consumed(nats), timeout=120), "scorer-1 did not consume every message"
                assert wait_for(lambda: len(receiver.received) >= len(expected), timeout=60), \
                    f"{len(receiver.received)} of {len(expected)} notifications arrived"
            finally:
                first.stop(signal.SIGKILL)
                if second is not None:
                    second.stop()  # hands what is queued to the webhook before it ends
        got = notifications(receiver.received)
        twice = [n for n, k in Counter(got).items() if k > 1]
        assert not twice, f"notifications sent twice across the takeover: {twice}"
        assert sorted(got) == sorted(expected), "the notifications should be one process's"
        assert sent_by("scorer-0") >= 1 and sent_by("scorer-1") >= 1, "both scorers should have sent some"
    finally:
        receiver.stop()
