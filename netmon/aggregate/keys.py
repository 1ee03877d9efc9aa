"""Whole-column address work: prefix matching, IPv6 roll-up, hashing, text.

Addresses arrive as two big-endian 64-bit halves (see :mod:`netmon.batch`), so a
prefix test is two masked integer compares on a whole column, and a composite key
(host, server, port...) is hashed to one uint64 so grouping is a plain sort.
The hash is a splitmix64 chain: two distinct keys collide with probability about
2**-64 per pair, far below one collision in a campus-sized state table.
"""

from __future__ import annotations

import ipaddress

import numpy as np

from netmon.batch import addr_text, addr_to_int

_ONES = 0xFFFF_FFFF_FFFF_FFFF
_MAPPED = 0xFFFF  # the ::ffff:0:0/96 marker in the low half's upper 32 bits
_C1 = np.uint64(0xBF58476D1CE4E5B9)
_C2 = np.uint64(0x94D049BB133111EB)
_SEED = np.uint64(0x9E3779B97F4A7C15)


def _mask(bits: int) -> tuple[int, int]:
    """(hi, lo) masks of a 128-bit prefix length."""
    full = ((1 << bits) - 1) << (128 - bits) if bits else 0
    return full >> 64, full & _ONES


def is_mapped(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """True where the address is IPv4 (held IPv4-mapped)."""
    return (hi == 0) & ((lo >> np.uint64(32)) == _MAPPED)


class PrefixSet:
    """Ordered IP prefixes (IPv4 and IPv6) matched against address columns."""

    def __init__(self, prefixes: list[str]) -> None:
        nets = [ipaddress.ip_network(p, strict=False) for p in prefixes]
        self.prefixes = [str(n) for n in nets]
        his, los, mhis, mlos = [], [], [], []
        for net in nets:
            bits = net.prefixlen + (96 if net.version == 4 else 0)
            mhi, mlo = _mask(bits)
            value = addr_to_int(str(net.network_address))
            his.append((value >> 64) & mhi)
            los.append((value & _ONES) & mlo)
            mhis.append(mhi)
            mlos.append(mlo)
        self._net = np.array([his, los], dtype=np.uint64).reshape(2, len(nets))
        self._mask = np.array([mhis, mlos], dtype=np.uint64).reshape(2, len(nets))

    def __len__(self) -> int:
        return len(self.prefixes)

    def first_match(self, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
        """Index of the first prefix containing each address, -1 for none (int64)."""
        found = np.full(hi.shape[0], -1, dtype=np.int64)
        for i in range(len(self) - 1, -1, -1):
            hit = ((hi & self._mask[0, i]) == self._net[0, i]) & ((lo & self._mask[1, i]) == self._net[1, i])
            found[hit] = i
        return found

    def contains(self, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
        """True where an address lies in any prefix."""
        inside = np.zeros(hi.shape[0], dtype=bool)
        for i in range(len(self)):
            inside |= ((hi & self._mask[0, i]) == self._net[0, i]) & ((lo & self._mask[1, i]) == self._net[1, i])
        return inside


def roll_up(hi: np.ndarray, lo: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """IPv6 addresses cut to their ``bits``-long prefix; IPv4 addresses unchanged."""
    if bits >= 128:
        return hi, lo
    mhi, mlo = _mask(bits)
    v6 = ~is_mapped(hi, lo)
    return np.where(v6, hi & np.uint64(mhi), hi), np.where(v6, lo & np.uint64(mlo), lo)


def _mix(x: np.ndarray) -> np.ndarray:
    x = (x ^ (x >> np.uint64(30))) * _C1
    x = (x ^ (x >> np.uint64(27))) * _C2
    return x ^ (x >> np.uint64(31))


def hash_key(*columns: np.ndarray) -> np.ndarray:
    """One uint64 per row standing for the tuple of ``columns`` (integer columns)."""
    key = np.full(columns[0].shape[0], _SEED, dtype=np.uint64)
    for column in columns:
        key = _mix(key ^ column.astype(np.uint64, copy=False))
    return key


class Names:
    """Address text by hashed key, remembered: hosts and servers recur every interval.

    Bounded: the memory is dropped whole when it passes ``limit`` entries (a
    million names is about 100 MB), then refills from the next intervals.
    """

    def __init__(self, v6_bits: int = 128, limit: int = 1_000_000) -> None:
        self.v6_bits = v6_bits
        self.limit = limit
        self.known: dict[int, str] = {}

    def __call__(self, key: np.ndarray, hi: np.ndarray, lo: np.ndarray) -> list[str]:
        """Text for each row; ``key`` is the rows' address hash (uint64)."""
        if len(self.known) > self.limit:
            self.known.clear()
        known = self.known
        keys = key.tolist()
        names = [known.get(k) for k in keys]
        missing = [i for i, name in enumerate(names) if name is None]
        if missing:
            his, los = hi[missing].tolist(), lo[missing].tolist()
            for i, h, low in zip(missing, his, los):
                names[i] = known[keys[i]] = addr_text(h, low, self.v6_bits)
        return names
