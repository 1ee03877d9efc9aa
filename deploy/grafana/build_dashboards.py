"""Writes the Grafana dashboards in deploy/grafana/dashboards/ (run after editing; a test
checks the JSON files match this script).

Every query is InfluxQL without subqueries, so one dashboard serves InfluxDB 1.x,
2.x (through a DBRP mapping) and 3.x. The measurements are those of
``netmon.sinks.influx`` (see deploy/README.md). Usage::

    .venv/bin/python deploy/grafana/build_dashboards.py
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DATASOURCE = {"type": "influxdb", "uid": "netmon-influxdb"}
HOST_LINK = "/d/netmon-host/netmon-host?var-host=${__data.fields.host}&${__url_time_range}"
OUT = Path(__file__).resolve().parent / "dashboards"


def target(query: str, ref: str = "A", table: bool = False, alias: str = "") -> dict[str, Any]:
    item = {"refId": ref, "datasource": DATASOURCE, "rawQuery": True, "query": query,
            "resultFormat": "table" if table else "time_series"}
    if alias:
        item["alias"] = alias
    return item


def panel(title: str, kind: str, targets: list[dict[str, Any]], grid: tuple[int, int, int, int],
          description: str, unit: str = "short", **options: Any) -> dict[str, Any]:
    """One panel; ``grid`` is (x, y, w, h) in Grafana's 24-column grid."""
    x, y, w, h = grid
    item: dict[str, Any] = {
        "type": kind, "title": title, "description": description, "datasource": DATASOURCE,
        "gridPos": {"x": x, "y": y, "w": w, "h": h}, "targets": targets,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []}, "options": options,
    }
    return item


def table(title: str, query: str, grid: tuple[int, int, int, int], description: str, sort: str,
          link_host: bool = True) -> dict[str, Any]:
    item = panel(title, "table", [target(query, table=True)], grid, description,
                 sortBy=[{"displayName": sort, "desc": True}], showHeader=True, cellHeight="sm")
    if link_host:
        item["fieldConfig"]["overrides"].append({
            "matcher": {"id": "byName", "options": "host"},
            "properties": [{"id": "links", "value": [{"title": "Host drill-down", "url": HOST_LINK}]}],
        })
    return item


def timeseries(title: str, targets: list[dict[str, Any]], grid: tuple[int, int, int, int], description: str,
               unit: str = "short", bars: bool = False) -> dict[str, Any]:
    item = panel(title, "timeseries", targets, grid, description, unit,
                 legend={"displayMode": "list", "placement": "bottom", "showLegend": True},
                 tooltip={"mode": "multi", "sort": "desc"})
    if bars:
        item["fieldConfig"]["defaults"]["custom"] = {"drawStyle": "bars", "fillOpacity": 60}
    return item


def stat(title: str, query: str, grid: tuple[int, int, int, int], description: str, unit: str = "short",
         red: float | None = None) -> dict[str, Any]:
    item = panel(title, "stat", [target(query)], grid, description, unit,
                 reduceOptions={"calcs": ["lastNotNull"], "fields": "", "values": False}, colorMode="value")
    if red is not None:
        item["fieldConfig"]["defaults"]["thresholds"] = {
            "mode": "absolute", "steps": [{"color": "green", "value": None}, {"color": "red", "value": red}]}
    return item


def row(title: str, y: int) -> dict[str, Any]:
    return {"type": "row", "title": title, "collapsed": False, "gridPos": {"x": 0, "y": y, "w": 24, "h": 1},
            "panels": []}


def dashboard(uid: str, title: str, panels: list[dict[str, Any]], templating: list[dict[str, Any]],
              description: str) -> dict[str, Any]:
    for number, item in enumerate(panels, start=1):
        item["id"] = number
    return {
        "uid": uid, "title": title, "description": description, "tags": ["netmon", "ntp"],
        "timezone": "browser", "editable": True, "graphTooltip": 1, "schemaVersion": 39, "version": 1,
        "refresh": "1m", "time": {"from": "now-24h", "to": "now"},
        "templating": {"list": templating}, "annotations": {"list": []}, "links": [], "panels": panels,
    }


TF = "$timeFilter"
GROUP_TIME = "GROUP BY time($__interval) fill(none)"
#: netmon_health points carry the collector's name in tag host: one series per collector
GROUP_COLLECTOR = "GROUP BY time($__interval), \"host\" fill(none)"
COLLECTOR_ALIAS = "$col ($tag_host)"


