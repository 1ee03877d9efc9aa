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


def substitute(query: str, start: float, end: float | None = None, host: str = RUNAWAY, bucket_s: int = 60) -> str:
    """Grafana's macros and the dashboards' variables as Grafana would expand them ("All"
    groups and collectors): data panels over [start, end] in ``bucket_s`` steps, health panels
    (wall-clock points, a replay writes them within a second) over the last hour in 100 ms steps."""
    now_ms = int(time.time() * 1000)
    if "netmon_health" in query:
        bucket_ms, window = 100, f"time >= {now_ms - 3_600_000}ms and time <= {now_ms + 60_000}ms"
    else:
        end_ms = now_ms + 60_000 if end is None else int(end * 1000)
        bucket_ms, window = bucket_s * 1000, f"time >= {int(start * 1000) - 60_000}ms and time <= {end_ms}ms"
    for name, value in (("$timeFilter", window), ("$__interval_ms", str(bucket_ms)),
                        ("$__interval", f"{bucket_ms}ms"), ("$host", host), ("$group", ".*"), ("$collector", ".*"),
                        ("$netmon_interval", "60")):
        query = query.replace(name, value)
    return query


def feature_total(run, name: str, host: str | None = None) -> float:
    total = 0.0
    for scored in run:
        mask = np.ones(len(scored.intervals), bool) if host is None else scored.intervals.host == host
        total += float(np.nansum(scored.intervals.features[name][mask]))
    return total


def feature_max(run, name: str) -> float:
    return max(float(np.nanmax(scored.intervals.features[name])) for scored in run)


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
        and approx(max(r["requests"] for r in rows(s)), feature_total(run, "requests_out", RUNAWAY))
        and approx(max(r["peak requests/s"] for r in rows(s)), feature_max(run, "requests_out") / 60),
        "Findings": lambda: len(rows(s)) == 2 * INTERVALS
        and {r["severity"] for r in rows(s)} == {"critical", "warning"} and all(r["explanation"] for r in rows(s)),
        "KoD timeline": lambda: approx(column_sum(s, "KoD RATE") * 60, feature_total(run, "kod_rate"))
        and approx(column_sum(s, "requests after KoD") * 60, feature_total(run, "after_kod")),
        "Hosts by client instances": lambda: len(rows(s)) == 5 and approx(
            max(r["instances"] for r in rows(s)), max(float(np.nanmax(x.intervals.features["instances"])) for x in run)),
        "Requests out by group": lambda: {x["tags"]["group"] for x in s} == {"lab", "clients"}
        and approx(column_sum(s, "requests") * 60, feature_total(run, "requests_out")),
        "Collector input": lambda: column_sum(s, "non_negative_derivative_source_frames") > 0
        and {x["tags"]["source"] for x in s} >= {"pcap"},
        "Decode errors by reason": lambda: column_sum(s, "skipped") > 0
        and {x["tags"]["reason"] for x in s} >= {"truncated"},
        "Drops and write errors": lambda: {"spool dropped", "rejected", "write errors"} <= set(s[0]["columns"])
        and column_sum(s, "spool dropped") == 0
        and column_sum(series[1], "non_negative_derivative_source_kernel_drops") > 0,
        "Spool backlog and write latency": lambda: rows(s) and rows(series[1])
        and all(r["write latency"] > 0 for r in rows(series[1])),
    }
    assert title in checks, f"overview panel {title!r} has no expectation in this test"
    assert checks[title](), f"panel {title!r} returned {json.dumps(series)[:600]}"


def check_host(title: str, series: list[list[dict]], run) -> None:
    s = series[0]
    checks: dict[str, Callable[[], bool]] = {
        "Requests and replies": lambda: {x["tags"]["direction"] for x in s} == {"in", "out"}
        and approx(column_sum([x for x in s if x["tags"]["direction"] == "out"], "requests") * 60,
                   feature_total(run, "requests_out", RUNAWAY)),
        "Client instances, servers, ports": lambda: max(r["instances"] for r in rows(s)) == 37,
        "Polling against its own poll": lambda: len(rows(s)) == INTERVALS
        and all(r["shortest gap"] is not None for r in rows(s)),
        "KoD received and ignored": lambda: approx(column_sum(s, "KoD RATE"), 12.0 / 60 * INTERVALS),
        "Origin timestamps": lambda: approx(column_sum(s, "mismatch") * 60,
                                            feature_total(run, "org_mismatch", RUNAWAY)),
        "Scores": lambda: max(r["max_population"] for r in rows(s)) == 0.97 and "max_max" in s[0]["columns"],
        "Mode 6/7 traffic": lambda: {x["tags"]["direction"] for x in s} == {"in", "out"}
        and approx(column_sum(s, "packets") * 60,
                   feature_total(run, "ctl_out", RUNAWAY) + feature_total(run, "ctl_in", RUNAWAY)),
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
    variables = json.loads((DASHBOARDS / "netmon-host.json").read_text())["templating"]["list"]
    variable = next(v for v in variables if v["name"] == "host")
    values = {v[1] for s in server.series(substitute(variable["query"], 0)) for v in s["values"]}
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


def test_every_panel_query_returns_data_or_an_explicit_zero_after_a_replay(replayed):
    """The bar: after `netmon replay` of the sample into influxd, no panel target of any dashboard
    says "No data" (a healthy collector's error and drop counters are series of zeros), nor do
    the variables and the finding annotations."""
    from tests.deploy.conftest import END, RUNAWAY, START

    empty = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        data = json.loads(path.read_text())
        queries = [(item["title"], t["refId"], t["query"]) for item in panels(path.name) for t in item["targets"]]
        queries += [(f"variable {v['name']}", "-", v["query"]) for v in data["templating"]["list"]
                    if v["type"] == "query"]
        queries += [(f"annotation {a['name']}", "-", a["target"]["query"]) for a in data["annotations"]["list"]]
        for title, ref, query in queries:
            if not replayed.series(substitute(query, START, END, host=RUNAWAY)):
                empty.append(f"{path.name}: {title} ({ref})")
    assert not empty, f"queries without data after the replay: {empty}"


def test_rates_do_not_change_with_zoom(written):
    """Counts are shown per second: the same traffic reads the same rate in 1-minute buckets
    (zoomed in) and 10-minute buckets (zoomed out), where a per-bucket sum would grow tenfold."""
    server, run, start = written
    item = next(p for p in panels("netmon-overview.json") if p["title"] == "Requests out by group")
    query = item["targets"][0]["query"]
    aligned = start + (-start) % 600  # a 10-minute boundary with ten written intervals after it
    window = (aligned + 60, aligned + 599.999)  # substitute() opens the window 60 s before its start

    def lab(bucket_s: int) -> list[float]:
        return [r["requests"] for r in rows(server.series(substitute(query, *window, bucket_s=bucket_s)))
                if r["group"] == "lab"]

    narrow, wide = lab(60), lab(600)
    assert len(narrow) == 10 and len(wide) == 1, f"buckets: {narrow} {wide}"
    assert approx(wide[0], sum(narrow) / 10), f"10-min rate {wide[0]} vs mean of 1-min rates {sum(narrow) / 10}"
