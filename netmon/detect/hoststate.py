"""Per-host model state as numpy columns, found by host key.

A million hosts must fit in memory and be updated once a minute, so per-host
state is a few float32 per feature in preallocated arrays (one row per host),
and hosts find their rows by a vectorised hash (:func:`host_hashes`). Rows of hosts
silent for longer than ``forget_after`` seconds are dropped by :meth:`prune`
(an address handed to another machine by DHCP then starts afresh).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
import sys
from typing import Any

import numpy as np
import structlog

from netmon.detect import scaling

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Column:
    """One state column: dtype, values per host (0 = a scalar), initial value."""

    dtype: str
    width: int
    fill: float


def host_hashes(hosts: np.ndarray) -> np.ndarray:
    """64-bit FNV-1a of each host key, over whole columns of its UTF-32 code points.

    Looking a million host strings up in a dict costs more than all the
    arithmetic of the models, so rows are found by hash in a sorted array
    instead. Padding (NUL) is skipped, so a key hashes the same in an array of
    any width. A collision needs two of a million keys to share 64 bits (odds
    about 3e-8).
    """
    text = np.asarray(hosts)
    if text.dtype.kind != "U":
        text = text.astype(str)
    n = text.shape[0]
    width = text.dtype.itemsize // 4
    # character-major, so each pass below reads one contiguous column
    codes = np.ascontiguousarray(text).view(np.uint32).reshape(n, width).T.copy() if n and width else ()
    h = np.full(n, 0xCBF29CE484222325, dtype=np.uint64)
    prime = np.uint64(0x100000001B3)
    for c in codes:
        np.bitwise_xor(h, c, out=h, casting="unsafe")  # a NUL leaves h as it is...
        np.multiply(h, prime, out=h, where=c != 0)  # ...and is padding to the array's width, not part of the key
    return h


def categories(values: np.ndarray, most: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(values, return_inverse=True)`` for a column of few distinct strings (host
    groups): one comparison pass per distinct value instead of sorting the whole column,
    which for a million group names costs more than a model's arithmetic. A pass costs
    about 1/16 of the sort (a million names: 16 passes 0.46 s, ``np.unique`` 0.53 s), so a
    column of more than ``most`` distinct values is left to ``np.unique``. Integers sort
    faster than they compare: for them ``np.unique`` itself is the right call."""
    values = np.asarray(values)
    code = np.full(values.shape[0], -1, dtype=np.intp)
    firsts: list[int] = []
    i = 0
    while i < values.shape[0]:
        if len(firsts) == most:
            return np.unique(values, return_inverse=True)
        code[values == values[i]] = len(firsts)
        firsts.append(i)
        rest = code[i:] < 0
        i += int(np.argmax(rest)) if rest.any() else values.shape[0]
    names = values[np.array(firsts, dtype=np.intp)]
    order = np.argsort(names, kind="stable")
    rank = np.empty(len(firsts), dtype=np.intp)
    rank[order] = np.arange(len(firsts))
    return names[order], rank[code]


@dataclass(frozen=True)
class HostKeys:
    """One interval's host keys, hashed once (:meth:`of`) and handed to every
    per-host model, so hashing a million keys is done once per interval, not
    once per model, and no cache outlives the interval. ``order`` sorts the hashes:
    every model's table looks them up in that order (:meth:`HostTable.rows`; without
    it, each table sorts them again)."""

    hosts: np.ndarray
    hashes: np.ndarray
    order: np.ndarray | None = None
    ordered: np.ndarray | None = None  # hashes[order]

    @classmethod
    def of(cls, hosts: np.ndarray) -> "HostKeys":
        hashes = host_hashes(hosts)
        order = np.argsort(hashes)
        return cls(hosts, hashes, order, hashes[order])

    def matches(self, hosts: np.ndarray) -> bool:
        """True when these keys were made for ``hosts`` (the same array)."""
        return self.hosts is hosts

    def among(self, names: Collection[str]) -> np.ndarray:
        """Bool per host: whether its key is one of ``names``. Compares hashes first and
        strings only where a hash matches, so a few flagged hosts cost one pass over
        a million integers, not a million string comparisons per name."""
        mask = np.zeros(self.hashes.shape[0], dtype=bool)
        if not names:
            return mask
        wanted = list(names)
        candidates = np.flatnonzero(np.isin(self.hashes, host_hashes(np.array(wanted, dtype=str))))
        mask[candidates[np.isin(np.asarray(self.hosts)[candidates], wanted)]] = True
        return mask


