"""Every Grafana panel's InfluxQL runs against influxd 1.x after a replay-like write
and returns the series it should (values checked against the written data)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from netmon import health
from netmon.sinks import influx
from tests.influx.data import make_run, recent_start

DASHBOARDS = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dashboards"
INTERVALS = 30
RUNAWAY = "10.1.0.1"


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """influxd with 30 intervals of 5 hosts and health points spread over a few seconds."""
    import shutil

    if not shutil.which("influxd"):
        pytest.skip("influxd (Debian package influxdb) is not installed: bash deploy/install.sh --all")
    from tests.influx.servers import Influx1

    root = tmp_path_factory.mktemp("influxd")
    server = Influx1.create(root)
    server.start()
    server.create_database("netmon")
    health.reset()
    start = recent_start()
    run = make_run(start, INTERVALS)
    sink = influx.build(influx.Config(type="influx", api="v1", url=server.url, spool_dir=str(root / "spool"),
                                      flush_interval=0.05, health_interval=0.2))
    for k, scored in enumerate(run):
        health.count("source.pcap.frames", 1000)
        health.count("decode.skip.truncated", k % 3)
        health.count("source.capture.kernel_drops", k % 2)
        sink.write(scored)
        time.sleep(0.05)
    sink.close()
    yield server, run, start
    server.stop()


def substitute(query: str, start: float, end: float | None = None, host: str = RUNAWAY) -> str:
    """Grafana's macros as Grafana would expand them: data panels over [start, end] in 60 s
    steps, health panels (wall-clock points) over the last hour in 100 ms steps."""
    now_ms = int(time.time() * 1000)
    if "netmon_health" in query:
        interval, window = "100ms", f"time >= {now_ms - 3_600_000}ms and time <= {now_ms + 60_000}ms"
    else:
        end_ms = now_ms + 60_000 if end is None else int(end * 1000)
        interval, window = "60s", f"time >= {int(start * 1000) - 60_000}ms and time <= {end_ms}ms"
    return query.replace("$timeFilter", window).replace("$__interval", interval).replace("$host", host)


def feature_total(run, name: str, host: str | None = None) -> float:
    total = 0.0
    for scored in run:
        mask = np.ones(len(scored.intervals), bool) if host is None else scored.intervals.host == host
        total += float(np.nansum(scored.intervals.features[name][mask]))
    return total


def rows(series: list[dict]) -> list[dict]:
    """Series as rows of {column: value}, tags included."""
    return [dict(zip(s["columns"], v)) | s.get("tags", {}) for s in series for v in s["values"]]


def column_sum(series: list[dict], column: str) -> float:
    return sum(r[column] or 0 for r in rows(series))


def approx(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-6 * max(1.0, abs(b))


def check_overview(title: str, series: list[list[dict]], run) -> None:
    s = series[0]
    crit = INTERVALS
    checks: dict[str, Callable[[], bool]] = {
        "Critical findings": lambda: rows(s)[0]["count"] == crit,
        "Warnings": lambda: rows(s)[0]["count"] == crit,
        "Worst host score": lambda: rows(s)[0]["max"] == 0.97,
        "Spool backlog": lambda: rows(s)[0]["last"] == 0,
        "Hosts by score": lambda: len(rows(s)) == 5 and max(rows(s), key=lambda r: r["score"])["host"] == RUNAWAY
        and max(r["score"] for r in rows(s)) == 0.97,
        "Top NTP talkers": lambda: len(rows(s)) == 5
        and max(rows(s), key=lambda r: r["requests"])["host"] == RUNAWAY
        and approx(max(r["requests"] for r in rows(s)), feature_total(run, "requests_out", RUNAWAY)),
        "Findings": lambda: len(rows(s)) == 2 * INTERVALS
        and {r["severity"] for r in rows(s)} == {"critical", "warning"} and all(r["explanation"] for r in rows(s)),
        "KoD timeline": lambda: approx(column_sum(s, "KoD RATE"), feature_total(run, "kod_rate"))
        and approx(column_sum(s, "requests after KoD"), feature_total(run, "after_kod")),
        "Hosts by client instances": lambda: len(rows(s)) == 5 and approx(
            max(r["instances"] for r in rows(s)), max(float(np.nanmax(x.intervals.features["instances"])) for x in run)),
        "Requests out by group": lambda: {x["tags"]["group"] for x in s} == {"lab", "clients"}
        and approx(column_sum(s, "sum"), feature_total(run, "requests_out")),
        "Collector input": lambda: column_sum(s, "non_negative_difference_source.pcap.frames") >= 1000,
        "Decode errors by reason": lambda: column_sum(s, "non_negative_difference_decode.skip.truncated") > 0,
        "Drops and write errors": lambda: {"spool dropped", "rejected", "write errors"} <= set(s[0]["columns"])
        and column_sum(s, "spool dropped") == 0
        and column_sum(series[1], "non_negative_difference_source.capture.kernel_drops") > 0,
        "Spool backlog and write latency": lambda: rows(s) and rows(series[1])
        and all(r["write latency ms"] > 0 for r in rows(series[1])),
    }
    assert title in checks, f"overview panel {title!r} has no expectation in this test"
    assert checks[title](), f"panel {title!r} returned {json.dumps(series)[:600]}"


def check_host(title: str, series: list[list[dict]], run) -> None:
    s = series[0]
    checks: dict[str, Callable[[], bool]] = {
        "Requests and replies": lambda: {x["tags"]["direction"] for x in s} == {"in", "out"}
        and approx(column_sum([x for x in s if x["tags"]["direction"] == "out"], "requests"),
                   feature_total(run, "requests_out", RUNAWAY)),
        "Client instances, servers, ports": lambda: max(r["instances"] for r in rows(s)) == 37,
        "Polling against its own poll": lambda: len(rows(s)) == INTERVALS and all(r["poll"] is not None for r in rows(s)),
        "KoD received and ignored": lambda: approx(column_sum(s, "KoD RATE"), 12.0 * INTERVALS),
        "Origin timestamps": lambda: approx(column_sum(s, "mismatch"), feature_total(run, "org_mismatch", RUNAWAY)),
        "Scores": lambda: max(r["max_population"] for r in rows(s)) == 0.97 and "max_max" in s[0]["columns"],
        "Mode 6/7 traffic": lambda: {x["tags"]["direction"] for x in s} == {"in", "out"}
        and approx(column_sum(s, "packets"), feature_total(run, "ctl_out", RUNAWAY) + feature_total(run, "ctl_in", RUNAWAY)),
        "Amplification": lambda: len(rows(s)) == INTERVALS,
        "Findings for this host": lambda: len(rows(s)) == 2 * INTERVALS
        and all(isinstance(json.loads(r["evidence"]), dict) for r in rows(s)),
    }
    assert title in checks, f"host panel {title!r} has no expectation in this test"
    assert checks[title](), f"panel {title!r} returned {json.dumps(series)[:600]}"


def panels(name: str) -> list[dict]:
    """The panels of a dashboard file, rows left out."""
    return [p for p in json.loads((DASHBOARDS / name).read_text())["panels"] if p["type"] != "row"]


@pytest.mark.parametrize("name,check", [("netmon-overview.json", check_overview), ("netmon-host.json", check_host)])
def test_every_panel_query_returns_the_series_it_should(written, name, check):
    server, run, start = written
    for item in panels(name):
        results = [server.series(substitute(t["query"], start)) for t in item["targets"]]
        assert all(results), f"panel {item['title']!r}: a query returned no series: {item['targets']}"
        check(item["title"], results, run)


def test_host_variable_lists_every_host(written):
    server, run, _start = written
    variable = json.loads((DASHBOARDS / "netmon-host.json").read_text())["templating"]["list"][0]
    values = {v[1] for s in server.series(variable["query"]) for v in s["values"]}
    assert values == set(run[0].intervals.host.tolist())


def test_queries_use_only_influxql_every_version_serves():
    """No subqueries (InfluxDB 3.x), always a time filter, no Flux."""
    for name in ("netmon-overview.json", "netmon-host.json"):
        for item in panels(name):
            for t in item["targets"]:
                q = t["query"]
                assert not re.search(r"FROM\s*\(", q), f"{item['title']}: subquery"
                assert "$timeFilter" in q, f"{item['title']}: no time filter"
                assert "|>" not in q
