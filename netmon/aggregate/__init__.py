"""Per internal host, per interval: observation rows in, feature rows out, in event time.

Windows are ``aggregate.interval`` seconds long, aligned to multiples of the
interval since the UNIX epoch, and follow the packets' own timestamps: a window
closes when the watermark (the latest event time seen minus ``aggregate.lateness``,
or a source's :class:`~netmon.batch.Watermark`; with several sources the pipeline
closes at the minimum of their watermarks) passes its end. Rows of a window
that already closed are counted as ``aggregate.late`` and dropped. Rows wait
unreduced in their open window (memory: one window plus lateness of UDP/123
rows, at most ``aggregate.max_window_rows`` rows a window: past that a flood is
thinned, see :mod:`netmon.aggregate.thinning`); features are computed once, when the window closes, in time order, so the
per-socket memory (poll gaps, origins, KoD) sees every packet in event order.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import structlog

from netmon import config, health
from netmon.aggregate.features import Campus, compute
from netmon.aggregate.keys import Names, PrefixSet
from netmon.aggregate.state import SocketTable
from netmon.aggregate.thinning import Thinning
from netmon.batch import HostIntervals

log = structlog.get_logger(__name__)

__all__ = ["Aggregator"]

#: Seconds a row may lie ahead of both its batch's median time and the latest time
#: seen; further ahead it is a corrupt timestamp, counted and skipped.
MAX_AHEAD = 86400.0
#: No row is dated this far from 1970 (UNIX s: year 10000): beyond it no date can show the
#: time, and an interval's end rounds to its start.
MAX_TIME = 253402300800.0


def dated(time: np.ndarray) -> np.ndarray:
    """Rows whose ``time`` (UNIX s) a date can show: not NaN, within :data:`MAX_TIME` of 1970."""
    return np.abs(time) < MAX_TIME


def too_far_ahead(time: np.ndarray, newest: float = -np.inf) -> np.ndarray:
    """Rows (finite ``time``, UNIX s) further than :data:`MAX_AHEAD` ahead of both their batch's
    median and ``newest`` (the latest time already seen): one corrupt far-future stamp must
    not move event time. A lone row is never judged."""
    if time.shape[0] < 2:
        return np.zeros(time.shape[0], dtype=bool)
    return time > max(float(np.median(time)), newest) + MAX_AHEAD


def _records(rows: np.ndarray) -> np.ndarray:
    """``rows`` as one opaque record each (a view): gathering those is a plain copy of bytes,
    several times faster than gathering a packed structured array, and they sort by their bytes."""
    return np.ascontiguousarray(rows).view(np.dtype((np.void, rows.dtype.itemsize))).ravel()


def in_time_order(rows: np.ndarray) -> np.ndarray:
    """One window's rows in time order, rows of one time by the NTP transmit timestamp of the
    request they are or answer (a reply's origin timestamp), a request before its reply, then by
    their bytes: an order that does not depend on the order rows arrived in, and that keeps a
    socket's exchange as sent whatever the offset between client and server clocks. Two collectors'
    streams merged in any order then give the intervals one process gives on the whole capture,
    bit for bit (sums taken in another order differ in the last place, and a reply taken after
    the request it answers turns an origin match into a mismatch). Only rows sharing a time
    (rare at a capture's microseconds, common in flow records' seconds) are sorted again, and
    the rows are moved once, as opaque records (a 1 M-row window of whole seconds: about a third
    of the time of gathering the structured rows twice, measured)."""
    time = rows["time"]
    order = None
    if rows.shape[0] > 1 and not (time[1:] >= time[:-1]).all():
        order = np.argsort(time, kind="stable")
        time = time[order]
    tied = time[1:] == time[:-1]
    if not tied.any():
        return rows if order is None else _records(rows)[order].view(rows.dtype)
    if order is None:
        order = np.arange(rows.shape[0])
    at = np.flatnonzero(np.concatenate([[False], tied]) | np.concatenate([tied, [False]]))
    picked = order[at]
    records = _records(rows)
    same = records[picked]  # whole runs of one time, in time order: sorting them keeps each run in place
    # a reply is placed by the origin timestamp it echoes (its request's transmit timestamp, in
    # the client's clock), after that request: by its own (the server's clock) a reply from a
    # server behind its client would sort before the request it answers
    reply = (rows["ntp"][picked] != 0) & (rows["mode"][picked] == 4)  # as features.py tells a reply
    stamp = np.where(reply, rows["org_ts"][picked], rows["xmt_ts"][picked])
    by = np.argsort(same, kind="stable")
    by = by[np.argsort(reply[by], kind="stable")]
    by = by[np.argsort(stamp[by], kind="stable")]
    by = by[np.argsort(time[at][by], kind="stable")]
    order[at] = picked[by]
    return records[order].view(rows.dtype)  # a copy: it may be a batch a caller still holds


class Aggregator:
    """Event-time windows over observation rows, closed into :class:`HostIntervals`."""

    def __init__(self, campus: config.Campus, aggregate: config.Aggregate) -> None:
        names = list(campus.groups)
        self.campus = Campus(
            internal=PrefixSet(campus.internal),
            groups=PrefixSet([p for name in names for p in campus.groups[name]]),
            group_names=[name for name in names for _ in campus.groups[name]],
            default_group=campus.default_group,
            ipv6_bits=campus.ipv6_prefix,
            host_names=Names(campus.ipv6_prefix),
            server_names=Names(),
        )
        self.interval = float(aggregate.interval)
        self.lateness = float(aggregate.lateness)
        self.sockets = SocketTable(aggregate.kod_holdoff, aggregate.pair_window)
        self._pending: dict[int, list[np.ndarray]] = {}
        self._thin = Thinning(aggregate.max_window_rows)
        self._open_from = -math.inf  # first window index still open
        self._max_time = -math.inf
        if not campus.internal:
            log.warning("no campus prefixes configured: no host is internal, no features will be produced")

    def add(self, rows: np.ndarray) -> list[HostIntervals]:
        """Take a batch of observation rows; return the intervals the batch closed (one source:
        its newest row minus ``lateness``; the pipeline, with several, uses insert + advance)."""
        if rows.shape[0] == 0:
            return []
        self.insert(rows)
        return self._close_before(self._max_time - self.lateness)

    def insert(self, rows: np.ndarray) -> float | None:
        """Park a batch of rows in their windows, closing none; the newest event time kept
        (UNIX s), None when no row was kept."""
        if rows.shape[0] == 0:
            return None
        time = rows["time"]
        good = dated(time)
        if not good.all():
            health.count("aggregate.skip.bad_time", int((~good).sum()))
            rows, time = rows[good], time[good]
        ahead = too_far_ahead(time, self._max_time)
        if ahead.any():
            health.count("aggregate.skip.time_outlier", int(ahead.sum()))
            rows, time = rows[~ahead], time[~ahead]
        window = np.floor(time / self.interval).astype(np.int64)
        late = window < self._open_from
        if late.any():
            health.count("aggregate.late", int(late.sum()))
            rows, window = rows[~late], window[~late]
        if not rows.shape[0]:
            return None
        newest = float(rows["time"].max())
        self._max_time = max(self._max_time, newest)
        self._stash(rows, window)
        return newest

    def advance(self, time: float) -> list[HostIntervals]:
        """A source's promise that nothing before ``time`` follows: close what ended by then."""
        return self._close_before(time)

    def state(self) -> dict[str, Any]:
        """Everything a restart needs to go on exactly: open windows' rows, socket memory,
        thinning and the window bounds (arrays and numbers: the checkpoint format)."""
        pending = {str(index): parts[0] if len(parts) == 1 else np.concatenate(parts)
                   for index, parts in self._pending.items()}
        return {"pending": pending, "sockets": self.sockets.state(), "thinning": self._thin.state(),
                "open_from": float(self._open_from), "max_time": float(self._max_time)}

    def load_state(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state`'s output (same ``[campus]`` and ``[aggregate]`` settings)."""
        self._pending = {int(index): [np.asarray(rows)] for index, rows in state["pending"].items()}
        self.sockets.load_state(state["sockets"])
        self._thin.load_state(state["thinning"])
        self._open_from = float(state["open_from"])
        self._max_time = float(state["max_time"])

    def flush(self) -> list[HostIntervals]:
        """Close every open window (end of a replay, or shutdown)."""
        closed = self._close_windows(sorted(self._pending))
        if closed:
            self._open_from = max(self._open_from, math.floor(closed[-1].end / self.interval))
        return closed

    def _stash(self, rows: np.ndarray, window: np.ndarray) -> None:
        """Park rows in their windows, each window its own copy (a slice would keep its whole
        batch alive while the window stays open), thinned past ``max_window_rows``."""
        if window.shape[0] > 1 and not (window[1:] >= window[:-1]).all():
            order = np.argsort(window, kind="stable")
            rows, window = rows[order], window[order]
        cuts = np.flatnonzero(window[1:] != window[:-1]) + 1
        bounds = np.concatenate([[0], cuts, [window.shape[0]]]).tolist()
        for start, stop in zip(bounds[:-1], bounds[1:]):
            index = int(window[start])
            part = self._thin.sample(index, rows[start:stop])
            self._pending[index] = self._thin.add(index, self._pending.get(index, []), part)

    def _close_before(self, watermark: float) -> list[HostIntervals]:
        """Close windows whose end is at or before ``watermark`` (-inf: no row kept yet, none)."""
        if watermark == -math.inf:
            return []
        boundary = math.floor(watermark / self.interval)  # windows below this index have ended
        if boundary <= self._open_from:
            return []
        self._open_from = boundary
        return self._close_windows(sorted(w for w in self._pending if w < boundary))

    def _close_windows(self, windows: list[int]) -> list[HostIntervals]:
        closed = []
        for index in windows:
            parts = self._pending.pop(index)
            self._thin.forget(index)
            rows = in_time_order(parts[0] if len(parts) == 1 else np.concatenate(parts))
            start = index * self.interval
            intervals = compute(rows, start, start + self.interval, self.campus, self.sockets)
            health.count("aggregate.rows", rows.shape[0])
            health.count("aggregate.host_intervals", len(intervals))
            if len(intervals):
                closed.append(intervals)
        health.gauge("aggregate.sockets", len(self.sockets))
        return closed
