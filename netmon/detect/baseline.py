"""Per-host baseline: is this host unlike itself?

For each host and feature, three float32: the recent rate over a sliding
window (``window`` s, see :func:`netmon.detect.hoststate.windowed`), and the
host's usual log level of that rate with its mean absolute deviation, both
exponentially weighted with time constant ``memory`` s and updated only from
intervals no detector flagged. A host is flagged when a feature rose above its
usual level by at least ``z_alert`` deviations, by a factor ``min_ratio`` and by
the feature's absolute floor (:data:`netmon.detect.scaling.SPECS`), so a
reboot's iburst or a chatty but harmless host stays quiet.

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
from typing import Any

import numpy as np
import structlog
from pydantic import BaseModel, ConfigDict, Field, field_validator

from netmon.batch import HostIntervals
from netmon.detect import scaling
from netmon.detect.engine import DetectorOutput
from netmon.detect.explain import Deviation, finding, score01
from netmon.detect.hoststate import Column, HostTable, windowed

log = structlog.get_logger(__name__)

#: Seconds the current rate is measured over: short, so a sudden change shows
#: within an interval or two.
WINDOW = 300.0

#: Intervals between two checks for hosts to forget.
PRUNE_EVERY = 360


class Config(BaseModel):
    """``[detect.baseline]``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

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

    @field_validator("features")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        unknown = [v for v in value if v not in scaling.SPECS]
        if unknown:
            raise ValueError(f"unknown features {unknown}; allowed: {', '.join(scaling.SPECS)}")
        return value


#: Smallest deviation (log2 units) a z is computed against, so a perfectly
#: regular host is not flagged for a jitter of one packet.
DEV_FLOOR = 0.25


@dataclass
class _Seen:
    """What scoring computed for one interval, handed to learning."""

    key: int
    rows: np.ndarray
    sums: np.ndarray
    level: np.ndarray
    first: np.ndarray
    n: np.ndarray
    mean: np.ndarray
    dev: np.ndarray
    elapsed: np.ndarray


class Baseline:
    """The per-host baseline detector."""

    name = "baseline"

    def __init__(self, config: Config) -> None:
        self.config = config
        self.names = tuple(config.features)
        self.rates = scaling.rate_mask(self.names)
        self.priors = scaling.priors(self.names)
        self.floors = scaling.floors(self.names) * config.floor_scale
        k = len(self.names)
        self.table = HostTable(
            {
                "first": Column("f8", 0, np.nan),
                "last": Column("f8", 0, np.nan),
                "n": Column("f4", 0, 0.0),
                "sums": Column("f4", k, np.nan),
                "mean": Column("f4", k, np.nan),
                "dev": Column("f4", k, 0.0),
            }
        )
        self._seen: _Seen | None = None
        self._rows_since_prune = 0

    def _observe(self, intervals: HostIntervals) -> _Seen:
        if self._seen is not None and self._seen.key == id(intervals):
            return self._seen
        t = float(intervals.end)
        rows = self.table.rows(intervals.host)
        last = self.table["last"][rows]
        elapsed = t - last
        fresh = np.isnan(last) | (elapsed > self.config.forget_after)
        elapsed[fresh] = np.nan
        sums = self.table["sums"][rows]
        counts = scaling.matrix(intervals, self.names, per_hour=False)
        first = np.where(fresh, t, self.table["first"][rows])
        age = t - first + float(intervals.end - intervals.start)
        sums, current = windowed(sums, elapsed, age, float(intervals.end - intervals.start), self.config.window, counts, self.rates, self.priors)
        self._seen = _Seen(
            key=id(intervals),
            rows=rows,
            sums=sums,
            level=scaling.level(current),
            first=first,
            n=np.where(fresh, 0.0, self.table["n"][rows]),
            mean=np.where(fresh[:, None], np.nan, self.table["mean"][rows]),
            dev=np.where(fresh[:, None], 0.0, self.table["dev"][rows]),
            elapsed=elapsed,
        )
        return self._seen

    def score(self, intervals: HostIntervals) -> DetectorOutput:
        """z of each host against its own usual level; findings for clear rises."""
        seen = self._observe(intervals)
        ready = (seen.n >= self.config.min_rows) & (float(intervals.end) - seen.first >= self.config.warmup)
        gap = seen.level - seen.mean
        z = gap / np.maximum(1.25 * seen.dev, DEV_FLOOR)
        z[~ready] = np.nan
        with np.errstate(invalid="ignore"):
            value = scaling.unlevel(seen.level)
            usual = scaling.unlevel(seen.mean)
            hit = (z >= self.config.z_alert) & (gap >= np.log2(self.config.min_ratio)) & (value - usual >= self.floors)
        worst = np.where(np.isnan(z).all(axis=1), np.nan, np.nanmax(np.where(np.isnan(z), -np.inf, z), axis=1))
        findings = []
        for i in np.flatnonzero(hit.any(axis=1)).tolist():
            cols = np.flatnonzero(hit[i])
            severe = gap[i, cols].max() >= np.log2(self.config.critical_ratio)
            hours = (float(intervals.end) - seen.first[i]) / 3600.0
            findings.append(
                finding(
                    intervals,
                    i,
                    "model.baseline",
                    "critical" if severe else "warning",
                    float(score01(worst[i : i + 1], self.config.z_alert)[0]),
                    f"its own usual level (last {min(hours, self.config.memory / 3600.0):.0f} h)",
                    [Deviation(self.names[j], float(value[i, j]), float(usual[i, j]), float(z[i, j])) for j in cols],
                )
            )
        return DetectorOutput(scores={"baseline": score01(worst, self.config.z_alert)}, findings=findings)

    def learn(self, intervals: HostIntervals, normal: np.ndarray) -> None:
        """Keep every host's recent rate; move the usual level only for normal hosts."""
        seen = self._observe(intervals)
        self._seen = None
        t = float(intervals.end)
        cfg = self.config
        n_new = seen.n + normal
        step = 1.0 - np.exp(-np.nan_to_num(seen.elapsed, nan=np.inf) / cfg.memory)
        alpha = np.maximum(step, 1.0 / np.maximum(n_new, 1.0))[:, None]
        learn = normal[:, None] & ~np.isnan(seen.level)
        first = learn & np.isnan(seen.mean)
        mean = np.where(first, seen.level, seen.mean)
        gap = np.abs(seen.level - mean)
        dev = np.where(learn & ~first, seen.dev + alpha * (gap - seen.dev), seen.dev)
        mean = np.where(learn, mean + alpha * (seen.level - mean), mean)
        table, rows = self.table, seen.rows
        table["sums"][rows] = seen.sums
        table["mean"][rows] = mean
        table["dev"][rows] = dev
        table["n"][rows] = n_new
        table["first"][rows] = seen.first
        table["last"][rows] = t
        self._rows_since_prune += 1
        if self._rows_since_prune >= PRUNE_EVERY:
            self._rows_since_prune = 0
            self.table.prune(self.table["last"] >= t - cfg.forget_after)

    def state(self) -> dict[str, Any]:
        return {"features": list(self.names), **self.table.state()}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state`; a state for other features is dropped (cold start) with a log line."""
        if list(state.get("features", [])) != list(self.names):
            log.warning("baseline state is for other features; starting cold", saved=state.get("features"))
            return
        try:
            self.table.load(state)
        except (KeyError, ValueError, TypeError) as exc:
            log.warning("baseline state unusable; starting cold", error=str(exc))

    def nbytes(self) -> int:
        return self.table.nbytes()


def build(config: Config) -> Baseline:
    return Baseline(config)
