"""Writes the Grafana dashboards in deploy/grafana/dashboards/ (run after editing; a test
checks the JSON files match this script).

Every query is InfluxQL without subqueries, so one dashboard serves InfluxDB 1.x,
2.x (through a DBRP mapping) and 3.x. The measurements are those of
``netmon.sinks.influx`` (see deploy/README.md). The datasource is a dashboard
variable (``$datasource``, any InfluxDB datasource), so the files import into an
existing Grafana whatever its datasources are called. Usage::

    .venv/bin/python deploy/grafana/build_dashboards.py

Counts are shown as rates (per second): a host-interval's count divided by netmon's
interval (variable ``$netmon_interval``, seconds, = ``aggregate.interval``), or a
bucket's sum divided by the bucket (``$__interval_ms``, never below one interval: panels
set a minimum interval), so a value does not change when the time range is zoomed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DATASOURCE = {"type": "influxdb", "uid": "${datasource}"}
HOST_LINK = "/d/netmon-host/netmon-host?var-host=${__data.fields.host}&${__url_time_range}&var-datasource=${datasource}"
OUT = Path(__file__).resolve().parent / "dashboards"
#: the shortest time bucket: netmon's default interval (one point per host per interval)
MIN_INTERVAL = "1m"
#: per-second rate of a bucket's sum
PER_SECOND = "* 1000 / $__interval_ms"
#: per-second rate of one host-interval's count
PER_INTERVAL = "/ $netmon_interval"


def target(query: str, ref: str = "A", table: bool = False, alias: str = "") -> dict[str, Any]:
    item = {"refId": ref, "datasource": DATASOURCE, "rawQuery": True, "query": query,
            "resultFormat": "table" if table else "time_series"}
    if alias:
        item["alias"] = alias
    return item


def panel(title: str, kind: str, targets: list[dict[str, Any]], grid: tuple[int, int, int, int],
          description: str, unit: str = "short", units: dict[str, str] | None = None,
          **options: Any) -> dict[str, Any]:
    """One panel; ``grid`` is (x, y, w, h) in Grafana's 24-column grid; ``units`` gives
    columns or series (by display name, or ``ref:X`` for every series of query X) their own unit."""
    x, y, w, h = grid
    overrides = [{"matcher": {"id": "byFrameRefID", "options": name[4:]} if name.startswith("ref:")
                  else {"id": "byName", "options": name}, "properties": [{"id": "unit", "value": u}]}
                 for name, u in (units or {}).items()]
    item: dict[str, Any] = {
        "type": kind, "title": title, "description": description, "datasource": DATASOURCE,
        "gridPos": {"x": x, "y": y, "w": w, "h": h}, "targets": targets, "interval": MIN_INTERVAL,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": overrides}, "options": options,
    }
    return item


def table(title: str, query: str, grid: tuple[int, int, int, int], description: str, sort: str,
          link_host: bool = True, units: dict[str, str] | None = None) -> dict[str, Any]:
    item = panel(title, "table", [target(query, table=True)], grid, description, "none", units,
                 sortBy=[{"displayName": sort, "desc": True}], showHeader=True, cellHeight="sm")
    if link_host:
        item["fieldConfig"]["overrides"].append({
            "matcher": {"id": "byName", "options": "host"},
            "properties": [{"id": "links", "value": [{"title": "Host drill-down", "url": HOST_LINK}]}],
        })
    return item


def timeseries(title: str, targets: list[dict[str, Any]], grid: tuple[int, int, int, int], description: str,
               unit: str = "short", bars: bool = False, units: dict[str, str] | None = None) -> dict[str, Any]:
    item = panel(title, "timeseries", targets, grid, description, unit, units,
                 legend={"displayMode": "list", "placement": "bottom", "showLegend": True},
                 tooltip={"mode": "multi", "sort": "desc"})
    if bars:
        item["fieldConfig"]["defaults"]["custom"] = {"drawStyle": "bars", "fillOpacity": 60}
    return item


def stat(title: str, query: str, grid: tuple[int, int, int, int], description: str, unit: str = "none",
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


def query_variable(name: str, label: str, query: str, multi: bool) -> dict[str, Any]:
    """A variable listing tag values; multi-valued ones offer "All" (regex ``.*``)."""
    item: dict[str, Any] = {
        "name": name, "label": label, "type": "query", "datasource": DATASOURCE, "query": query,
        "refresh": 2, "sort": 1, "multi": multi, "includeAll": multi, "current": {}, "options": [],
    }
    if multi:
        item["allValue"] = ".*"
    return item


#: variables every dashboard has: the datasource, netmon's interval, host groups, collectors
COMMON_VARIABLES = [
    {"name": "datasource", "label": "Datasource", "type": "datasource", "query": "influxdb",
     "current": {}, "options": [], "refresh": 1, "regex": "", "multi": False, "includeAll": False},
    {"name": "netmon_interval", "label": "netmon interval (s)", "type": "constant", "query": "60",
     "hide": 2, "description": "netmon's aggregate.interval in seconds: counts per interval become rates",
     "current": {}, "options": [], "skipUrlSync": True},
    query_variable("group", "Group", "SHOW TAG VALUES FROM \"ntp_host\" WITH KEY = \"group\"", True),
    query_variable("collector", "Collector", "SHOW TAG VALUES FROM \"netmon_health\" WITH KEY = \"collector\"",
                   True),
]

#: findings as annotations on every time series (critical red, warning orange)
ANNOTATIONS = [
    {"name": f"{severity.capitalize()} findings", "datasource": DATASOURCE, "enable": True, "hide": False,
     "iconColor": color,
     "target": {"refId": "Anno", "rawQuery": True, "fromAnnotations": True, "textEditor": True,
                "query": f"SELECT \"explanation\", \"host\", \"detector\" FROM \"ntp_finding\" "
                         f"WHERE \"severity\" = '{severity}' AND \"group\" =~ /^$group$/ AND $timeFilter",
                "textColumn": "explanation", "tagsColumn": "host,detector"}}
    for severity, color in (("critical", "red"), ("warning", "orange"))
]


def dashboard(uid: str, title: str, panels: list[dict[str, Any]], templating: list[dict[str, Any]],
              description: str) -> dict[str, Any]:
    for number, item in enumerate(panels, start=1):
        item["id"] = number
    return {
        "uid": uid, "title": title, "description": description, "tags": ["netmon", "ntp"],
        "timezone": "browser", "editable": True, "graphTooltip": 1, "schemaVersion": 39, "version": 1,
        "refresh": "1m", "time": {"from": "now-24h", "to": "now"},
        "templating": {"list": COMMON_VARIABLES + templating}, "annotations": {"list": ANNOTATIONS},
        "links": [], "panels": panels,
    }


TF = "$timeFilter"
GROUP = "\"group\" =~ /^$group$/"
COLLECTOR = "\"collector\" =~ /^$collector$/"
GROUP_TIME = "GROUP BY time($__interval) fill(none)"
#: netmon_health points carry the collector's name in tag collector: one series per collector
GROUP_COLLECTOR = "GROUP BY time($__interval), \"collector\" fill(none)"
GROUP_COLLECTOR_SOURCE = "GROUP BY time($__interval), \"collector\", \"source\" fill(none)"
COLLECTOR_ALIAS = "$col ($tag_collector)"


def health_rate(field: str, alias: str, by: str = "") -> str:
    """Per-second rate of a netmon_health counter, per collector (and per tag ``by``)."""
    group = f"GROUP BY time($__interval), \"collector\", \"{by}\" fill(none)" if by else GROUP_COLLECTOR
    return (f"SELECT non_negative_derivative(last(\"{field}\"), 1s) AS \"{alias}\" FROM \"netmon_health\" "
            f"WHERE {COLLECTOR} AND {TF} {group}")


def overview() -> dict[str, Any]:
    rate_by = "GROUP BY time($__interval), \"group\" fill(none)"
    panels = [
        stat("Critical findings", f"SELECT count(\"score\") FROM \"ntp_finding\" WHERE \"severity\" = 'critical' "
             f"AND {GROUP} AND {TF}", (0, 0, 6, 4), "Findings of severity critical in the time range.", red=1),
        stat("Warnings", f"SELECT count(\"score\") FROM \"ntp_finding\" WHERE \"severity\" = 'warning' "
             f"AND {GROUP} AND {TF}", (6, 0, 6, 4), "Findings of severity warning in the time range.", red=1),
        stat("Worst host score", f"SELECT max(\"max\") FROM \"ntp_score\" WHERE {GROUP} AND {TF}", (12, 0, 6, 4),
             "Highest anomaly score of any host (0-1 for models; rules can exceed 1).", unit="none", red=0.9),
        stat("Spool backlog", f"SELECT last(\"influx_spool_points\") FROM \"netmon_health\" WHERE {COLLECTOR} "
             f"AND {TF} GROUP BY \"collector\", \"sink\"",
             (18, 0, 6, 4), "Points waiting on disk for the database (0 when it keeps up).", unit="none", red=1),
        table("Hosts by score",
              f"SELECT max(\"max\") AS \"score\" FROM \"ntp_score\" WHERE {GROUP} AND {TF} GROUP BY \"host\", \"group\"",
              (0, 4, 12, 10), "Each host's worst anomaly score in the time range; click a host for its drill-down.",
              sort="score", units={"score": "none"}),
        table("Top NTP talkers",
              f"SELECT sum(\"requests\") AS \"requests\", sum(\"bytes\") AS \"bytes\", "
              f"max(\"requests\") {PER_INTERVAL} AS \"peak requests/s\" FROM \"ntp_traffic\" "
              f"WHERE \"direction\" = 'out' AND {GROUP} AND {TF} GROUP BY \"host\", \"group\"",
              (12, 4, 12, 10), "NTP requests and IP bytes each host sent to outside in the time range, and its "
              "highest rate over one interval.", sort="requests",
              units={"requests": "short", "bytes": "decbytes", "peak requests/s": "reqps"}),
        table("Findings",
              f"SELECT \"host\", \"group\", \"severity\", \"detector\", \"score\", \"server\", \"explanation\" "
              f"FROM \"ntp_finding\" WHERE {GROUP} AND {TF} ORDER BY time DESC LIMIT 500",
              (0, 14, 24, 10), "Every finding, newest first: which detector, how far, and why.", sort="Time"),
        timeseries("KoD timeline", [target(
            f"SELECT sum(\"kod_rate\") {PER_SECOND} AS \"KoD RATE\", sum(\"kod_deny\") {PER_SECOND} AS \"KoD DENY\", "
            f"sum(\"kod_rstr\") {PER_SECOND} AS \"KoD RSTR\", sum(\"after_kod\") {PER_SECOND} AS \"requests after KoD\" "
            f"FROM \"ntp_host\" WHERE {GROUP} AND {TF} {GROUP_TIME}")],
            (0, 24, 8, 8), "Kiss-o'-Death replies campus hosts received, and requests they sent after one, per second.",
            unit="pps", units={"requests after KoD": "reqps"}),
        timeseries("Requests out by group", [target(
            f"SELECT sum(\"requests\") {PER_SECOND} AS \"requests\" FROM \"ntp_traffic\" WHERE \"direction\" = 'out' "
            f"AND {GROUP} AND {TF} {rate_by}", alias="$tag_group")],
            (8, 24, 8, 8), "NTP requests per second sent to outside, per host group.", unit="reqps"),
        table("Hosts by client instances",
              f"SELECT max(\"instances\") AS \"instances\", max(\"client_ports\") AS \"ports\" FROM \"ntp_host\" "
              f"WHERE {GROUP} AND {TF} GROUP BY \"host\", \"group\"",
              (16, 24, 8, 8), "Most NTP client instances estimated behind one address (from independent poll "
              "schedules): a runaway grows here one daemon at a time; NAT gateways sit high and steady.",
              sort="instances", units={"instances": "none", "ports": "none"}),
        row("Collector health", 32),
        timeseries("Collector input", [target(
            f"SELECT non_negative_derivative(last(/^source_(frames|packets|datagrams|records|samples)$/), 1s) "
            f"FROM \"netmon_health\" WHERE {COLLECTOR} AND {TF} {GROUP_COLLECTOR_SOURCE}",
            alias="$col $tag_source ($tag_collector)")],
            (0, 33, 8, 8), "Frames, packets, records and datagrams each source takes in, per second.", unit="pps"),
        timeseries("Decode errors by reason", [target(
            health_rate("decode_skip", "skipped", by="reason"), alias="$tag_reason ($tag_collector)")],
            (8, 33, 8, 8), "Packets and records skipped as malformed, by reason, per second (0 on a healthy feed).",
            unit="pps"),
        timeseries("Drops and write errors", [target(
            f"SELECT non_negative_derivative(last(\"influx_spool_dropped_points\"), 1s) AS \"spool dropped\", "
            f"non_negative_derivative(last(\"influx_write_rejected_points\"), 1s) AS \"rejected\", "
            f"non_negative_derivative(last(\"influx_write_errors\"), 1s) AS \"write errors\" "
            f"FROM \"netmon_health\" WHERE {COLLECTOR} AND {TF} {GROUP_COLLECTOR}", alias=COLLECTOR_ALIAS),
            target(f"SELECT non_negative_derivative(last(/^(source_kernel_drops|source_lost_.+|source_dropped|"
                   f"aggregate_late)$/), 1s) FROM \"netmon_health\" WHERE {COLLECTOR} AND {TF} {GROUP_COLLECTOR}",
                   ref="B", alias=COLLECTOR_ALIAS)],
            (16, 33, 8, 8), "Per second: points lost to a full spool or refused by the database, failed writes, and "
            "packets the sources lost (kernel ring drops, exporter sequence gaps) or that came too late for their "
            "interval.", unit="pps", units={"write errors": "reqps"}),
        timeseries("Spool backlog and write latency", [
            target(f"SELECT last(\"influx_spool_points\") AS \"spooled points\" FROM \"netmon_health\" "
                   f"WHERE {COLLECTOR} AND {TF} {GROUP_COLLECTOR}", alias=COLLECTOR_ALIAS),
            target(f"SELECT last(\"influx_write_latency_ms\") AS \"write latency\" FROM \"netmon_health\" "
                   f"WHERE {COLLECTOR} AND {TF} {GROUP_COLLECTOR}", ref="B", alias=COLLECTOR_ALIAS)],
            (0, 41, 24, 8), "Points waiting on disk, and the last write request's latency.", unit="none",
            units={"ref:B": "ms"}),
    ]
    return dashboard("netmon-overview", "netmon: NTP overview", panels, [],
                     "Campus NTP traffic: which hosts misbehave, who talks most, KoD, and netmon's own health.")


HOST = "\"host\" = '$host'"


def host() -> dict[str, Any]:
    def series(title: str, select: str, measurement: str, grid: tuple[int, int, int, int], description: str,
               by_direction: bool = False, unit: str = "short", units: dict[str, str] | None = None) -> dict[str, Any]:
        group = "GROUP BY time($__interval), \"direction\" fill(none)" if by_direction else GROUP_TIME
        query = f"SELECT {select} FROM \"{measurement}\" WHERE {HOST} AND {TF} {group}"
        return timeseries(title, [target(query, alias="$col $tag_direction" if by_direction else "")],
                          grid, description, unit, units=units)

    panels = [
        series("Requests and replies", f"mean(\"requests\") {PER_INTERVAL} AS \"requests\", "
               f"mean(\"replies\") {PER_INTERVAL} AS \"replies\"",
               "ntp_traffic", (0, 0, 12, 8), "NTP requests and replies per second, by direction.", True, unit="pps"),
        series("Client instances, servers, ports",
               "max(\"instances\") AS \"instances\", max(\"servers\") AS \"servers\", "
               "max(\"client_ports\") AS \"client ports\"",
               "ntp_host", (12, 0, 12, 8),
               "Estimated client instances (from timing), distinct servers and source ports.", unit="none"),
        series("Polling against its own poll", "max(\"rate_vs_poll\") AS \"rate vs poll\", "
               "min(\"interval_min\") AS \"shortest gap\"",
               "ntp_host", (0, 8, 12, 8),
               "Requests per server per 2^poll s (1 = as advertised), and the shortest gap between two requests "
               "of one socket.", unit="none", units={"shortest gap": "s"}),
        series("KoD received and ignored",
               f"mean(\"kod_rate\") {PER_INTERVAL} AS \"KoD RATE\", mean(\"kod_deny\") {PER_INTERVAL} AS \"KoD DENY\", "
               f"mean(\"kod_rstr\") {PER_INTERVAL} AS \"KoD RSTR\", "
               f"mean(\"after_kod\") {PER_INTERVAL} AS \"requests after KoD\"",
               "ntp_host", (12, 8, 12, 8), "Kiss-o'-Death replies per second, and requests sent to a server after "
               "its KoD.", unit="pps", units={"requests after KoD": "reqps"}),
        series("Origin timestamps", f"mean(\"org_match\") {PER_INTERVAL} AS \"match\", "
               f"mean(\"org_mismatch\") {PER_INTERVAL} AS \"mismatch\", mean(\"org_zero\") {PER_INTERVAL} AS \"zero\"",
               "ntp_host", (0, 16, 12, 8),
               "Requests per second whose origin matches the server's last transmit, matches nothing, or is zero.",
               unit="reqps"),
        series("Scores", "max(*)", "ntp_score", (12, 16, 12, 8),
               "Each detector's anomaly score, and the worst of them (max).", unit="none"),
        series("Mode 6/7 traffic", f"mean(\"ctl\") {PER_INTERVAL} AS \"packets\", "
               f"mean(\"ctl_bytes\") {PER_INTERVAL} AS \"bytes\"", "ntp_traffic",
               (0, 24, 12, 8), "Control (mode 6) and private (mode 7, monlist) packets and bytes per second, by "
               "direction.", True, unit="pps", units={"bytes out": "Bps", "bytes in": "Bps"}),
        series("Amplification", "max(\"amplification\") AS \"amplification\", max(\"reply_ratio\") AS \"reply ratio\"",
               "ntp_host", (12, 24, 12, 8),
               "Mode 6/7 bytes out per byte in (reflection), and reply/request bytes as a client.", unit="none"),
        table("Findings for this host",
              f"SELECT \"severity\", \"detector\", \"score\", \"server\", \"explanation\", \"evidence\" "
              f"FROM \"ntp_finding\" WHERE {HOST} AND {TF} ORDER BY time DESC LIMIT 200",
              (0, 32, 24, 10), "Every finding for the host with its evidence (feature: value against baseline).",
              sort="Time", link_host=False),
    ]
    variable = query_variable("host", "Host", "SHOW TAG VALUES FROM \"ntp_host\" WITH KEY = \"host\" "
                              "WHERE \"group\" =~ /^$group$/", False)
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
