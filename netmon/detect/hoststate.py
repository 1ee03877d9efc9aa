"""Per-host model state as numpy columns, found by host key.

A million hosts must fit in memory and be updated once a minute, so per-host
state is a few float32 per feature in preallocated arrays (one row per host),
and Python touches a host only to look up its row in a dict. Rows of hosts
silent for longer than ``forget_after`` seconds are dropped by :meth:`prune`
(an address handed to another machine by DHCP then starts afresh).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Column:
    """One state column: dtype, values per host (0 = a scalar), initial value."""

    dtype: str
    width: int
    fill: float


class HostTable:
    """Named numpy columns with one row per host; rows are handed out on first sight."""

    def __init__(self, columns: dict[str, Column], capacity: int = 1024) -> None:
        self.columns = columns
        self.index: dict[str, int] = {}
        self.keys: list[str] = []
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
        new = max(need, capacity * 2)
        for name, col in self.columns.items():
            bigger = self._blank(col, new)
            bigger[:capacity] = self.data[name]
            self.data[name] = bigger

    def rows(self, hosts: np.ndarray) -> np.ndarray:
        """Row index of each host (int64), new hosts get fresh rows at their initial values."""
        get = self.index.get
        found = np.fromiter((get(h, -1) for h in hosts.tolist()), dtype=np.int64, count=len(hosts))
        missing = np.flatnonzero(found < 0)
        if missing.size:
            self._grow(len(self.keys) + missing.size)
            for i in missing.tolist():
                key = str(hosts[i])
                row = self.index.get(key)
                if row is None:
                    row = len(self.keys)
                    self.index[key] = row
                    self.keys.append(key)
                found[i] = row
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
        self.index = {k: i for i, k in enumerate(self.keys)}
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
        n = hosts.shape[0]
        for name, col in self.columns.items():
            value = np.asarray(state.get(name))
            want = (n, col.width) if col.width else (n,)
            if value.shape != want:
                raise ValueError(f"column {name!r} has shape {value.shape}, expected {want}")
        self.keys = [str(h) for h in hosts.tolist()]
        self.index = {k: i for i, k in enumerate(self.keys)}
        self.data = {name: self._blank(col, max(n, 1024)) for name, col in self.columns.items()}
        for name, col in self.columns.items():
            self.data[name][:n] = np.asarray(state[name], dtype=col.dtype)

    def nbytes(self) -> int:
        """Bytes held: the columns plus an estimate of the key dict and strings."""
        arrays = sum(v.nbytes for v in self.data.values())
        keys = sum(49 + len(k) for k in self.keys) + 8 * len(self.keys)
        return arrays + keys + 100 * len(self.index)


def windowed(
    sums: np.ndarray,
    elapsed: np.ndarray,
    age: np.ndarray,
    length: float,
    window: float,
    values: np.ndarray,
    rates: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Recent values over a sliding exponential window, however sparse a host's rows.

    A host polling every 1024 s shows up in one 60 s interval of 17, so one
    interval says little. For count features (``rates``), ``sums`` holds each
    count summed with weight ``exp(-age / window)``; divided by ``window`` it is
    the recent rate whether or not the host appeared in between, and ``age``
    (seconds since the host was first seen, this interval included) corrects a
    window not yet filled, so a new host's rate is not underestimated. For
    level features (a ratio, a count of servers) ``sums`` holds their mean over
    the host's last ``window`` seconds of rows, each row weighing its interval
    ``length``: one interval of a reboot's iburst barely moves it, a lasting
    change does. ``elapsed`` is the seconds since the host's previous row (NaN
    for a new host, whose state starts from nothing); NaN values are unknown and
    leave the state as it was (the sums only decay).

    Returns the new state and the current values: per hour for counts, the
    windowed mean for levels; NaN where this interval did not know the feature.
    """
    new_host = np.isnan(elapsed)[:, None]
    keep = np.exp(-np.nan_to_num(elapsed, nan=np.inf).clip(min=0.0) / window)[:, None]
    known = ~np.isnan(values)
    counts = sums * keep + np.where(known, values, 0.0)
    blend = -np.expm1(-length / window)
    start = new_host | np.isnan(sums)
    levels = np.where(known, np.where(start, values, sums + blend * (values - sums)), np.where(new_host, np.nan, sums))
    state = np.where(rates, counts, levels)
    filled = -np.expm1(-np.maximum(age, 1.0) / window)[:, None]
    current = np.where(rates, counts * (3600.0 / window) / filled, levels)
    current[~known] = np.nan
    return state, current