class HostTable:
    """Named numpy columns with one row per host; rows are handed out on first sight."""

    def __init__(self, columns: dict[str, Column], capacity: int = 1024) -> None:
        self.columns = columns
        self.keys: list[str] = []
        self.hashes = np.zeros(0, dtype=np.uint64)
        self.sorted_hashes = np.zeros(0, dtype=np.uint64)
        self.sorted_rows = np.zeros(0, dtype=np.int64)
        self.data: dict[str, np.ndarray] = {name: self._blank(col, capacity) for name, col in columns.items()}

    @staticmethod
    def _blank(col: Column, rows: int) -> np.ndarray:
        shape = (rows, col.width) if col.width else (rows,)
        return np.full(shape, col.fill, dtype=col.dtype)

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.data[name]

    def _grow(self, need: int) -> None:
        capacity = self.data[next(iter(self.data))].shape[0]
        if need <= capacity:
            return
        new = max(need, capacity + capacity // 2)
        for name, col in self.columns.items():
            bigger = self._blank(col, new)
            bigger[:capacity] = self.data[name]
            self.data[name] = bigger

    def _find(self, h: np.ndarray, order: np.ndarray | None = None, ordered: np.ndarray | None = None) -> np.ndarray:
        """Row of each hash, -1 where unknown. The hashes are looked up in sorted ``order``
        (argsort of ``h``, made here when not given; ``ordered`` is ``h[order]``): a binary
        search for ascending keys starts where the last one ended, which at a million hosts is
        25 times faster than a million searches from the top, each missing the CPU's caches,
        and the table is then read in its own order too; only the answer is put back in ``h``'s."""
        if not self.sorted_hashes.shape[0]:
            return np.full(h.shape[0], -1, dtype=np.int64)
        order = np.argsort(h) if order is None else order
        ordered = h[order] if ordered is None else ordered
        pos = np.minimum(np.searchsorted(self.sorted_hashes, ordered), self.sorted_hashes.shape[0] - 1)
        found = np.empty(h.shape[0], dtype=np.int64)
        found[order] = np.where(self.sorted_hashes[pos] == ordered, self.sorted_rows[pos], -1)
        return found

    def _index(self) -> None:
        order = np.argsort(self.hashes, kind="stable")
        self.sorted_hashes = self.hashes[order]
        self.sorted_rows = order.astype(np.int64)

    def rows(self, hosts: np.ndarray, keys: HostKeys | None = None) -> np.ndarray:
        """Row index of each host (int64), new hosts get fresh rows at their initial values;
        ``keys`` are the hosts' :class:`HostKeys` when the engine made them already."""
        h = host_hashes(hosts) if keys is None else keys.hashes
        found = self._find(h) if keys is None else self._find(h, keys.order, keys.ordered)
        missing = np.flatnonzero(found < 0)
        if missing.size:
            new_hashes, first = np.unique(h[missing], return_index=True)
            base = len(self.keys)
            self._grow(base + new_hashes.size)
            self.keys.extend(str(k) for k in np.asarray(hosts)[missing[first]].tolist())
            self.hashes = np.concatenate([self.hashes, new_hashes])
            at = np.searchsorted(self.sorted_hashes, new_hashes)
            self.sorted_hashes = np.insert(self.sorted_hashes, at, new_hashes)
            self.sorted_rows = np.insert(self.sorted_rows, at, np.arange(base, base + new_hashes.size))
            found[missing] = self._find(h[missing])
        return found

    def reset(self, rows: np.ndarray) -> None:
        """Put ``rows`` back to their initial values (the host starts afresh)."""
        for name, col in self.columns.items():
            self.data[name][rows] = col.fill

    def prune(self, keep: np.ndarray) -> None:
        """Drop every row where ``keep`` (bool per row) is False, compacting the table."""
        n = len(self.keys)
        kept = np.flatnonzero(keep[:n])
        if kept.size == n:
            return
        self.keys = [self.keys[i] for i in kept.tolist()]
        self.hashes = self.hashes[kept]
        self._index()
        for name, col in self.columns.items():
            fresh = self._blank(col, max(len(self.keys), 1024))
            fresh[: kept.size] = self.data[name][kept]
            self.data[name] = fresh

    def state(self) -> dict[str, Any]:
        """Host keys (a unicode array, no pickle needed) and every column, trimmed to size."""
        n = len(self.keys)
        return {"hosts": np.array(self.keys, dtype=str), **{k: v[:n].copy() for k, v in self.data.items()}}

    def load(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state`; raises ValueError when a column is missing or misshapen."""
        hosts = np.asarray(state["hosts"])
        if hosts.ndim != 1:
            raise ValueError(f"hosts has shape {hosts.shape}, expected a list of host keys")
        n = hosts.shape[0]
        for name, col in self.columns.items():
            value = np.asarray(state.get(name))
            want = (n, col.width) if col.width else (n,)
            if value.shape != want:
                raise ValueError(f"column {name!r} has shape {value.shape}, expected {want}")
        self.keys = [str(h) for h in hosts.tolist()]
        self.hashes = host_hashes(np.array(self.keys, dtype=str)) if n else np.zeros(0, dtype=np.uint64)
        self._index()
        self.data = {name: self._blank(col, max(n, 1024)) for name, col in self.columns.items()}
        for name, col in self.columns.items():
            self.data[name][:n] = np.asarray(state[name], dtype=col.dtype)

    def nbytes(self) -> int:
        """Bytes held: the columns, the hash index, and the key strings with their list."""
        arrays = sum(v.nbytes for v in self.data.values())
        index = self.hashes.nbytes + self.sorted_hashes.nbytes + self.sorted_rows.nbytes
        return arrays + index + sum(sys.getsizeof(k) + 8 for k in self.keys)


def windowed(
    sums: np.ndarray,
    elapsed: np.ndarray,
    age: np.ndarray,
    length: float,
    window: float | np.ndarray,
    values: np.ndarray,
    rates: np.ndarray,
    priors: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Recent values over a sliding exponential window, however sparse a host's rows.

    A host polling every 1024 s shows up in one 60 s interval of 17, so one
    interval says little. For count features (``rates``), ``sums`` holds each
    count summed with weight ``exp(-age / window)``; divided by ``window`` it is
    the recent rate whether or not the host appeared in between, and ``age``
    (seconds since the host was first seen, this interval included) corrects a
    window not yet filled, so a new host's rate is not underestimated. For
    level features (a ratio, a count of servers) ``sums`` holds the mean of
    their log level (``log2(1 + v)``) over the host's last ``window`` seconds of
    rows, each row weighing its interval ``length`` and a new host starting
    from ``priors`` (the feature's everyday value, e.g. 1 for a poll ratio):
    a geometric mean, so one interval of a reboot's iburst (a poll ratio of 32)
    barely moves it and a lasting change does. ``elapsed`` is the seconds since
    the host's previous row (NaN for a new host, whose state starts afresh);
    NaN values are unknown and leave the state as it was (sums only decay).

    ``window`` is seconds, one for all features or one per feature.

    Returns the new state and the current values: per hour for counts, the
    windowed geometric mean for levels; NaN where this interval did not know
    the feature.
    """
    window = np.broadcast_to(np.asarray(window, dtype=np.float64), (values.shape[1],))
    new_host = np.isnan(elapsed)[:, None]
    known = ~np.isnan(values)
    rate = np.asarray(rates, dtype=bool)
    if rate.any():
        # counts over whole rows, level columns included (their results are replaced below): a pass
        # over every column costs less than gathering the count columns out and scattering them back.
        # The transcendental functions run once per distinct window of the count features (a level
        # column borrows one of theirs), not once per column.
        windows = np.where(rate, window, window[rate][0])
        since = np.nan_to_num(elapsed, nan=np.inf).clip(min=0.0)
        keep = _per_window(lambda w: np.exp(-since[:, None] / w), windows)
        filled = _per_window(lambda w: -np.expm1(-np.maximum(age, 1.0)[:, None] / w), windows)
        # in place, a million hosts' rows once each: decayed sums (0 for a new host) plus this interval's counts
        state = sums.astype(np.float64)
        state[new_host[:, 0]] = 0.0
        state *= keep
        state += np.where(known, values, 0.0)
        current = state * (3600.0 / windows)
        current /= filled
    else:
        state = np.empty(values.shape, dtype=np.float64)
        current = np.empty(values.shape, dtype=np.float64)
    level = np.flatnonzero(~rate)
    if level.size:
        blend = -np.expm1(-length / window[level])
        old = sums[:, level]
        logs = np.where(new_host | np.isnan(old), np.log2(1.0 + priors[level]), old)
        seen = values[:, level]
        logs = np.where(known[:, level], logs + blend * (np.log2(1.0 + np.maximum(seen, 0.0)) - logs), logs)
        state[:, level] = logs
        current[:, level] = np.exp2(logs) - 1.0
    current[~known] = np.nan
    return state, current


def _per_window(f: Callable[[np.ndarray], np.ndarray], windows: np.ndarray) -> np.ndarray:
    """``f(windows)``: a per-host column for each feature's window, computed once per distinct window
    (features sharing a window share the column; when all do, as in most models, the one column is
    returned to broadcast)."""
    distinct, which = np.unique(windows, return_inverse=True)
    column = f(distinct[None, :])
    return column if distinct.size == 1 else column[:, which]


#: Intervals between two sweeps for hosts to forget.
PRUNE_EVERY = 360


@dataclass
class Visit:
    """This interval's hosts in a detector's table: their rows, how long since
    each was seen (NaN for a host new or starting over), since when it is known
    (``first``, ``age`` in seconds including this interval), and its windowed
    values (``sums`` the new window state, ``current`` per hour or level).
    ``intervals`` is the batch visited: what a detector computes while scoring
    is reused by its learning only for that very batch."""

    intervals: Any
    t: float
    length: float
    rows: np.ndarray
    fresh: np.ndarray
    elapsed: np.ndarray
    first: np.ndarray
    age: np.ndarray
    sums: np.ndarray
    current: np.ndarray


class HostModel:
    """What the per-host detectors share: a table with ``first``, ``last`` and
    windowed ``sums`` per host beside their own columns, hosts forgotten after
    ``forget_after`` s of silence, and the state round trip."""

    name = ""

    def __init__(
        self, names: tuple[str, ...], columns: dict[str, Column], window: float | np.ndarray, forget_after: float
    ) -> None:
        self.names = tuple(names)
        self.rates = scaling.rate_mask(self.names)
        self.priors = scaling.priors(self.names)
        self.window = window
        self.forget_after = forget_after
        base = {
            "first": Column("f8", 0, np.nan),
            "last": Column("f8", 0, np.nan),
            "sums": Column("f4", len(self.names), np.nan),
        }
        self.table = HostTable({**base, **columns})
        self._intervals = 0

    def visit(self, intervals: Any, keys: HostKeys | None = None) -> Visit:
        """Find the hosts of ``intervals`` (by ``keys`` when the engine hashed them
        already) and move their windows on (nothing is stored yet)."""
        t = float(intervals.end)
        length = float(intervals.end - intervals.start)
        rows = self.table.rows(intervals.host, keys if keys is not None and keys.matches(intervals.host) else None)
        elapsed = t - self.table["last"][rows]
        # silent too long, or seen later than now (an older capture replayed after a newer one): start over
        fresh = np.isnan(elapsed) | (elapsed > self.forget_after) | (elapsed < 0)
        elapsed[fresh] = np.nan
        first = np.where(fresh, t, self.table["first"][rows])
        age = t - first + length
        counts = scaling.matrix(intervals, self.names, per_hour=False)
        sums, current = windowed(
            self.table["sums"].take(rows, axis=0), elapsed, age, length, self.window, counts, self.rates, self.priors
        )
        return Visit(intervals, t, length, rows, fresh, elapsed, first, age, sums, current)

    def carried(self, visit: Visit, column: str) -> np.ndarray:
        """A column's values for the visited hosts, at the initial value for hosts starting over."""
        values = self.table[column].take(visit.rows, axis=0)  # take: 2-3x faster than [rows] for rows of several values
        values[visit.fresh] = self.table.columns[column].fill
        return values

    def close(self, visit: Visit, **columns: np.ndarray) -> None:
        """Store the visit (windows, first and last seen) and ``columns``; now and then forget the silent."""
        rows = visit.rows
        self.table["sums"][rows] = visit.sums
        self.table["first"][rows] = visit.first
        self.table["last"][rows] = visit.t
        for name, values in columns.items():
            self.table[name][rows] = values
        self._intervals += 1
        if self._intervals >= PRUNE_EVERY:
            self._intervals = 0
            self.table.prune(self.table["last"] >= visit.t - self.forget_after)

    def state(self) -> dict[str, Any]:
        return {"features": list(self.names), **self.table.state()}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state`; a state for other features or of another shape is
        dropped (a cold start for this detector) with a log line, never raised."""
        if list(state.get("features", [])) != list(self.names):
            log.warning("model state is for other features; starting cold", detector=self.name, saved=state.get("features"))
            return
        try:
            self.table.load(state)
        except (KeyError, ValueError, TypeError) as exc:
            log.warning("model state unusable; starting cold", detector=self.name, error=str(exc))

    def nbytes(self) -> int:
        return self.table.nbytes()
