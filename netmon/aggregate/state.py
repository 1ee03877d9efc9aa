"""Per-socket memory that spans intervals: last request, last reply, last KoD.

A "socket" is (internal host, outside server, host port): the unit that polls on
its own schedule, receives its own replies and is told off by KoD. The table is a
sorted uint64 key column with parallel value columns (about 54 bytes a socket),
updated once per closed interval with whole-column operations, never a Python
loop per packet. Entries expire after :data:`SOCKET_TTL` seconds of silence
before the interval that asks, KoD memory after the configured hold-off; the
sweeps (every quarter of that) only free the memory, so what is remembered does
not depend on which windows had rows (a cluster's partition computes fewer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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


#: A (host, server) pair is forgotten after this many pair windows of silence.
FORGET = 6
_FIELDS = ("key", "request_time", "reply_time", "reply_xmt", "reply_rec", "kod_time", "kod_stop", "requests")
_PAIR_FIELDS = ("key", "seconds", "own", "first", "last")


class SocketTable:
    """The live socket memory of one aggregator, and its (host, server) pairs (``pairs``)."""

    def __init__(self, kod_holdoff: float, pair_window: float = 1800.0) -> None:
        self.kod_holdoff = kod_holdoff
        self.table = Sockets.empty()
        self.pairs = PairTable(pair_window)
        self._swept = -np.inf

    def __len__(self) -> int:
        return len(self.table)

    def state(self) -> dict[str, Any]:
        """The table and its pairs as arrays (a partition's checkpoint in a cluster)."""
        return {"sockets": {f: getattr(self.table, f) for f in _FIELDS}, "swept": float(self._swept),
                "pairs": self.pairs.state()}

    def load_state(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state`'s output."""
        self.table = Sockets(*(np.asarray(state["sockets"][f]) for f in _FIELDS))
        self._swept = float(state["swept"])
        self.pairs.load_state(state["pairs"])

    def _positions(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Where each key is, or would be inserted, in the sorted table; and whether it is there."""
        where = np.searchsorted(self.table.key, keys)
        hit = np.zeros(keys.shape[0], dtype=bool)
        inside = where < len(self.table)
        hit[inside] = self.table.key[where[inside]] == keys[inside]
        return where, hit

    def _alive(self, at: np.ndarray, now: float) -> np.ndarray:
        """Whether the sockets at rows ``at`` are still remembered at ``now`` (UNIX s)."""
        t = self.table
        seen = np.fmax(t.request_time[at], t.reply_time[at])
        return (seen >= now - SOCKET_TTL) | (t.kod_time[at] >= now - self.kod_holdoff)

    def lookup(self, keys: np.ndarray, now: float) -> Sockets:
        """Known values for ``keys`` (NaN / 0 where a key is new, or expired by ``now``: the start
        of the interval asking, UNIX s). Expiry is judged here, not left to the sweeps, whose
        times depend on which windows had any row: a partition's scorer computes fewer windows
        than one process on the whole campus, and must remember and forget as it does."""
        found = Sockets.empty(keys.shape[0])
        found.key = keys
        if len(self.table) == 0 or keys.shape[0] == 0:
            return found
        where, hit = self._positions(keys)
        hit[hit] = self._alive(where[hit], now)
        for name in _FIELDS[1:]:
            getattr(found, name)[hit] = getattr(self.table, name)[where[hit]]
        return found

    def store(self, update: Sockets, now: float) -> None:
        """Replace or add the ``update`` rows (unique keys); every SOCKET_TTL/4 forget what expired by ``now``.

        Known keys are overwritten in place and new ones inserted at their sorted
        place, so an interval costs a copy of the table at most, never a sort of it.
        """
        where, hit = self._positions(update.key)
        for name in _FIELDS[1:]:
            getattr(self.table, name)[where[hit]] = getattr(update, name)[hit]
        new = ~hit
        if new.any():
            self.table = Sockets(*(np.insert(getattr(self.table, f), where[new], getattr(update, f)[new])
                                   for f in _FIELDS))
        if now - self._swept >= SOCKET_TTL / 4:  # memory only: lookup forgets the expired between sweeps
            self._swept = now
            alive = self._alive(np.arange(len(self.table)), now)
            if not alive.all():
                self.table = self.table.take(np.flatnonzero(alive))


class PairTable:
    """Per (host, server) pair: client-seconds (all, and on ports of their own)
    summed with weight ``exp(-age / window)``, and when the pair was first and
    last seen; about 40 bytes a pair, forgotten after ``6 x window`` of silence.
    ``window`` (``[aggregate] pair_window``, 1800 s by default) is long enough
    for clients polling every 1024 s to be counted, not sampled. A host's busiest server can change from one interval to the next
    (a client polling four servers every 1024 s asks one of them now and then),
    so averaging the busiest server's clients over time would add up all its
    servers; averaging each pair and then taking the busiest does not.
    """

    def __init__(self, window: float = 1800.0) -> None:
        self.window = window
        self.key = np.zeros(0, np.uint64)
        self.seconds = np.zeros(0)
        self.own = np.zeros(0)
        self.first = np.zeros(0)
        self.last = np.zeros(0)
        self._swept = -np.inf

    def __len__(self) -> int:
        return int(self.key.shape[0])

    def state(self) -> dict[str, Any]:
        return {**{name: getattr(self, name) for name in _PAIR_FIELDS}, "swept": float(self._swept)}

    def load_state(self, state: dict[str, Any]) -> None:
        for name in _PAIR_FIELDS:
            setattr(self, name, np.asarray(state[name]))
        self._swept = float(state["swept"])

    def update(self, keys: np.ndarray, seconds: np.ndarray, own: np.ndarray, period: np.ndarray, end: float,
               length: float) -> tuple[np.ndarray, np.ndarray]:
        """Add this interval's client-seconds of ``keys`` (unique); return each pair's
        mean clients and mean clients on ports of their own over the window.

        A pair's first seconds are scaled up to the whole window, but never by
        more than its clients' poll ``period`` (s) allows: one request of a
        client polling every 1024 s stands for 1024 s, not for the interval."""
        where = np.searchsorted(self.key, keys)
        known = np.zeros(keys.shape[0], dtype=bool)
        inside = where < self.key.shape[0]
        known[inside] = self.key[where[inside]] == keys[inside]
        # silent past its memory: starts afresh, as if swept (the sweeps' times depend on which
        # windows had any row; see SocketTable.lookup)
        hit = known.copy()
        hit[known] = self.last[where[known]] >= end - length - FORGET * self.window
        at = where[hit]
        keep = np.exp(-(end - self.last[at]) / self.window)
        total, owned = seconds.copy(), own.copy()
        total[hit] += self.seconds[at] * keep
        owned[hit] += self.own[at] * keep
        first = np.full(keys.shape[0], end - length)
        first[hit] = self.first[at]
        put = where[known]
        self.seconds[put], self.own[put], self.first[put], self.last[put] = total[known], owned[known], first[known], end
        new = ~known
        if new.any():
            cut = where[new]
            self.key = np.insert(self.key, cut, keys[new])
            self.seconds = np.insert(self.seconds, cut, total[new])
            self.own = np.insert(self.own, cut, owned[new])
            self.first = np.insert(self.first, cut, first[new])
            self.last = np.insert(self.last, cut, end)
        filled = -np.expm1(-np.maximum(end - first, period) / self.window)
        if end - self._swept >= self.window:
            self._swept = end
            alive = np.flatnonzero(self.last >= end - FORGET * self.window)
            if alive.shape[0] < self.key.shape[0]:
                for name in _PAIR_FIELDS:
                    setattr(self, name, getattr(self, name)[alive])
        return total / (self.window * filled), owned / (self.window * filled)