def overview() -> dict[str, Any]:
    panels = [
        stat("Critical findings", f"SELECT count(\"score\") FROM \"ntp_finding\" WHERE \"severity\" = 'critical' AND {TF}",
             (0, 0, 6, 4), "Findings of severity critical in the time range.", red=1),
        stat("Warnings", f"SELECT count(\"score\") FROM \"ntp_finding\" WHERE \"severity\" = 'warning' AND {TF}",
             (6, 0, 6, 4), "Findings of severity warning in the time range.", red=1),
        stat("Worst host score", f"SELECT max(\"max\") FROM \"ntp_score\" WHERE {TF}", (12, 0, 6, 4),
             "Highest anomaly score of any host (0-1 for models; rules can exceed 1).", red=0.9),
        stat("Spool backlog", f"SELECT last(\"influx.spool.points\") FROM \"netmon_health\" WHERE {TF} GROUP BY \"host\"",
             (18, 0, 6, 4),
             "Points waiting on disk for the database (0 when it keeps up).", unit="none", red=1),
        table("Hosts by score",
              f"SELECT max(\"max\") AS \"score\" FROM \"ntp_score\" WHERE {TF} GROUP BY \"host\", \"group\"",
              (0, 4, 12, 10), "Each host's worst anomaly score in the time range; click a host for its drill-down.",
              sort="score"),
        table("Top NTP talkers",
              f"SELECT sum(\"requests\") AS \"requests\", sum(\"bytes\") AS \"bytes\" FROM \"ntp_traffic\" "
              f"WHERE \"direction\" = 'out' AND {TF} GROUP BY \"host\", \"group\"",
              (12, 4, 12, 10), "NTP requests and IP bytes each host sent to outside in the time range.",
              sort="requests"),
        table("Findings",
              f"SELECT \"host\", \"group\", \"severity\", \"detector\", \"score\", \"server\", \"explanation\" "
              f"FROM \"ntp_finding\" WHERE {TF} ORDER BY time DESC LIMIT 500",
              (0, 14, 24, 10), "Every finding, newest first: which detector, how far, and why.", sort="Time"),
        timeseries("KoD timeline", [target(
            f"SELECT sum(\"kod_rate\") AS \"KoD RATE\", sum(\"kod_deny\") AS \"KoD DENY\", "
            f"sum(\"kod_rstr\") AS \"KoD RSTR\", sum(\"after_kod\") AS \"requests after KoD\" "
            f"FROM \"ntp_host\" WHERE {TF} {GROUP_TIME}")],
            (0, 24, 8, 8), "Kiss-o'-Death replies campus hosts received, and requests they sent after one.",
            bars=True),
        timeseries("Requests out by group", [target(
            f"SELECT sum(\"requests\") FROM \"ntp_traffic\" WHERE \"direction\" = 'out' AND {TF} "
            f"GROUP BY time($__interval), \"group\" fill(none)", alias="$tag_group")],
            (8, 24, 8, 8), "NTP requests sent to outside per host group, per interval."),
        table("Hosts by client instances",
              f"SELECT max(\"instances\") AS \"instances\", max(\"client_ports\") AS \"ports\" FROM \"ntp_host\" "
              f"WHERE {TF} GROUP BY \"host\", \"group\"",
              (16, 24, 8, 8), "Most NTP client instances estimated behind one address (from independent poll "
              "schedules): a runaway grows here one daemon at a time; NAT gateways sit high and steady.",
              sort="instances"),
        row("Collector health", 32),
        timeseries("Collector input", [target(
            f"SELECT non_negative_difference(last(/^source\\./)) FROM \"netmon_health\" WHERE {TF} {GROUP_COLLECTOR}", alias=COLLECTOR_ALIAS)],
            (0, 33, 8, 8), "Frames, records and datagrams each source took in, per interval."),
        timeseries("Decode errors by reason", [target(
            f"SELECT non_negative_difference(last(/^decode\\.skip\\./)) FROM \"netmon_health\" WHERE {TF} "
            f"{GROUP_COLLECTOR}", alias=COLLECTOR_ALIAS)],
            (8, 33, 8, 8), "Packets and records skipped as malformed, by reason, per interval."),
        timeseries("Drops and write errors", [target(
            f"SELECT non_negative_difference(last(\"influx.spool.dropped_points\")) AS \"spool dropped\", "
            f"non_negative_difference(last(\"influx.write.rejected_points\")) AS \"rejected\", "
            f"non_negative_difference(last(\"influx.write.errors\")) AS \"write errors\" "
            f"FROM \"netmon_health\" WHERE {TF} {GROUP_COLLECTOR}", alias=COLLECTOR_ALIAS),
            target(f"SELECT non_negative_difference(last(/(drops|\\.lost\\.|^aggregate\\.late$)/)) FROM \"netmon_health\" "
                   f"WHERE {TF} {GROUP_COLLECTOR}", ref="B", alias=COLLECTOR_ALIAS)],
            (16, 33, 8, 8), "Points lost to a full spool or refused by the database, failed writes, and packets "
            "the sources lost (kernel ring drops, exporter sequence gaps) or that came too late for their interval."),
        timeseries("Spool backlog and write latency", [
            target(f"SELECT last(\"influx.spool.points\") AS \"spooled points\" FROM \"netmon_health\" "
                   f"WHERE {TF} {GROUP_COLLECTOR}", alias=COLLECTOR_ALIAS),
            target(f"SELECT last(\"influx.write.latency_ms\") AS \"write latency ms\" FROM \"netmon_health\" "
                   f"WHERE {TF} {GROUP_COLLECTOR}", ref="B", alias=COLLECTOR_ALIAS)],
            (0, 41, 24, 8), "Points waiting on disk, and the last write request's latency (ms)."),
    ]
    return dashboard("netmon-overview", "netmon: NTP overview", panels, [],
                     "Campus NTP traffic: which hosts misbehave, who talks most, KoD, and netmon's own health.")


