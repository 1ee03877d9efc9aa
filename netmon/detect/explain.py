"""Findings of the learned models, each saying which features, against which
baseline and by how much, so an alert can be read without the model."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from netmon.batch import Finding, HostIntervals
from netmon.detect.scaling import show


@dataclass(frozen=True)
class Deviation:
    """One feature of one host: its value, the baseline's, and the standardised gap
    ``z`` (named ``stat`` in the text: a z-score, or a drift test's sum)."""

    feature: str
    value: float
    baseline: float
    z: float
    stat: str = "z"


def top_server(servers: dict[str, float]) -> str:
    """The server a host sent most requests to (``servers``: server -> requests); of equals the
    first by name, so the answer never depends on the order rows arrived in (batches, collectors)."""
    return max(sorted(servers), key=servers.get) if servers else ""


def score01(z: np.ndarray, threshold: float) -> np.ndarray:
    """A standardised gap mapped to [0, 1): 0.5 at the alert threshold, NaN kept."""
    z = np.maximum(z, 0.0)
    return z / (z + threshold)


def _ratio(value: float, baseline: float) -> str:
    if not (math.isfinite(value) and math.isfinite(baseline)) or baseline <= 0:
        return ""
    return f"{value / baseline:.1f}x, "


def finding(
    intervals: HostIntervals,
    i: int,
    detector: str,
    severity: str,
    score: float,
    against: str,
    deviations: list[Deviation],
) -> Finding:
    """The finding for host ``i`` of ``intervals``: the largest deviations first."""
    ordered = sorted(deviations, key=lambda d: -d.z)
    parts = [
        f"{d.feature} {show(d.feature, d.value)} vs {show(d.feature, d.baseline)} ({_ratio(d.value, d.baseline)}{d.stat} {d.z:.1f})"
        for d in ordered
    ]
    host = str(intervals.host[i])
    return Finding(
        host=host,
        group=str(intervals.group[i]),
        start=float(intervals.start),
        end=float(intervals.end),
        detector=detector,
        severity=severity,
        score=float(score),
        explanation=f"host {host} unlike {against}: " + "; ".join(parts),
        evidence={
            d.feature: {"value": float(d.value), "baseline": float(d.baseline), d.stat: round(float(d.z), 2), "against": against}
            for d in ordered
        },
    )
