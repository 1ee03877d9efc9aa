"""Per-socket memory that spans intervals: last request, last reply, last KoD.

A "socket" is (internal host, outside server, host port): the unit that polls on
its own schedule, receives its own replies and is told off by KoD. The table is a
sorted uint64 key column with parallel value columns (about 54 bytes a socket),
merged once per closed interval with a sort, never a Python loop per packet.
Entries expire after :data:`SOCKET_TTL` seconds of silence, KoD memory after the
configured hold-off.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Seconds a socket's poll and origin memory is kept: just over the 1024 s
#: (2^10) default maximum poll of ntpd and chrony.
SOCKET_TTL = 1100.0


@dataclass
class Sockets:
    """Columns aligned with a sorted ``key`` (uint64). Times are UNIX seconds, NaN = never.

    ``kod_stop`` is true when the socket's last KoD was DENY or RSTR (stop), false for RATE (slow down);
    ``requests`` counts the socket's requests since it was first seen or its client restarted.
    """

    key: np.ndarray
    request_time: np.ndarray
    reply_time: np.ndarray
    reply_xmt: np.ndarray
    reply_rec: np.ndarray
    kod_time: np.ndarray
    kod_stop: np.ndarray
    requests: np.ndarray

    @classmethod
    def empty(cls, n: int = 0) -> "Sockets":
        nan = np.full(n, np.nan)
        return cls(np.zeros(n, np.uint64), nan, nan.copy(), np.zeros(n, np.uint64), np.zeros(n, np.uint64), nan.copy(),
                   np.zeros(n, bool), np.zeros(n, np.uint32))

    def __len__(self) -> int:
        return int(self.key.shape[0])

    def take(self, index: np.ndarray) -> "Sockets":
        return Sockets(*(getattr(self, f)[index] for f in _FIELDS))


_FIELDS = ("key", "request_time", "reply_time", "reply_xmt", "reply_rec", "kod_time", "kod_stop", "requests")


class SocketTable:
    """The live socket memory of one aggregator."""

    def __init__(self, kod_holdoff: float) -> None:
        self.kod_holdoff = kod_holdoff
        self.table = Sockets.empty()

    def __len__(self) -> int:
        return len(self.table)

    def lookup(self, keys: np.ndarray) -> Sockets:
        """Known values for ``keys`` (NaN / 0 where a key is new)."""
        found = Sockets.empty(keys.shape[0])
        found.key = keys
        if len(self.table) == 0 or keys.shape[0] == 0:
            return found
        where = np.searchsorted(self.table.key, keys)
        where = np.minimum(where, len(self.table) - 1)
        hit = self.table.key[where] == keys
        for name in _FIELDS[1:]:
            getattr(found, name)[hit] = getattr(self.table, name)[where[hit]]
        return found

    def store(self, update: Sockets, now: float) -> None:
        """Replace or add the ``update`` rows (unique keys), then forget what expired by ``now``."""
        merged = Sockets(*(np.concatenate([getattr(self.table, f), getattr(update, f)]) for f in _FIELDS))
        order = np.argsort(merged.key, kind="stable")
        merged = merged.take(order)
        keep_last = np.ones(len(merged), dtype=bool)
        keep_last[:-1] = merged.key[1:] != merged.key[:-1]
        merged = merged.take(np.flatnonzero(keep_last))
        seen = np.fmax(merged.request_time, merged.reply_time)
        alive = (seen >= now - SOCKET_TTL) | (merged.kod_time >= now - self.kod_holdoff)
        self.table = merged.take(np.flatnonzero(alive))
