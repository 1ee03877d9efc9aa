"""Per-host baseline: is this host unlike itself?

For each host and feature, three float32: the recent rate over a sliding
window (``window`` s, see :func:`netmon.detect.hoststate.windowed`), and the
host's usual log level of that rate with its mean absolute deviation, both
exponentially weighted with time constant ``memory`` s and updated only from
intervals no detector flagged. A host is flagged when a feature rose above its
usual level by at least ``z_alert`` deviations, by a factor ``min_ratio`` and by
the feature's absolute floor (:data:`netmon.detect.scaling.SPECS`), so a
reboot's iburst or a chatty but harmless host stays quiet.

Request volume (:data:`VOLUME`) is judged only for hosts seen in flow records
alone; where NTP headers are seen the ``hosts`` detector judges the clients
behind the volume.

This is the fast model: with ``memory`` of a day it follows a host's habits
and so, on its own, would learn a slow ramp as normal; ``drift`` keeps the slow
reference beside it.

Cold start: no score (NaN) and no finding for a host until it has been seen for
``warmup`` s and ``min_rows`` of its intervals were learned; a host silent for
``forget_after`` s starts over (DHCP may have given its address to another machine).
State: 16 + 12 x features bytes per host, plus its key.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import Field, field_validator

from netmon.batch import HostIntervals
from netmon.config import Strict
from netmon.detect import scaling
from netmon.detect.engine import DetectorOutput
from netmon.detect.explain import Deviation, finding, score01
from netmon.detect.hoststate import Column, HostKeys, HostModel, Visit

#: Seconds the current rate is measured over: short, so a sudden change shows
#: within an interval or two.
WINDOW = 300.0



class Config(Strict):
    """``[detect.baseline]``."""

    features: list[str] = Field(
        default_factory=lambda: [
            "requests_out",
            "org_mismatch",
            "after_kod",
            "servers",
            "bytes_out",
            "replies_out",
            "ctl_out",
        ],
        description="features compared with the host's own past (see netmon.detect.scaling.SPECS)",
    )
    window: float = Field(WINDOW, gt=0, description="seconds the current rate is measured over")
    memory: float = Field(86400.0, gt=0, description="time constant of the host's usual level, seconds")
    warmup: float = Field(6 * 3600.0, ge=0, description="seconds a host is watched before it can be flagged")
    min_rows: int = Field(12, ge=1, description="learned intervals a host needs before it can be flagged")
    z_alert: float = Field(6.0, gt=0, description="deviations above the usual level that make a finding")
    min_ratio: float = Field(4.0, ge=1, description="factor above the usual rate that makes a finding")
    floor_scale: float = Field(
        4.0, gt=0, description="times each feature's floor a sudden rise must exceed (reboots are sudden too)"
    )
    critical_ratio: float = Field(64.0, ge=1, description="factor above the usual rate that makes it critical")
    forget_after: float = Field(6 * 3600.0, gt=0, description="seconds of silence after which a host starts over")

    _known = field_validator("features")(scaling.known)


#: Request volume features: judged only for hosts seen without NTP headers
#: (flow records). Where headers are seen, the ``hosts`` detector judges the
#: clients behind the volume instead: a host rebooting every few minutes or a
#: NAT gateway whose laptops arrive in the morning multiplies its requests
#: while running the clients it should.
VOLUME = frozenset({"requests_out", "bytes_out"})

#: Smallest deviation (log2 units) a z is computed against, so a perfectly
#: regular host is not flagged for a jitter of one packet.
DEV_FLOOR = 0.25


@dataclass
class _Seen:
    """What scoring computed for one interval, handed to learning."""

    visit: Visit
    level: np.ndarray
    n: np.ndarray
    mean: np.ndarray
    dev: np.ndarray


class Baseline(HostModel):
    """The per-host baseline detector."""

    name = "baseline"

    def __init__(self, config: Config) -> None:
        k = len(config.features)
        columns = {"n": Column("f4", 0, 0.0), "mean": Column("f4", k, np.nan), "dev": Column("f4", k, 0.0)}
        super().__init__(tuple(config.features), columns, config.window, config.forget_after)
        self.config = config
        self.floors = scaling.floors(self.names) * config.floor_scale
        self.volume = np.array([n in VOLUME for n in self.names], dtype=bool)
        self._seen: _Seen | None = None

    def _observe(self, intervals: HostIntervals, keys: HostKeys | None) -> _Seen:
        if self._seen is not None and self._seen.visit.intervals is intervals:
            return self._seen
        visit = self.visit(intervals, keys)
        self._seen = _Seen(
            visit=visit,
            level=scaling.level(visit.current),
            n=self.carried(visit, "n"),
            mean=self.carried(visit, "mean"),
            dev=self.carried(visit, "dev"),
        )
        return self._seen

    def score(self, intervals: HostIntervals, keys: HostKeys | None = None) -> DetectorOutput:
        """z of each host against its own usual level; findings for clear rises."""
        cfg = self.config
        seen = self._observe(intervals, keys)
        ready = (seen.n >= cfg.min_rows) & (seen.visit.t - seen.visit.first >= cfg.warmup)
        gap = seen.level - seen.mean
        z = gap / np.maximum(1.25 * seen.dev, DEV_FLOOR)
        z[~ready] = np.nan
        hit = (z >= cfg.z_alert) & (gap >= np.log2(cfg.min_ratio))
        rise = scaling.risen(hit, seen.level, seen.mean, self.floors)
        hit[:, self.volume] &= ~np.isfinite(np.asarray(intervals.features["poll"], dtype=np.float64))[:, None]
        worst = np.fmax.reduce(z, axis=1)  # the largest z of each host, NaN where it has none
        findings = []
        for i in np.flatnonzero(hit.any(axis=1)).tolist():
            cols = np.flatnonzero(hit[i])
            severe = gap[i, cols].max() >= np.log2(cfg.critical_ratio)
            hours = (seen.visit.t - seen.visit.first[i]) / 3600.0
            findings.append(
                finding(
                    intervals,
                    i,
                    "model.baseline",
                    "critical" if severe else "warning",
                    float(score01(worst[i : i + 1], cfg.z_alert)[0]),
                    f"its own usual level (last {min(hours, cfg.memory / 3600.0):.0f} h)",
                    [Deviation(self.names[j], *rise[i, j], float(z[i, j])) for j in cols],
                )
            )
        return DetectorOutput(scores={"baseline": score01(worst, cfg.z_alert)}, findings=findings)

    def learn(self, intervals: HostIntervals, normal: np.ndarray, keys: HostKeys | None = None) -> None:
        """Keep every host's recent rate; move the usual level only for normal hosts."""
        seen = self._observe(intervals, keys)
        self._seen = None
        n_new = seen.n + normal
        step = -np.expm1(-np.nan_to_num(seen.visit.elapsed, nan=np.inf) / self.config.memory)
        alpha = np.maximum(step, 1.0 / np.maximum(n_new, 1.0))[:, None]
        learn = normal[:, None] & ~np.isnan(seen.level)
        first = learn & np.isnan(seen.mean)
        mean = np.where(first, seen.level, seen.mean)
        # in place, the same arithmetic as dev + alpha * (|level - mean| - dev) and mean + alpha * (level - mean)
        rise = np.subtract(seen.level, mean)
        moved = np.abs(rise)
        moved -= seen.dev
        moved *= alpha
        moved += seen.dev
        dev = np.where(learn & ~first, moved, seen.dev)
        rise *= alpha
        rise += mean
        mean = np.where(learn, rise, mean)
        self.close(seen.visit, n=n_new, mean=mean, dev=dev)


def build(config: Config) -> Baseline:
    return Baseline(config)
