"""Aggregation speed: observation rows per second through ``Aggregator.add`` (and flush).

Makes ~1M UDP/123 observation rows with numpy (thousands of internal hosts polling
outside servers: ntpd on port 123 with chained origins, chrony-like random ports
with zero origins, a few runaways sharing port 123), feeds them in capture-sized
batches, and prints rows/s. Beside it, for scale, a plain Python loop that only
counts requests and bytes per host and interval (far less work) on a slice.

    .venv/bin/python tests/benchmarks/bench_aggregate.py [--rows 1000000] [--hosts 5000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from netmon.aggregate import Aggregator
from netmon.batch import OBS_DTYPE, addr_halves
from netmon.config import Aggregate, Campus
from ratios import record


def make_rows(n_rows: int, n_hosts: int, seed: int = 1) -> np.ndarray:
    """Request/reply pairs, time-sorted; each host polls one of 50 servers every 2^poll s."""
    rng = np.random.default_rng(seed)
    pairs = n_rows // 2
    host = rng.integers(0, n_hosts, pairs)
    chrony = host % 10 == 0
    runaway = host % 997 == 0
    poll = np.where(chrony, 6, rng.choice([6, 7, 8, 10], n_hosts)[host]).astype(np.int8)
    span = pairs / n_hosts * 64.0
    t = np.sort(rng.uniform(0, span, pairs)) + 1.7e9
    server = (host * 7 + rng.integers(0, 2, pairs)) % 50
    base_hi, base_lo = addr_halves("10.0.0.0")
    srv_hi, srv_lo = addr_halves("192.0.2.0")
    port = np.where(chrony, rng.integers(32768, 61000, pairs), 123).astype(np.uint16)
    xmt_req = np.arange(pairs, dtype=np.uint64) * 2 + (1 << 60)
    xmt_rep = xmt_req + 1
    rows = np.zeros(2 * pairs, dtype=OBS_DTYPE)
    req, rep = rows[0::2], rows[1::2]
    for part, when, src_is_host in ((req, t, True), (rep, t + 0.02, False)):
        part["time"] = when
        h_lo, s_lo = np.uint64(base_lo) + host.astype(np.uint64), np.uint64(srv_lo) + server.astype(np.uint64)
        part["src_hi"], part["dst_hi"] = (base_hi, srv_hi) if src_is_host else (srv_hi, base_hi)
        part["src_lo"], part["dst_lo"] = (h_lo, s_lo) if src_is_host else (s_lo, h_lo)
        part["sport"], part["dport"] = (port, 123) if src_is_host else (123, port)
        part["packets"], part["bytes"], part["ntp"], part["version"], part["poll"] = 1, 76, 1, 4, poll
    req["mode"], rep["mode"], rep["stratum"] = 3, 4, 2
    req["xmt_ts"], rep["xmt_ts"], rep["org_ts"] = xmt_req, xmt_rep, xmt_req
    # origins: a host's previous reply for ntpd (approximately: the reply before in the stream), zero for chrony
    req["org_ts"] = np.where(chrony, 0, np.where(runaway, rng.integers(1, 2**62, pairs).astype(np.uint64),
                                                 np.roll(xmt_rep, 1)))
    return rows[np.argsort(rows["time"], kind="stable")]  # capture order


def python_loop(rows: np.ndarray, interval: float) -> float:
    """Rows/s of a plain Python loop counting requests and bytes per (host, interval)."""
    counts: dict[tuple[int, int], list[float]] = {}
    start = time.perf_counter()
    for row in rows.tolist():
        key = (row[2], int(row[0] // interval))
        entry = counts.setdefault(key, [0.0, 0.0])
        entry[0] += row[8]
        entry[1] += row[9]
    return len(rows) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--hosts", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=65536)
    args = parser.parse_args()
    rows = make_rows(args.rows, args.hosts)
    aggregator = Aggregator(Campus(internal=["10.0.0.0/8"]), Aggregate(interval=60))
    start = time.perf_counter()
    host_intervals = 0
    for lo in range(0, len(rows), args.batch):
        host_intervals += sum(len(iv) for iv in aggregator.add(rows[lo:lo + args.batch]))
    host_intervals += sum(len(iv) for iv in aggregator.flush())
    elapsed = time.perf_counter() - start
    ours = len(rows) / elapsed
    span_min = (rows["time"][-1] - rows["time"][0]) / 60
    print(f"aggregate: {len(rows):,} rows, {args.hosts:,} hosts, {span_min:.0f} intervals, "
          f"{host_intervals:,} host-intervals in {elapsed:.2f} s = {ours:,.0f} rows/s, "
          f"{host_intervals / elapsed:,.0f} host-intervals/s "
          f"(socket memory {len(aggregator.sockets):,} entries)")
    loop = python_loop(rows[:200_000], 60.0)
    print(f"plain Python per-row loop (requests+bytes only): {loop:,.0f} rows/s; ratio {ours / loop:.1f}x")
    record("aggregate", "observation rows/s into per-host features", ours, "rows/s", "higher",
           "plain Python per-row loop", loop)


if __name__ == "__main__":
    main()
