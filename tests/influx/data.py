"""Known Scored intervals to write: every FEATURES column, scores, findings, a runaway host."""

from __future__ import annotations

import time

import numpy as np

from netmon.batch import FEATURES, Finding, HostIntervals, Scored


def recent_start(hours_ago: float = 3.0) -> float:
    """A recent, minute-aligned interval start (UNIX s): stores drop what their retention misses."""
    return float(int(time.time() - hours_ago * 3600) // 60 * 60)


def make_scored(start: float, n_hosts: int = 5, seed: int = 0, interval: float = 60.0) -> Scored:
    """One interval of ``n_hosts`` hosts; host 0 ("10.1.0.1", group "lab") is the runaway.

    Feature values are deterministic per (start, host, feature); ``poll`` is NaN for
    odd hosts (unknown from flow telemetry) so the sink's NaN handling is exercised.
    """
    rng = np.random.default_rng([seed, int(start)])
    hosts = np.array([f"10.1.0.{i + 1}" for i in range(n_hosts)], dtype=object)
    groups = np.array(["lab" if i == 0 else "clients" for i in range(n_hosts)], dtype=object)
    roles = np.array(["client"] * n_hosts, dtype=object)
    features = {name: np.round(rng.uniform(0, 100, n_hosts), 3) for name in FEATURES}
    features["requests_out"][0] = 3600.0 + (start % 3600)  # the runaway grows
    features["kod_rate"][0] = 12.0
    features["instances"][0] = 37.0
    features["poll"][1::2] = np.nan
    intervals = HostIntervals(start=start, end=start + interval, host=hosts, group=groups, role=roles,
                              features=features)
    scores = {"population": rng.uniform(0, 0.5, n_hosts), "baseline": rng.uniform(0, 0.5, n_hosts)}
    scores["population"][0] = 0.97
    findings = [
        Finding(host="10.1.0.1", group="lab", start=start, end=start + interval, detector="rule.kod_ignored",
                severity="critical", score=4.0, explanation='12 KoD RATE ignored, "quoted", back\\slash',
                evidence={"after_kod": {"value": 40.0, "baseline": 0.0}}, server="192.0.2.1"),
        Finding(host="10.1.0.1", group="lab", start=start, end=start + interval, detector="model.population",
                severity="warning", score=0.97, explanation="unlike its peers", evidence={}),
    ]
    return Scored(intervals=intervals, scores=scores, findings=findings)


def make_run(start: float, intervals: int, n_hosts: int = 5, step: float = 60.0) -> list[Scored]:
    """Consecutive intervals, as a replay hands them to the sinks."""
    return [make_scored(start + k * step, n_hosts) for k in range(intervals)]
