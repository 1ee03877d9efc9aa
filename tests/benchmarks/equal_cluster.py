"""Single process vs 2 collectors + 2 scorers on the 7-day, 2,000-host simulation: equal?

What "equal" means is what :mod:`netmon.cluster` promises, checked row by row in
primary-key order, bit for bit (NaN stored as NULL on both sides; rows whose floats
differ by rounding only are counted apart, as such, and are not equal). The last
lines say EQUAL or NOT EQUAL per view, then for all:

* host-intervals (every column but the scores) of the scorers' stores (union) = one
  process on the whole capture;
* per-host findings (rules, baseline, drift) = one process on the whole capture;
* every finding and every score, the population views included = one process whose
  aggregator is the whole campus's but whose detectors are one engine per partition,
  each fed only its partition's hosts (what a partition's scorer sees).

The capture is dealt packet by packet between the two collectors (a host's traffic
crossing two border routers); two scorers share 4 partitions by leases, on a nats-server
started here on loopback; at day 2 (``--handover``) scorer-0 stops and starts again, so its
partitions change hands twice in the middle of the data, models restored from checkpoints. Each phase keeps its store under ``--work``, so an interrupted
run (or one phase at a time: ``--phase``) resumes where it stopped.

    .venv/bin/python tests/benchmarks/equal_cluster.py [--hosts 2000] [--days 7] [--work DIR]
"""

from __future__ import annotations

import argparse
import heapq
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from netmon import pipeline  # noqa: E402
from netmon.batch import HostIntervals  # noqa: E402
from netmon.cluster.scorer import own_hosts  # noqa: E402
from netmon.detect.engine import Engine  # noqa: E402
from netmon.transport import partition  # noqa: E402
from tests.cluster.test_cluster import PARTITIONS, cluster_run, single_store  # noqa: E402
from tests.support.lab import wait_for  # noqa: E402
from tests.support.nats import NatsServer  # noqa: E402

EVERYTHING = ["rules", "hosts", "population", "baseline", "drift"]
PER_HOST = ("rules.%", "model.baseline", "model.drift")
PHASES = ["single", "partitions", "cluster", "compare"]
#: Relative difference of two floats taken as rounding (a few units in the last place).
ROUNDING = 1e-12
KEYS = {"intervals": ["host", "start"], "findings": ["host", "start", "detector"]}
#: Event time (s) left out at the end of an unfinished per-partition run: its sinks may not
#: have written those intervals yet.
PARTIAL_MARGIN = 6 * 3600.0
#: The simulator's campus (``netmon simulate`` prints it).
CAMPUS = {"internal": ["10.20.0.0/16", "2001:db8:20::/48"]}


class ByPartition:
    """The whole campus's aggregator; each closed interval handed on as one interval per partition."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.lateness = inner.lateness
        self.owners = partition.Owners(PARTITIONS)

    def _split(self, closed: list[HostIntervals]) -> list[HostIntervals]:
        out = [own_hosts(iv, part, self.owners) for iv in closed for part in range(PARTITIONS)]
        return [iv for iv in out if len(iv)]

    def insert(self, rows):
        return self.inner.insert(rows)

    def advance(self, time: float) -> list[HostIntervals]:
        return self._split(self.inner.advance(time))

    def flush(self) -> list[HostIntervals]:
        return self._split(self.inner.flush())


class Engines:
    """One engine per partition, each scoring only its partition's intervals (from :class:`ByPartition`)."""

    def __init__(self, make) -> None:
        self.engines = [make() for _ in range(PARTITIONS)]

    def process(self, intervals: HostIntervals):
        part = int(partition.of_names(intervals.host[:1].tolist(), PARTITIONS)[0])
        return self.engines[part].process(intervals)

    def save(self) -> None:
        for engine in self.engines:
            engine.save()


def per_partition(stages: pipeline.Stages) -> None:
    config = stages.engine.settings
    stages.aggregator = ByPartition(stages.aggregator)
    stages.engine = Engines(lambda: Engine(config, restore=False))


def newest_day(store: Path) -> float:
    """Event days from the store's first interval to its latest (0 while it has none)."""
    if not store.exists():
        return 0.0
    db = sqlite3.connect(f"file:{store}?mode=ro", uri=True)  # its writer is running
    try:
        first, last = db.execute("SELECT min(start), max(start) FROM intervals").fetchone()
    except sqlite3.OperationalError:  # no table yet
        return 0.0
    finally:
        db.close()
    return 0.0 if first is None else (last - first) / 86400.0


