"""Slow reference: has this host crept up from what it used to be?

The founding incident grew by one ntpd an hour. A model that adapts every
interval (``baseline``, ``population``) learns such a ramp as normal, so this
detector keeps, per host and feature, a reference captured during a warm-up
(``warmup`` s once the feature's window has filled) that afterwards moves only
with time constant ``adapt`` (a week) and only on intervals no detector
flagged; its deviation (the host's noise) is the warm-up's and stays frozen, so
a slow creep cannot widen its own allowance. Beside it runs a one-sided CUSUM per feature on the log2 level of the
feature's recent value (over its own window, see
:func:`netmon.detect.hoststate.windowed`)::

    C <- max(0, C + (level - reference - allowance - 2 x reference_dev) x hours)

which sums, hour by hour, how far the host stays above its reference beyond an
allowance; a steady ramp accumulates until ``C >= threshold`` (log2-hours)
while noise and a reboot's short burst do not. Default features (``Watch``):

* ``requests_out`` over 6 h, allowance 0.7 (1.6x): slow creep over days; a
  reboot's hour of fast polling hardly moves a 6-hour rate. A host rebooting
  every few minutes for hours does move it, and is flagged: the simulator's
  2-minute reboot loop sends 680 requests/h against the 14/h of its reference,
  still 230/h with start bursts set aside (each boot's daemon then polls every
  64 s, as it advertises). Counted by advertised poll they stay at 4 clients, but so does
  the creeping host, whose extra SNTP queries are clients at poll 6 as well;
  only a count of restarts per server would tell them apart;
* ``rate_vs_poll`` over 30 min, allowance 0.5: the aggregator's requests per
  socket against the advertised poll, 1 for a daemon polling as it says, N for
  N daemons sharing port 123, and 1 for a reboot that polls fast at poll 6,
  since it also advertises poll 6;
* ``org_mismatch`` over 30 min, allowance 2: origins that match nothing, as
  when daemons read each other's replies.

A finding also needs the feature's absolute rise ``floor``.

Cold start: NaN and no finding for a feature until its reference is captured
(its window plus ``warmup``: 6.5 h for the poll ratio, 12 h for the request
rate); a host silent for ``forget_after`` s starts over. State: 16 + 20 x
features bytes per host, plus its key.
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


class Watch(Strict):
    """How one feature is watched: over which window, with which allowance and floor."""

    allowance: float = Field(ge=0, description="log2 rise above the reference that is tolerated")
    window: float = Field(1800.0, gt=0, description="seconds the current value is measured over")
    floor: float = Field(ge=0, description="smallest rise above the reference (feature units) worth a finding")


def _default_features() -> dict[str, Watch]:
    return {
        "requests_out": Watch(allowance=0.7, window=6 * 3600.0, floor=10.0),
        "rate_vs_poll": Watch(allowance=0.5, window=1800.0, floor=1.5),
        "org_mismatch": Watch(allowance=2.0, window=1800.0, floor=30.0),
    }


class Config(Strict):
    """``[detect.drift]``."""

    features: dict[str, Watch] = Field(
        default_factory=_default_features,
        description="feature -> how it is watched, e.g. requests_out = {allowance = 0.7, window = 21600, floor = 10}",
    )
    warmup: float = Field(6 * 3600.0, ge=0, description="seconds during which the reference is captured")
    adapt: float = Field(7 * 86400.0, gt=0, description="time constant of the reference after warm-up, seconds")
    threshold: float = Field(2.0, gt=0, description="CUSUM level (log2-hours above reference) that makes a finding")
    critical: float = Field(12.0, gt=0, description="CUSUM level that makes a finding critical")
    forget_after: float = Field(6 * 3600.0, gt=0, description="seconds of silence after which a host starts over")

    _known = field_validator("features")(scaling.known)


@dataclass
class _Seen:
    """What scoring computed for one interval, handed to learning."""

    visit: Visit
    level: np.ndarray
    ref: np.ndarray
    dev: np.ndarray
    weight: np.ndarray
    cusum: np.ndarray
    hours: np.ndarray
    ready: np.ndarray


class Drift(HostModel):
    """The slow-reference drift detector."""

    name = "drift"

    def __init__(self, config: Config) -> None:
        names = tuple(config.features)
        k = len(names)
        columns = {
            "weight": Column("f4", k, 0.0),
            "ref": Column("f4", k, np.nan),
            "dev": Column("f4", k, 0.0),
            "cusum": Column("f4", k, 0.0),
        }
        windows = np.array([config.features[n].window for n in names])
        super().__init__(names, columns, windows, config.forget_after)
        self.config = config
        self.windows = windows
        self.allowance = np.array([config.features[n].allowance for n in names])
        self.floors = np.array([config.features[n].floor for n in names])
        self._seen: _Seen | None = None

    def _observe(self, intervals: HostIntervals, keys: HostKeys | None) -> _Seen:
        if self._seen is not None and self._seen.visit.intervals is intervals:
            return self._seen
        visit = self.visit(intervals, keys)
        level = scaling.level(visit.current)
        ref = self.carried(visit, "ref")
        dev = self.carried(visit, "dev")
        ready = (visit.age[:, None] >= self.windows + self.config.warmup) & ~np.isnan(ref)
        hours = np.minimum(np.nan_to_num(visit.elapsed, nan=visit.length)[:, None], self.windows) / 3600.0
        excess = level - ref - self.allowance - 2.0 * dev
        old = self.carried(visit, "cusum")
        cusum = np.where(ready & ~np.isnan(level), np.maximum(0.0, old + np.nan_to_num(excess) * hours), old)
        self._seen = _Seen(
            visit=visit,
            level=level,
            ref=ref,
            dev=dev,
            weight=self.carried(visit, "weight"),
            cusum=np.where(ready, cusum, 0.0),
            hours=hours,
            ready=ready,
        )
        return self._seen

    def score(self, intervals: HostIntervals, keys: HostKeys | None = None) -> DetectorOutput:
        """CUSUM of each host against its slow reference; findings past the threshold."""
        cfg = self.config
        seen = self._observe(intervals, keys)
        hit = seen.ready & (seen.cusum >= cfg.threshold)
        rise = scaling.risen(hit, seen.level, seen.ref, self.floors)
        worst = np.where(seen.ready.any(axis=1), seen.cusum.max(axis=1), np.nan)  # the sums are 0 where not ready
        findings = []
        for i in np.flatnonzero(hit.any(axis=1)).tolist():
            cols = np.flatnonzero(hit[i])
            hours = (seen.visit.t - seen.visit.first[i]) / 3600.0
            findings.append(
                finding(
                    intervals,
                    i,
                    "model.drift",
                    "critical" if seen.cusum[i, cols].max() >= cfg.critical else "warning",
                    float(score01(worst[i : i + 1], cfg.threshold)[0]),
                    f"its slow reference (captured over {cfg.warmup / 3600:.0f} h once its window filled, "
                    f"adapting over {cfg.adapt / 86400:.0f} d; watched {hours:.0f} h)",
                    [
                        Deviation(self.names[j], *rise[i, j], float(seen.cusum[i, j]), "cusum")
                        for j in cols
                    ],
                )
            )
        return DetectorOutput(scores={"drift": score01(worst, cfg.threshold)}, findings=findings)

    def learn(self, intervals: HostIntervals, normal: np.ndarray, keys: HostKeys | None = None) -> None:
        """Keep every host's rate and CUSUM; capture or slowly move the reference of normal hosts."""
        seen = self._observe(intervals, keys)
        self._seen = None
        age = seen.visit.age[:, None]
        filled = age >= self.windows
        capturing = filled & (age < self.windows + self.config.warmup)
        use = normal[:, None] & ~np.isnan(seen.level) & filled
        seconds = seen.hours * 3600.0
        weight = seen.weight + seconds
        share = np.divide(seconds, weight, out=np.zeros_like(weight), where=weight > 0)
        alpha = np.where(capturing, share, -np.expm1(-seconds / self.config.adapt))
        first = use & np.isnan(seen.ref)
        ref = np.where(first, seen.level, seen.ref)
        gap = np.abs(seen.level - ref)
        dev = np.where(use & capturing & ~first, seen.dev + alpha * (gap - seen.dev), seen.dev)
        ref = np.where(use, ref + alpha * (seen.level - ref), ref)
        weight = np.where(use & capturing, weight, seen.weight)
        self.close(seen.visit, ref=ref, dev=dev, cusum=seen.cusum, weight=weight)


def build(config: Config) -> Drift:
    return Drift(config)