HOST = "\"host\" = '$host'"


def host() -> dict[str, Any]:
    def series(title: str, select: str, measurement: str, grid: tuple[int, int, int, int], description: str,
               by_direction: bool = False, unit: str = "short") -> dict[str, Any]:
        group = "GROUP BY time($__interval), \"direction\" fill(none)" if by_direction else GROUP_TIME
        query = f"SELECT {select} FROM \"{measurement}\" WHERE {HOST} AND {TF} {group}"
        return timeseries(title, [target(query, alias="$col $tag_direction" if by_direction else "")],
                          grid, description, unit)

    panels = [
        series("Requests and replies", "sum(\"requests\") AS \"requests\", sum(\"replies\") AS \"replies\"",
               "ntp_traffic", (0, 0, 12, 8), "NTP requests and replies per interval, by direction.", True),
        series("Client instances, servers, ports",
               "max(\"instances\") AS \"instances\", max(\"servers\") AS \"servers\", "
               "max(\"client_ports\") AS \"client ports\"",
               "ntp_host", (12, 0, 12, 8),
               "Estimated client instances (from timing), distinct servers and source ports."),
        series("Polling against its own poll", "max(\"rate_vs_poll\") AS \"rate vs poll\", mean(\"poll\") AS \"poll\"",
               "ntp_host", (0, 8, 12, 8),
               "Requests per server per 2^poll s (1 = as advertised), and the advertised poll (log2 s)."),
        series("KoD received and ignored",
               "sum(\"kod_rate\") AS \"KoD RATE\", sum(\"kod_deny\") AS \"KoD DENY\", sum(\"kod_rstr\") AS \"KoD RSTR\", "
               "sum(\"after_kod\") AS \"requests after KoD\"",
               "ntp_host", (12, 8, 12, 8), "Kiss-o'-Death replies, and requests sent to a server after its KoD."),
        series("Origin timestamps", "sum(\"org_match\") AS \"match\", sum(\"org_mismatch\") AS \"mismatch\", "
               "sum(\"org_zero\") AS \"zero\"",
               "ntp_host", (0, 16, 12, 8),
               "Requests whose origin matches the server's last transmit, matches nothing, or is zero."),
        series("Scores", "max(*)", "ntp_score", (12, 16, 12, 8),
               "Each detector's anomaly score, and the worst of them (max)."),
        series("Mode 6/7 traffic", "sum(\"ctl\") AS \"packets\", sum(\"ctl_bytes\") AS \"bytes\"", "ntp_traffic",
               (0, 24, 12, 8), "Control (mode 6) and private (mode 7, monlist) packets and bytes by direction.",
               True),
        series("Amplification", "max(\"amplification\") AS \"amplification\", max(\"reply_ratio\") AS \"reply ratio\"",
               "ntp_host", (12, 24, 12, 8),
               "Mode 6/7 bytes out per byte in (reflection), and reply/request bytes as a client."),
        table("Findings for this host",
              f"SELECT \"severity\", \"detector\", \"score\", \"server\", \"explanation\", \"evidence\" "
              f"FROM \"ntp_finding\" WHERE {HOST} AND {TF} ORDER BY time DESC LIMIT 200",
              (0, 32, 24, 10), "Every finding for the host with its evidence (feature: value against baseline).",
              sort="Time", link_host=False),
    ]
    variable = {
        "name": "host", "label": "Host", "type": "query", "datasource": DATASOURCE,
        "query": "SHOW TAG VALUES FROM \"ntp_host\" WITH KEY = \"host\"", "refresh": 2, "sort": 1, "multi": False,
        "includeAll": False, "current": {}, "options": [],
    }
    return dashboard("netmon-host", "netmon: host", panels, [variable],
                     "One campus host's NTP behaviour: rates, instances, KoD, origins, scores and findings.")


DASHBOARDS = {"netmon-overview.json": overview, "netmon-host.json": host}


def render(build: Any) -> str:
    return json.dumps(build(), indent=2) + "\n"


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, build in DASHBOARDS.items():
        (OUT / name).write_text(render(build))


if __name__ == "__main__":
    main()