def handover(folder: Path, day: float):
    """Mid-run, once scorer-0 has written ``day`` days: stop it (a checkpoint of each of its
    partitions, leases released), wait until scorer-1 has taken them, start scorer-0 again:
    scorer-1 hands 2 partitions back. Each partition of scorer-0 changes hands twice with the
    models' state in the middle of the data (restored from checkpoints)."""
    def during(scorers, start) -> None:
        assert wait_for(lambda: newest_day(folder / "scorer-0.db") >= day, timeout=7200, interval=2.0), \
            f"scorer-0 never reached day {day}"
        taken = scorers[1].text().count("partition taken")
        scorers[0].stop(timeout=600)  # it checkpoints every partition first: slow on a loaded machine
        assert wait_for(lambda: scorers[1].text().count("partition taken") >= taken + 2, timeout=120), \
            "scorer-1 did not take the stopped scorer's partitions"
        scorers[0] = start(0)
        print(f"handover: scorer-0 stopped at day {day:g}, its partitions taken by scorer-1, scorer-0 started again")
    return during


def ordered(path: Path, table: str, columns: list[str], where: str) -> Iterator[tuple]:
    """The rows of ``table`` (``columns``, the primary key first) in primary-key order."""
    key = KEYS[table]
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)  # its writer may still be running
    try:
        names = ", ".join(f'"{c}"' for c in columns)
        yield from db.execute(f"SELECT {names} FROM {table} {where} ORDER BY {', '.join(key)}")
    finally:
        db.close()


def rounding(x: object, y: object) -> bool:
    """Equal, or floats apart by rounding only (sums taken in another order: the merged
    streams of two collectors reach a window in another order than one capture)."""
    if x == y:
        return True
    return isinstance(x, float) and isinstance(y, float) and abs(x - y) <= ROUNDING * max(abs(x), abs(y))


def compare(reference: Path, stores: list[Path], table: str, scores: bool, where: str = "") -> dict:
    """Row by row, in primary-key order (a merge: no sort of millions of wide rows): the
    reference's rows, those only there, those only in the stores (their union: a row two
    stores hold counts once when equal), rows of one key that differ, and a few examples."""
    db = sqlite3.connect(f"file:{reference}?mode=ro", uri=True)
    names = [r[1] for r in db.execute(f"PRAGMA table_info({table})")]
    db.close()
    key = KEYS[table]
    columns = key + [n for n in names if n not in key and (scores or not n.startswith("score"))]
    width = len(key)
    theirs = heapq.merge(*(ordered(store, table, columns, where) for store in stores), key=lambda r: r[:width])
    out = {"rows": 0, "only one process": 0, "only cluster": 0, "different": 0, "rounding": 0, "examples": []}
    mine = ordered(reference, table, columns, where)
    a, b, previous = next(mine, None), next(theirs, None), None
    while a is not None or b is not None:
        if b is not None and b == previous:  # the same row from two stores (a tail scored again)
            b = next(theirs, None)
            continue
        if b is None or (a is not None and a[:width] < b[:width]):
            out["rows"] += 1
            out["only one process"] += 1
            out["examples"].append(("only one process", a))
            a = next(mine, None)
        elif a is None or b[:width] < a[:width]:
            out["only cluster"] += 1
            out["examples"].append(("only cluster", b))
            previous, b = b, next(theirs, None)
        else:
            out["rows"] += 1
            if a != b and all(rounding(x, y) for x, y in zip(a, b)):
                out["rounding"] += 1
            elif a != b:
                out["different"] += 1
                out["examples"].append(("one process", a, "cluster", b))
            a, (previous, b) = next(mine, None), (b, next(theirs, None))
    out["examples"] = out["examples"][:4]
    return out


