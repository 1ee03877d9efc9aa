"""Scoring speed and model memory at campus scale: can one core keep up with
1,000,000 hosts (IPv6 /64s counted) at 60-second intervals with <= 1 KB each?

Runs every detector (rules, population, baseline, drift, hosts) through the engine
(score, flagged hosts kept out, learn) on one interval of N synthetic hosts that are
already known (a first interval creates their state; one host in 10,000 ignores KoD,
so the rules flag some), after a warm-up on 20,000 of them long enough for every
group's population forest to score (its trees walked for every host), and prints
host-intervals per second, the real-time margin against a 60 s interval, and bytes of
model state per host (the detectors' own count and the process's resident-memory
growth); then where that interval's CPU went,
per detector (its score and its learn) and in the engine's shared work (hashing
the host keys once, keeping the flagged hosts out).
Beside it, the peer: river's HalfSpaceTrees scoring and learning every host
one dict at a time, the obvious design, timed on a sample and printed as a ratio.

    .venv/bin/python tests/benchmarks/bench_scoring.py [--hosts 1000000]
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from river.anomaly import HalfSpaceTrees

from netmon import registry
from netmon.batch import FEATURES, HostIntervals, Scored
from netmon.config import validate
from netmon.detect import population, scaling
from netmon.detect.engine import Engine
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
    # in no order of their text, as the aggregator hands them over (by hash of the address)
    hosts = np.array([f"2001:db8:{i >> 16:x}:{i & 0xFFFF:x}::/64" for i in rng.permutation(n).tolist()])
    groups = np.array(GROUPS)[rng.integers(0, len(GROUPS), n)]
    return hosts, groups


def interval(hosts: np.ndarray, groups: np.ndarray, start: float, seed: int) -> HostIntervals:
    """One interval's rows, every feature as the aggregator gives it (counts not drawn here are 0)."""
    rng = np.random.default_rng(seed)
    n = hosts.shape[0]
    requests = rng.poisson(1.2, n).astype(float) + 1.0
    ports = np.minimum(requests, rng.integers(1, 3, n)).astype(float)
    poll = rng.integers(6, 11, n).astype(float)
    ignoring = rng.random(n) < 1e-4
    features = {name: np.zeros(n) for name in FEATURES}
    features |= {
        "requests_out": requests,
        "replies_in": requests,
        "client_ports": ports,
        "bytes_out": requests * 76.0,
        "servers": np.minimum(requests, 4.0),
        "poll": poll,
        "rate_vs_poll": rng.lognormal(0.0, 0.1, n),
        "org_mismatch": np.where(rng.random(n) < 0.01, 1.0, 0.0),
        "after_kod": np.where(ignoring, 5.0, 0.0),
        "kod_rate": np.where(ignoring, 2.0, 0.0),
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


#: Seconds between the warm-up intervals: the population detector learns only hosts it has known for
#: its ``persist`` time (2 h), so a warm-up of back-to-back minutes would never build its forests.
WARM_GAP = 900.0


def warm_steps() -> int:
    """Warm-up intervals until every group's forest scores: its hosts known for ``persist``
    seconds, then ``sample`` rows learned per interval until its first window is full."""
    cfg = population.Config()
    return math.ceil(cfg.persist / WARM_GAP) + math.ceil(max(cfg.min_learned, cfg.window_size) / cfg.sample) + 1


def engine() -> Engine:
    """Every registered detector at its defaults, no checkpoint."""
    settings = validate({"detect": {"checkpoint": "", "detectors": list(registry.DETECTORS)}})
    return Engine(settings.detect, restore=False)


@dataclass
class Took:
    """Seconds of wall clock and of this process's CPU (on a loaded machine the CPU
    seconds say what one core does; the wall clock also counts the others' turns)."""

    wall: float = 0.0
    cpu: float = 0.0

    def __add__(self, other: "Took") -> "Took":
        return Took(self.wall + other.wall, self.cpu + other.cpu)


def took(action: Callable[[], object]) -> Took:
    wall, cpu = time.perf_counter(), time.process_time()
    action()
    return Took(time.perf_counter() - wall, time.process_time() - cpu)


def step(scorer: Engine, batch: HostIntervals) -> Took:
    """One interval through the engine (score, gate, learn)."""
    return took(lambda: scorer.process(batch))


class Breakdown:
    """CPU seconds each detector's ``score`` and ``learn`` take inside the engine, by
    wrapping the detectors' bound methods (the engine calls them as before)."""

    def __init__(self, scorer: Engine) -> None:
        self.spent: dict[tuple[str, str], float] = {}
        for name, detector in scorer.detectors.items():
            for method in ("score", "learn"):
                if hasattr(detector, method):
                    setattr(detector, method, self._timed(name, method, getattr(detector, method)))

    def _timed(self, name: str, method: str, call: Callable[..., object]) -> Callable[..., object]:
        def timed(*args: object) -> object:
            cpu = time.process_time()
            try:
                return call(*args)
            finally:
                self.spent[name, method] = self.spent.get((name, method), 0.0) + time.process_time() - cpu
        return timed

    def reset(self) -> None:
        self.spent.clear()

    def lines(self, total: float, n: int) -> list[str]:
        """One line per detector (score, learn, us per host-interval) and one for the engine's own work."""
        names = dict.fromkeys(name for name, _ in self.spent)
        out = []
        for name in names:
            score, learn = self.spent.get((name, "score"), 0.0), self.spent.get((name, "learn"), 0.0)
            out.append(f"  {name:<11} score {score:6.3f} s  learn {learn:6.3f} s  "
                       f"-> {1e6 * (score + learn) / n:5.2f} us/host-interval")
        rest = total - sum(self.spent.values())
        out.append(f"  {'engine':<11} (host keys, gate) {rest:6.3f} s        -> {1e6 * rest / n:5.2f} us/host-interval")
        return out


def peer(batch: HostIntervals, names: tuple[str, ...], rows: int) -> float:
    """CPU seconds per host-interval for river's HalfSpaceTrees, score_one + learn_one per host."""
    x = scaling.unit_scaled(scaling.matrix(batch, names), names)[:rows]
    hst = HalfSpaceTrees(seed=1)
    dicts = [dict(zip(names, row)) for row in x.tolist()]
    for d in dicts[:300]:
        hst.learn_one(d)
    t = time.process_time()
    for d in dicts:
        hst.score_one(d)
        hst.learn_one(d)
    return (time.process_time() - t) / len(dicts)


def store_time(batch: HostIntervals) -> Took:
    """Time the embedded store takes to write and commit this batch with three detectors'
    scores, at two interval starts (2 x len(batch) host-intervals)."""
    rng = np.random.default_rng(3)
    scores = {name: rng.random(len(batch)) for name in ("population", "baseline", "drift")}
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "netmon.db")
        spent = Took()
        for k in range(2):
            shifted = replace(batch, start=batch.start + k * INTERVAL, end=batch.end + k * INTERVAL)
            spent += took(lambda: (store.write(Scored(shifted, scores, [])), store.commit()))
        store.close()
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hosts", type=int, default=1_000_000)
    parser.add_argument("--peer-rows", type=int, default=5000)
    args = parser.parse_args()
    n = args.hosts
    hosts, groups = fleet(n)
    scorer = engine()
    breakdown = Breakdown(scorer)
    detectors = [d for d in scorer.detectors.values() if hasattr(d, "nbytes")]
    warm = min(n, 20_000)
    steps = warm_steps()
    for k in range(steps):  # let every group's forest pass its cold start on a small slice
        step(scorer, interval(hosts[:warm], groups[:warm], k * WARM_GAP, 100 + k))
    start = steps * WARM_GAP
    before = rss()
    first = step(scorer, interval(hosts, groups, start, 1))
    batch = interval(hosts, groups, start + INTERVAL, 2)
    grown = rss() - before
    breakdown.reset()
    scored: list[Scored] = []
    spent = took(lambda: scored.append(scorer.process(batch)))
    rate = n / spent.cpu
    state = sum(d.nbytes() for d in detectors)
    per_peer = peer(batch, tuple(population.Config().features), args.peer_rows)
    print(f"hosts per interval          {n:,}")
    print(f"first interval (new hosts)  {first.wall:.2f} s ({first.cpu:.2f} s CPU)")
    print(f"score + learn, known hosts  {spent.cpu:.2f} s CPU  ->  {rate:,.0f} host-intervals per CPU-second "
          f"({n / spent.wall:,.0f}/s of wall clock)")
    print(f"real-time margin at 60 s    {INTERVAL / spent.wall:.1f}x of wall clock  "
          f"(target >= 1x, i.e. >= {n / INTERVAL:,.0f}/s)")
    forest = int(np.count_nonzero(~np.isnan(scored[0].scores["population"])))
    print(f"population forests scored   {forest:,} of {n:,} hosts (a model scores once it has learned its first rows)")
    print("CPU per detector, this interval:")
    for line in breakdown.lines(spent.cpu, n):
        print(line)
    for d in detectors:
        print(f"  {d.name:<11} state       {d.nbytes() / n:8.1f} bytes/host")
    print(f"model state                 {state / n:.1f} bytes/host (target <= 1024)")
    print(f"resident memory growth      {grown / n:.1f} bytes/host (state, key strings, one interval's features)")
    print(f"peer: river HST per host    {1e6 * per_peer:.1f} us CPU/host-interval -> {1 / per_peer:,.0f}/s")
    print(f"ratio netmon / peer         {rate * per_peer:.1f}x faster")
    measure = "host-intervals per CPU-second, every detector"
    record("scoring", measure, rate, "host-intervals/s", "higher", "river HalfSpaceTrees per host", 1 / per_peer)
    record("scoring", measure, rate, "host-intervals/s", "higher", bar=">= 500000")
    record("scoring", "model state per host", state / n, "bytes", "lower", bar="<= 1024")
    stored = store_time(batch)
    wall, cpu = 2 * n / stored.wall, 2 * n / stored.cpu
    print(f"embedded store (SQLite)     {wall:,.0f} host-intervals/s written and committed "
          f"({cpu:,.0f} per CPU-second)")
    record("store", "host-intervals/s into SQLite", wall, "host-intervals/s", "higher", bar=">= 200000")
    record("store", "host-intervals per CPU-second into SQLite", cpu, "host-intervals/s", "higher", bar=">= 200000")


if __name__ == "__main__":
    main()
