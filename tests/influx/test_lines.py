"""Line protocol from Scored: every feature once, only the allowed tags, NaN left out, escaping."""

from __future__ import annotations

import re

import numpy as np

from netmon import health
from netmon.batch import FEATURES
from netmon.sinks import influx
from tests.influx.data import make_scored

ALLOWED_TAGS = {"host", "group", "direction", "severity"}


def parse_tags(line: bytes) -> dict[str, str]:
    head = re.split(r"(?<!\\) ", line.decode(), maxsplit=1)[0]
    pairs = re.split(r"(?<!\\),", head)[1:]
    return dict(p.split("=", 1) for p in pairs)


def test_every_feature_column_is_written_exactly_once():
    scored = make_scored(1_700_000_000.0, n_hosts=1)
    scored.intervals.features["poll"][:] = 6.0
    fields = []
    for line in influx.host_lines(scored):
        measurement = line.split(b",", 1)[0].decode()
        direction = parse_tags(line).get("direction", "")
        body = re.split(rb"(?<!\\) ", line)[1]
        for pair in body.decode().split(","):
            name = pair.split("=", 1)[0]
            if name != "role":
                fields.append(f"{name}_{direction}" if direction else name)
        assert measurement in (influx.HOST, influx.TRAFFIC)
    assert sorted(fields) == sorted(FEATURES)


def test_only_low_cardinality_tags():
    scored = make_scored(1_700_000_000.0)
    for line in influx.scored_lines(scored):
        assert set(parse_tags(line)) <= ALLOWED_TAGS, line


def test_unknown_values_are_left_out_not_written_as_zero():
    scored = make_scored(1_700_000_000.0, n_hosts=2)
    lines = [line for line in influx.host_lines(scored) if line.startswith(b"ntp_host,")]
    assert b",poll=" in lines[0] and b",poll=" not in lines[1]
    assert all(b"nan" not in line.lower() and b"inf" not in line.lower() for line in lines)


def test_tag_and_string_values_are_escaped():
    scored = make_scored(1_700_000_000.0, n_hosts=1)
    scored.intervals.group[:] = np.array(["lab a,b=c"], dtype=object)
    line = influx.host_lines(scored)[0]
    assert rb"group=lab\ a\,b\=c" in line
    finding = influx.finding_lines(scored.findings)[0]
    assert rb'explanation="12 KoD RATE ignored, \"quoted\", back\\slash"' in finding


def test_two_findings_of_one_host_and_interval_are_two_points_and_stable():
    scored = make_scored(1_700_000_000.0)
    times = [influx.finding_time(f) for f in scored.findings]
    assert len(set(times)) == len(times)
    assert times == [influx.finding_time(f) for f in make_scored(1_700_000_000.0).findings]
    assert all(0 <= t - 1_700_000_000 * 10**9 < 10**9 for t in times)


def fields(line: bytes) -> dict[str, str]:
    body = re.split(rb"(?<!\\) ", line)[1].decode()
    return dict(pair.split("=", 1) for pair in re.split(r'(?<!\\),(?=[^"]*(?:"[^"]*"[^"]*)*$)', body))


def test_schema_health_points_tag_the_collector_not_host():
    """``host`` is a campus host in every ntp_* measurement; netmon_health names the collector
    in ``collector`` (Telegraf's ``host`` means the machine a point came from)."""
    health.reset()
    health.count("decode.skip.truncated", 2)
    health.count("source.netflow.exporter.127.0.0.1.lost.records", 4)
    lines = influx.health_lines(1_700_000_000.0, collector="nm1")
    assert lines and all(parse_tags(line)["collector"] == "nm1" and "host" not in parse_tags(line) for line in lines)
    tags = [parse_tags(line) for line in lines]
    assert {"collector": "nm1", "source": "netflow", "exporter": "127.0.0.1"} in tags
    assert {"collector": "nm1", "reason": "truncated"} in tags


def test_schema_no_dots_in_field_names_and_counters_are_integers():
    health.reset()
    health.count("decode.skip.truncated", 2)
    health.count("influx.write.points", 5000)
    health.count("influx.write.seconds", 0.25)
    health.gauge("influx.spool.points", 12)
    lines = influx.health_lines(1_700_000_000.0, collector="nm1") + influx.scored_lines(make_scored(1_700_000_000.0))
    keys = {key for line in lines for key in fields(line)}
    assert all(re.fullmatch(r"[a-z0-9_]+", key) for key in keys), sorted(k for k in keys if "." in k)
    health_fields = {k: v for line in lines if line.startswith(b"netmon_health") for k, v in fields(line).items()}
    assert health_fields["decode_skip"] == "2i" and health_fields["influx_write_points"] == "5000i"
    assert health_fields["influx_write_seconds"] == "0.25"  # a sum of durations stays a float
    assert health_fields["influx_spool_points"] == "12.0"  # gauges are floats
