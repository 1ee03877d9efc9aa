"""Scoring speed and model memory at campus scale: can one core keep up with
1,000,000 hosts (IPv6 /64s counted) at 60-second intervals with <= 1 KB each?

Runs the learned detectors (population, baseline, drift, hosts) the way the engine
does, score then learn, on one interval of N synthetic hosts that are already
known (a first interval creates their state), and prints host-intervals per
second, the real-time margin against a 60 s interval, and bytes of model state
per host (the detectors' own count and the process's resident-memory growth).
Beside it, the peer: river's HalfSpaceTrees scoring and learning every host
one dict at a time, the obvious design, timed on a sample and printed as a ratio.

    .venv/bin/python tests/benchmarks/bench_scoring.py [--hosts 1000000]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from river.anomaly import HalfSpaceTrees

from netmon.batch import FEATURES, HostIntervals, Scored
from netmon.detect import baseline, drift, hosts as host_level, population, scaling
from netmon.detect.hoststate import HostKeys
from netmon.sinks.store import Store
from ratios import record

INTERVAL = 60.0
GROUPS = ("clients", "servers", "labs", "residences")


def rss() -> int:
    """Resident memory of this process, bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def fleet(n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    hosts = np.array([f"2001:db8:{i >> 16:x}:{i & 0xFFFF:x}::/64" for i in range(n)])
    groups = np.array(GROUPS)[rng.integers(0, len(GROUPS), n)]
    return hosts, groups


def interval(hosts: np.ndarray, groups: np.ndarray, start: float, seed: int) -> HostIntervals:
    """One interval's rows with the features the models read (the others are not needed)."""
    rng = np.random.default_rng(seed)
    n = hosts.shape[0]
    requests = rng.poisson(1.2, n).astype(float) + 1.0
    ports = np.minimum(requests, rng.integers(1, 3, n)).astype(float)
    poll = rng.integers(6, 11, n).astype(float)
    features = {
        "requests_out": requests,
        "replies_in": requests,
        "client_ports": ports,
        "bytes_out": requests * 76.0,
        "servers": np.minimum(requests, 4.0),
        "poll": poll,
        "rate_vs_poll": rng.lognormal(0.0, 0.1, n),
        "org_mismatch": np.where(rng.random(n) < 0.01, 1.0, 0.0),
        "after_kod": np.zeros(n),
        "replies_out": np.zeros(n),
        "ctl_out": np.zeros(n),
        "requests_in": np.zeros(n),
        "amplification": np.full(n, np.nan),
        "server_clients": requests * np.exp2(poll) / INTERVAL / 4.0,
        "server_own_ports": np.zeros(n),
        "server_requests": requests / 4.0,
        "server_requests_eff": requests / 4.0,
        "server_kod": np.zeros(n),
        "server_clients_avg": requests * np.exp2(poll) / INTERVAL / 4.0,
        "server_own_ports_avg": np.zeros(n),
    }
    return HostIntervals(start=start, end=start + INTERVAL, host=hosts, group=groups, role=np.full(n, "client"),
                         features=features)


def step(detectors: list, batch: HostIntervals) -> float:
    """Score then learn (all hosts normal), as the engine does (host keys hashed once); seconds taken."""
    t = time.perf_counter()
    keys = HostKeys.of(batch.host)
    for d in detectors:
        d.score(batch, keys)
    normal = np.ones(len(batch), dtype=bool)
    for d in detectors:
        d.learn(batch, normal, keys)
    return time.perf_counter() - t


def peer(batch: HostIntervals, names: tuple[str, ...], rows: int) -> float:
    """Seconds per host-interval for river's HalfSpaceTrees, score_one + learn_one per host."""
    x = scaling.unit_scaled(scaling.matrix(batch, names), names)[:rows]
    hst = HalfSpaceTrees(seed=1)
    dicts = [dict(zip(names, row)) for row in x.tolist()]
    for d in dicts[:300]:
        hst.learn_one(d)
    t = time.perf_counter()
    for d in dicts:
        hst.score_one(d)
        hst.learn_one(d)
    return (time.perf_counter() - t) / len(dicts)


def store_rate(batch: HostIntervals) -> float:
    """Host-intervals/s the embedded store writes and commits: this batch with every feature
    column filled (NaN where the fleet has none) and three detectors' scores, at two interval starts."""
    features = {name: batch.features.get(name, np.full(len(batch), np.nan)) for name in FEATURES}
    rng = np.random.default_rng(3)
    scores = {name: rng.random(len(batch)) for name in ("population", "baseline", "drift")}
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "netmon.db")
        seconds = 0.0
        for k in range(2):
            shifted = replace(batch, start=batch.start + k * INTERVAL, end=batch.end + k * INTERVAL, features=features)
            t = time.perf_counter()
            store.write(Scored(shifted, scores, []))
            store.commit()
            seconds += time.perf_counter() - t
        store.close()
    return 2 * len(batch) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hosts", type=int, default=1_000_000)
    parser.add_argument("--peer-rows", type=int, default=5000)
    args = parser.parse_args()
    n = args.hosts
    hosts, groups = fleet(n)
    pop = population.build(population.Config())
    detectors = [pop, baseline.build(baseline.Config()), drift.build(drift.Config()),
                 host_level.build(host_level.Config())]
    warm = min(n, 20_000)
    for k in range(12):  # let every group's forest pass its cold start on a small slice
        step([pop], interval(hosts[:warm], groups[:warm], k * INTERVAL, 100 + k))
    before = rss()
    first = step(detectors, interval(hosts, groups, 12 * INTERVAL, 1))
    batch = interval(hosts, groups, 13 * INTERVAL, 2)
    grown = rss() - before
    seconds = step(detectors, batch)
    rate = n / seconds
    state = sum(d.nbytes() for d in detectors)
    per_peer = peer(batch, tuple(population.Config().features), args.peer_rows)
    print(f"hosts per interval          {n:,}")
    print(f"first interval (new hosts)  {first:.2f} s")
    print(f"score + learn, known hosts  {seconds:.2f} s  ->  {rate:,.0f} host-intervals/s on one core")
    print(f"real-time margin at 60 s    {INTERVAL / seconds:.1f}x  (target >= 1x, i.e. >= {n / INTERVAL:,.0f}/s)")
    for d in detectors:
        print(f"  {d.name:<11} state       {d.nbytes() / n:8.1f} bytes/host")
    print(f"model state                 {state / n:.1f} bytes/host (target <= 1024)")
    print(f"resident memory growth      {grown / n:.1f} bytes/host (state, key strings, one interval's features)")
    print(f"peer: river HST per host    {1e6 * per_peer:.1f} us/host-interval -> {1 / per_peer:,.0f}/s")
    print(f"ratio netmon / peer         {rate * per_peer:.1f}x faster")
    record("scoring", "host-intervals/s, every model, one core", rate, "host-intervals/s", "higher",
           "river HalfSpaceTrees per host", 1 / per_peer)
    record("scoring", "host-intervals/s, every model, one core", rate, "host-intervals/s", "higher", bar=">= 500000")
    record("scoring", "model state per host", state / n, "bytes", "lower", bar="<= 1024")
    stored = store_rate(batch)
    print(f"embedded store (SQLite)     {stored:,.0f} host-intervals/s written and committed")
    record("store", "host-intervals/s into SQLite", stored, "host-intervals/s", "higher", bar=">= 200000")


if __name__ == "__main__":
    main()