def timed(name: str, done: Path, run) -> Path:
    if done.exists():
        print(f"{name}: kept from an earlier run ({done})")
        return done
    done.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    out = run()
    out.rename(done)
    print(f"{name}: {time.perf_counter() - started:.0f} s wall")
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=2000)
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--work", type=Path, help="directory kept between runs (default: a temporary one)")
    parser.add_argument("--handover", type=float, default=2.0,
                        help="event day at which scorer-0 stops and starts again (partitions change hands "
                             "mid-data twice); 0: none but the first lease rounds")
    parser.add_argument("--phase", choices=PHASES, action="append",
                        help="run only this phase (repeatable; the simulation is made when missing)")
    args = parser.parse_args()
    phases = args.phase or PHASES
    with tempfile.TemporaryDirectory(prefix="equal-cluster-") as scratch:
        work = args.work or Path(scratch)
        runs = work / "runs"
        for phase in ("single", "partitions", "cluster"):
            (runs / phase).mkdir(parents=True, exist_ok=True)
        capture = work / "sim" / "campus.pcap"
        if not capture.exists():
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "netmon", "simulate", "--hosts", str(args.hosts), "--days",
                            str(args.days), "--out", str(work / "sim")], check=True)
            print(f"simulate: {time.perf_counter() - started:.0f} s wall")
        whole, parts = work / "single.db", work / "partitions.db"
        stores = [work / f"scorer-{i}.db" for i in range(2)]
        if "single" in phases:
            timed("one process", whole, lambda: single_store(runs / "single", EVERYTHING, capture, CAMPUS))
        if "partitions" in phases:
            timed("one process, one engine per partition", parts,
                  lambda: single_store(runs / "partitions", EVERYTHING, capture, CAMPUS, per_partition))
        if "cluster" in phases and not all(s.exists() for s in stores):
            started = time.perf_counter()
            with NatsServer(runs / "cluster" / "nats") as nats:
                made = cluster_run(runs / "cluster", nats, EVERYTHING, capture=capture, patience=30.0, campus=CAMPUS,
                                   checkpoint_every=10.0, lease_timeout=30.0,
                                   during=handover(runs / "cluster", args.handover) if args.handover else None)
            for store, out in zip(made, stores):
                store.rename(out)
            print(f"2 collectors + 2 scorers: {time.perf_counter() - started:.0f} s wall")
        if "compare" not in phases:
            return
        per_host = "WHERE " + " OR ".join(f"detector LIKE '{p}'" for p in PER_HOST)
        upto, partial = "", parts
        if not parts.exists():  # its run still going or stopped: compare the days it finished
            partial = runs / "partitions" / "single-0.db"
            db = sqlite3.connect(f"file:{partial}?mode=ro", uri=True)
            first, last = db.execute("SELECT min(start), max(start) FROM intervals").fetchone()
            db.close()
            upto = f"WHERE start < {last - PARTIAL_MARGIN!r}"
            print(f"one engine per partition: unfinished, compared on its first "
                  f"{(last - PARTIAL_MARGIN - first) / 86400:.2f} days")
        checks = [("host-intervals (scores aside) vs one process", whole, "intervals", False, ""),
                  ("per-host findings vs one process", whole, "findings", True, per_host),
                  ("every finding vs one engine per partition", partial, "findings", True, upto),
                  ("host-intervals with scores vs one engine per partition", partial, "intervals", True, upto)]
        verdicts = []
        for name, reference, table, scores, where in checks:
            started = time.perf_counter()
            got = compare(reference, stores, table, scores, where)
            apart = got["only one process"] + got["only cluster"] + got["different"] + got["rounding"]
            verdicts.append((name, got["rows"], apart))
            print(f"{name}: {got['rows']:,} rows; {got['only one process']} only in one process, "
                  f"{got['only cluster']} only in the cluster, {got['different']} different, "
                  f"{got['rounding']} apart by rounding only "
                  f"({time.perf_counter() - started:.0f} s)" + "".join(f"\n    {row}" for row in got["examples"]))
        # bit for bit: the aggregator orders a window's rows whatever order the streams merge in
        # (netmon.aggregate.in_time_order), so rows apart by rounding only count as not equal
        for name, rows, apart in verdicts:
            print(f"{'EQUAL' if apart == 0 else 'NOT EQUAL'}: {name} ({rows:,} rows, {apart:,} not identical)")
        equal = all(apart == 0 for _, _, apart in verdicts)
        print("EQUAL" if equal else "NOT EQUAL")
        sys.exit(0 if equal else 1)


if __name__ == "__main__":
    main()
