"""Which features the learned models see, and how they are put on one scale.

Counts per interval (packets, bytes) become rates per hour, so a model does not
depend on the interval length. Every value then goes through ``log2(1 + v)``:
NTP traffic spans six orders of magnitude and "twice as much" should weigh the
same at any level. HalfSpaceTrees wants values in [0, 1]: the log level is
divided by ``log2(1 + limit)`` with a FIXED limit per feature and clipped, never
a running min/max that one outlier would stretch for good. NaN ("unknown from
this telemetry", e.g. flow records carry no NTP header) stays NaN; each model
skips it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from netmon.batch import HostIntervals

HOUR = 3600.0


@dataclass(frozen=True)
class Spec:
    """One model feature.

    ``limit`` is the largest value expected, in the model's unit (per hour when
    ``rate``); ``rate`` marks counts per interval that are turned into per-hour
    rates; ``unit`` is how a reader sees the value in an explanation; ``floor``
    is the smallest rise (same unit) worth a finding, so a reboot's iburst of
    8 packets or one more server never raises an alert on its own; ``prior`` is
    the everyday value a level feature of a new host starts from.
    """

    name: str
    limit: float
    rate: bool
    unit: str
    floor: float
    prior: float = 0.0


def _derived_requests_per_port(features: dict[str, np.ndarray]) -> np.ndarray:
    """Requests per distinct source port: a NAT gateway's many clients each use
    their own port, while daemons that share port 123 pile onto one."""
    return features["requests_out"] / np.maximum(features["client_ports"], 1.0)


def _derived_instance_seconds(features: dict[str, np.ndarray]) -> np.ndarray:
    """Requests times their advertised poll interval (2^poll s): the seconds of
    polling these requests stand for. Summed over a window and divided by its
    length it counts instances polling as advertised (one ntpd = 1 per server),
    so a reboot's fast polling at poll 6 weighs the same as slow polling at 10."""
    return features["requests_out"] * np.exp2(features["poll"])


def _derived_socket_rate(features: dict[str, np.ndarray]) -> np.ndarray:
    """Requests per hour on the host's busiest socket (host port, server): the
    aggregator's ``rate_vs_poll`` (requests against the advertised poll) times
    the advertised rate 3600 / 2^poll. A device hard-wired to ask every 10 s
    shows 360/h whatever poll it claims; a steady ntpd about 3.5/h."""
    return features["rate_vs_poll"] * 3600.0 / np.exp2(features["poll"])


DERIVED = {
    "socket_rate": _derived_socket_rate,
    "requests_per_port": _derived_requests_per_port,
    "instance_seconds": _derived_instance_seconds,
}

SPECS: dict[str, Spec] = {
    s.name: s
    for s in (
        Spec("requests_out", 1e7, True, "/h", 120.0),
        Spec("requests_per_port", 1e7, True, "/h", 120.0),
        Spec("socket_rate", 1e6, False, "/h", 15.0, 4.0),
        Spec("bytes_out", 1e9, True, "B/h", 12000.0),
        Spec("servers", 1e4, False, "", 4.0, 1.0),
        Spec("client_ports", 65536, False, "", 8.0, 1.0),
        Spec("rate_vs_poll", 1e4, False, "x", 1.5, 1.0),
        Spec("org_mismatch", 1e7, True, "/h", 30.0),
        Spec("after_kod", 1e7, True, "/h", 60.0),
        Spec("requests_in", 1e8, True, "/h", 3600.0),
        Spec("replies_out", 1e8, True, "/h", 3600.0),
        Spec("ctl_out", 1e8, True, "/h", 60.0),
        Spec("amplification", 1e4, False, "x", 4.0),
        Spec("instance_seconds", 1e9, True, "s/h", 5400.0),
        Spec("server_clients", 1e6, True, "x 60 s/h", 4.0),
        Spec("server_requests", 1e7, True, "/h", 120.0),
    )
}


def known(names: Any) -> Any:
    """A config's feature names (a list, or a table keyed by name), checked against
    :data:`SPECS`; a pydantic validator, so an unknown name is a clear config error."""
    unknown = [n for n in names if n not in SPECS]
    if unknown:
        raise ValueError(f"unknown features {unknown}; allowed: {', '.join(SPECS)}")
    return names


def raw(intervals: HostIntervals, name: str) -> np.ndarray:
    """Feature ``name`` per host as float64 in its natural unit per interval (NaN kept)."""
    if name in DERIVED:
        return np.asarray(DERIVED[name](intervals.features), dtype=np.float64)
    return np.asarray(intervals.features[name], dtype=np.float64)


def matrix(intervals: HostIntervals, names: tuple[str, ...], per_hour: bool = True) -> np.ndarray:
    """(hosts, features) float64: rate features per hour (or per interval when not
    ``per_hour``), the others as they are."""
    length = max(float(intervals.end - intervals.start), 1e-9)
    out = np.empty((len(intervals), len(names)), dtype=np.float64)
    for j, name in enumerate(names):
        column = raw(intervals, name)
        out[:, j] = column * (HOUR / length) if per_hour and SPECS[name].rate else column
    return out


def rate_mask(names: tuple[str, ...]) -> np.ndarray:
    """True for the features that are counts per interval."""
    return np.array([SPECS[n].rate for n in names], dtype=bool)


def priors(names: tuple[str, ...]) -> np.ndarray:
    """Everyday values new hosts' level features start from."""
    return np.array([SPECS[n].prior for n in names], dtype=np.float64)


def floors(names: tuple[str, ...]) -> np.ndarray:
    """The smallest rise worth a finding, per feature, in model units."""
    return np.array([SPECS[n].floor for n in names], dtype=np.float64)


def level(v: np.ndarray) -> np.ndarray:
    """log2(1 + v), negatives treated as 0, NaN kept: the log level the models compare."""
    return np.log2(1.0 + np.maximum(v, 0.0))


def unlevel(x: np.ndarray | float) -> np.ndarray | float:
    """The inverse of :func:`level`: a log level back in the feature's unit."""
    return np.exp2(x) - 1.0


def risen(hit: np.ndarray, level_now: np.ndarray, usual: np.ndarray,
          floors_: np.ndarray) -> dict[tuple[int, int], tuple[float, float]]:
    """Keep in ``hit`` (hosts x features, changed in place) the cells whose log level rose past
    ``usual`` by at least the feature's floor in its own unit; the two back in that unit by cell.
    Only the cells already hit are turned back into units (a few, not a million hosts' all)."""
    cells = np.nonzero(hit)
    with np.errstate(invalid="ignore"):
        value, base = unlevel(level_now[cells]), unlevel(usual[cells])
        hit[cells] = value - base >= floors_[cells[1]]
    return dict(zip(zip(*(c.tolist() for c in cells)), zip(value.tolist(), base.tolist())))


def unit_scaled(v: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    """Values in model units mapped to [0, 1] by the fixed limits (NaN kept)."""
    top = np.log2(1.0 + np.array([SPECS[n].limit for n in names]))
    return np.clip(level(v) / top, 0.0, 1.0)


def show(name: str, value: float) -> str:
    """A feature value as a reader wants it: ``240/h``, ``3.5x``, ``12``."""
    unit = SPECS[name].unit if name in SPECS else ""
    if not np.isfinite(value):
        return "unknown"
    text = f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return f"{text}{unit}"
