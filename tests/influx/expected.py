"""What the influx sink must have written for a list of Scored, computed from the Scored
themselves (not from the sink's line protocol), for point-by-point comparison."""

from __future__ import annotations

import json
import math

from netmon.batch import Scored
from netmon.sinks.influx import finding_time

Key = tuple[str, tuple[tuple[str, str], ...], int]  # measurement, sorted tags, time in ms


def expected_points(run: list[Scored]) -> dict[Key, dict[str, float | str]]:
    """(measurement, tags, ms) -> {field: value} for every point, NaN fields absent."""
    out: dict[Key, dict[str, float | str]] = {}
    for scored in run:
        iv = scored.intervals
        ms = int(iv.start * 1000)
        for i, host in enumerate(iv.host):
            tags = {"host": host, "group": iv.group[i]}
            for measurement, direction in (("ntp_host", ""), ("ntp_traffic", "out"), ("ntp_traffic", "in")):
                fields: dict[str, float | str] = {}
                for name, column in iv.features.items():
                    suffix = name.rsplit("_", 1)[-1] if "_" in name else ""
                    own = suffix if suffix in ("out", "in") else ""
                    if own == direction and math.isfinite(column[i]):
                        fields[name[: -len(own) - 1] if own else name] = float(column[i])
                if measurement == "ntp_host":
                    fields["role"] = iv.role[i]
                key_tags = {**tags, **({"direction": direction} if direction else {})}
                out[("ntp_host" if not direction else "ntp_traffic", tuple(sorted(key_tags.items())), ms)] = fields
            scores = {name: float(col[i]) for name, col in scored.scores.items()}
            scores["max"] = max(scores.values())
            out[("ntp_score", tuple(sorted(tags.items())), ms)] = scores
        for f in scored.findings:
            tags = {"host": f.host, "group": f.group, "severity": f.severity}
            out[("ntp_finding", tuple(sorted(tags.items())), finding_time(f) // 1_000_000)] = {
                "detector": f.detector, "score": float(f.score), "explanation": f.explanation,
                "server": f.server, "end": float(f.end),
                "evidence": json.dumps(f.evidence, sort_keys=True),
            }
    return out


def numeric_series(points: dict[Key, dict[str, float | str]]) -> dict[tuple, list[tuple[int, float]]]:
    """The same points as Prometheus-style series: (measurement_field, labels) -> [(ms, value)]."""
    series: dict[tuple, list[tuple[int, float]]] = {}
    for (measurement, tags, ms), fields in points.items():
        for name, value in fields.items():
            if isinstance(value, float):
                series.setdefault((f"{measurement}_{name}", tags), []).append((ms, value))
    for samples in series.values():
        samples.sort()
    return series
