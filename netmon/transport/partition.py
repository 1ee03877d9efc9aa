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
    return (hash_key(host_hi, host_lo) % np.uint64(partitions)).astype(np.int64)


def split(rows: np.ndarray, internal: PrefixSet, ipv6_bits: int, partitions: int) -> dict[int, np.ndarray]:
    """``rows`` by partition of each internal end, in their order; a campus-to-campus row
    appears under both ends' partitions (once when they share one)."""
    src_in = internal.contains(rows["src_hi"], rows["src_lo"])
    dst_in = internal.contains(rows["dst_hi"], rows["dst_lo"])
    src_part = np.where(src_in, of_addresses(rows["src_hi"], rows["src_lo"], ipv6_bits, partitions), -1)
    dst_part = np.where(dst_in, of_addresses(rows["dst_hi"], rows["dst_lo"], ipv6_bits, partitions), -1)
    out: dict[int, np.ndarray] = {}
    for part in np.unique(np.concatenate([src_part, dst_part])).tolist():
        if part >= 0:
            out[part] = rows[(src_part == part) | (dst_part == part)]
    return out


def of_names(names: list[str], partitions: int) -> np.ndarray:
    """Partition of each host as named in HostIntervals (``10.0.0.5``, ``2001:db8:1:2::/64``:
    already rolled up, so no roll-up here)."""
    halves = np.array([addr_halves(name.split("/")[0]) for name in names], dtype=np.uint64).reshape(-1, 2)
    return of_addresses(halves[:, 0], halves[:, 1], 128, partitions)
