"""Everything netmon wrote to an influxd 1.x, read back as expected.expected_points keys it."""

from __future__ import annotations

from tests.influx.expected import Key
from tests.influx.servers import Influx1

MEASUREMENTS = ("ntp_host", "ntp_traffic", "ntp_score", "ntp_finding")


def influx_points(server: Influx1, db: str = "netmon") -> dict[Key, dict[str, float | str]]:
    """(measurement, tags, ms) -> fields of every point in the data measurements."""
    out: dict[Key, dict[str, float | str]] = {}
    for measurement in MEASUREMENTS:
        for series in server.series(f'SELECT * FROM "{measurement}" GROUP BY *', db):
            tags = tuple(sorted((k, v) for k, v in series.get("tags", {}).items() if v))
            columns = series["columns"]
            for row in series["values"]:
                values = dict(zip(columns, row))
                ms = values.pop("time")
                key = (measurement, tags, ms)
                if key in out:
                    raise AssertionError(f"point {key} returned twice")
                out[key] = {k: float(v) if isinstance(v, int | float) else v for k, v in values.items()
                            if v is not None}
    return out


def count_points(server: Influx1, db: str = "netmon") -> int:
    return len(influx_points(server, db))
