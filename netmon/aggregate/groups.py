"""Group-by over numpy columns: sums, distinct counts, medians, extremes, last-before.

Every function takes ``group`` (int64 group index per row, 0..n_groups-1) and works
on whole columns, so Python runs once per interval, never per packet.
"""

from __future__ import annotations

import numpy as np


def total(group: np.ndarray, n_groups: int, weights: np.ndarray | None = None) -> np.ndarray:
    """Sum of ``weights`` (or row count) per group, float64."""
    return np.bincount(group, weights=weights, minlength=n_groups).astype(np.float64, copy=False)


def distinct(group: np.ndarray, key: np.ndarray, n_groups: int) -> np.ndarray:
    """Distinct ``key`` values (uint64, already mixed with the group) per group."""
    _, first = np.unique(key, return_index=True)
    return total(group[first], n_groups)


def median(group: np.ndarray, values: np.ndarray, n_groups: int) -> np.ndarray:
    """Median of ``values`` per group; NaN for groups with no row. NaN values are dropped."""
    keep = ~np.isnan(values)
    group, values = group[keep], values[keep]
    order = np.lexsort((values, group))
    ordered = values[order]
    count = np.bincount(group, minlength=n_groups)
    start = np.cumsum(count) - count
    out = np.full(n_groups, np.nan)
    has = count > 0
    low = start[has] + (count[has] - 1) // 2
    high = start[has] + count[has] // 2
    out[has] = (ordered[low] + ordered[high]) / 2.0
    return out


def mean(group: np.ndarray, values: np.ndarray, n_groups: int) -> np.ndarray:
    """Mean of ``values`` per group; NaN for groups with no row. NaN values are dropped."""
    keep = ~np.isnan(values)
    count = total(group[keep], n_groups)
    sums = total(group[keep], n_groups, values[keep])
    return np.divide(sums, count, out=np.full(n_groups, np.nan), where=count > 0)


def extreme(group: np.ndarray, values: np.ndarray, n_groups: int, ufunc: np.ufunc) -> np.ndarray:
    """``np.maximum`` or ``np.minimum`` of ``values`` per group; NaN for empty groups."""
    keep = ~np.isnan(values)
    start = -np.inf if ufunc is np.maximum else np.inf
    out = np.full(n_groups, start)
    ufunc.at(out, group[keep], values[keep])
    out[np.isinf(out) & (out == start)] = np.nan
    return out


def runs(key_sorted: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For rows sorted by key: each run's start index, each row's run number and run start."""
    n = key_sorted.shape[0]
    new = np.ones(n, dtype=bool)
    new[1:] = key_sorted[1:] != key_sorted[:-1]
    starts = np.flatnonzero(new)
    run = np.cumsum(new) - 1
    return starts, run, starts[run]


def last_before(event: np.ndarray, row_start: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For rows sorted by (run, time): the index of the latest earlier event row in the same run.

    Returns (index, found); ``index`` is 0 where nothing earlier was found.
    """
    n = event.shape[0]
    position = np.where(event, np.arange(n), -1)
    latest = np.maximum.accumulate(position) if n else position
    earlier = np.empty(n, dtype=np.int64)
    earlier[:1] = -1
    earlier[1:] = latest[:-1]
    found = earlier >= row_start
    return np.where(found, earlier, 0), found


def last_in_run(event: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For rows sorted by run: the index of each run's last event row, and whether it has one."""
    position = np.where(event, np.arange(event.shape[0]), -1)
    latest = np.maximum.reduceat(position, starts) if starts.shape[0] else starts
    found = latest >= starts
    return np.where(found, latest, 0), found
