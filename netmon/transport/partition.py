"""Partition = stable hash of the internal host, the same function in every process.

A row counts for each internal end (see :func:`netmon.aggregate.features.host_view`):
its source when internal, its destination when internal, both for campus-to-campus
rows, the address rolled up to ``[campus] ipv6_prefix`` as the aggregator does. So a
row goes to the partition of each internal end, and a scorer keeps only the
host-intervals of its own partition (:func:`of_names`), so a campus-to-campus row
never yields a host's features twice. Rows with no internal end feed no host and
are not published.
"""

from __future__ import annotations

import numpy as np

from netmon.aggregate.keys import PrefixSet, hash_key, roll_up
from netmon.batch import addr_halves


def of_addresses(hi: np.ndarray, lo: np.ndarray, ipv6_bits: int, partitions: int) -> np.ndarray:
    """Partition (int64) of each host address, given as halves; IPv6 rolled up to ``ipv6_bits``."""
    host_hi, host_lo = roll_up(hi, lo, ipv6_bits)
    key = hash_key(host_hi, host_lo)
    if partitions & (partitions - 1) == 0:  # a power of two: the same partition as %, without the 64-bit
        return (key & np.uint64(partitions - 1)).astype(np.int64)  # division (about 20 ns a row, measured)
    return (key % np.uint64(partitions)).astype(np.int64)


def route(rows: np.ndarray, internal: PrefixSet, ipv6_bits: int,
          partitions: int) -> tuple[np.ndarray, dict[int, tuple[int, int]]]:
    """Where each partition's rows are: indices into ``rows`` grouped by partition, each group in
    row order, and each partition's ``(start, end)`` in them. A row counts for each internal end:
    a campus-to-campus row is in both ends' partitions (once when they share one).

    One pass: one hash of the host column, one stable sort of the partition numbers (a radix
    sort), no per-partition mask; the rows themselves are not touched but for their addresses."""
    # each address column copied once into contiguous memory: every step after reads those,
    # not the 123-byte rows (a strided read of the batch is as dear as a copy of the column)
    src_hi, src_lo, dst_hi, dst_lo = (np.ascontiguousarray(rows[name])
                                      for name in ("src_hi", "src_lo", "dst_hi", "dst_lo"))
    src_in = internal.contains(src_hi, src_lo)
    dst_in = internal.contains(dst_hi, dst_lo)
    ends = np.flatnonzero(src_in | dst_in)  # hashed once per row: its source if internal, else its destination
    # the usual batch has an internal end in every row: its columns are read as they are, not gathered
    kept = slice(None) if ends.shape[0] == src_in.shape[0] else ends
    out = src_in[kept]
    first = of_addresses(np.where(out, src_hi[kept], dst_hi[kept]), np.where(out, src_lo[kept], dst_lo[kept]),
                         ipv6_bits, partitions)
    both = ends[out & dst_in[kept]]  # campus to campus: the destination's partition too, when another
    other = of_addresses(dst_hi[both], dst_lo[both], ipv6_bits, partitions)
    second = other != first[out & dst_in[kept]]
    index = np.concatenate([ends, both[second]])
    part = np.concatenate([first, other[second]])
    # by partition, each in row order: a stable sort of small integers (a radix sort when they fit
    # 16 bits) when no row was copied, else by partition then row
    if second.any():
        order = np.lexsort((index, part))
    else:
        order = np.argsort(part.astype(np.uint16) if partitions <= 1 << 16 else part, kind="stable")
    counts = np.bincount(part, minlength=partitions)
    bounds = np.concatenate([[0], np.cumsum(counts)]).tolist()
    return index[order], {p: (bounds[p], bounds[p + 1]) for p in np.flatnonzero(counts).tolist()}


def of_names(names: list[str], partitions: int) -> np.ndarray:
    """Partition of each host as named in HostIntervals (``10.0.0.5``, ``2001:db8:1:2::/64``:
    already rolled up, so no roll-up here)."""
    halves = np.array([addr_halves(name.split("/")[0]) for name in names], dtype=np.uint64).reshape(-1, 2)
    return of_addresses(halves[:, 0], halves[:, 1], 128, partitions)


class Owners:
    """:func:`of_names`, remembered: a partition's hosts recur every interval, and parsing a
    name costs about 3 µs where a lookup costs 0.1 µs. Bounded: the memory is dropped whole
    past ``limit`` names (as the aggregator's name memory), then refills."""

    def __init__(self, partitions: int, limit: int = 1_000_000) -> None:
        self.partitions = partitions
        self.limit = limit
        self.known: dict[str, int] = {}

    def __call__(self, names: list[str]) -> np.ndarray:
        """Partition (int64) of each host name."""
        if len(self.known) > self.limit:
            self.known.clear()
        known = self.known
        missing = [name for name in names if name not in known]
        if missing:
            known.update(zip(missing, of_names(missing, self.partitions).tolist()))
        return np.fromiter((known[name] for name in names), dtype=np.int64, count=len(names))
