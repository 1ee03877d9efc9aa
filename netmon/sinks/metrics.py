"""The "metrics" sink: netmon's own health on a Prometheus ``/metrics`` endpoint.

Enabled by a sink table, so it runs beside any other sink (or alone)::

    [[sinks]]
    type = "metrics"
    listen = "127.0.0.1:9123"

Every scrape reads :func:`netmon.health.snapshot`, so any counter a stage bumps
shows up without registration. Dotted health names become Prometheus names with
labels by :func:`netmon.sinks.naming.split` (the same names and labels as the
InfluxDB ``netmon_health`` fields and tags): ``aggregate.late`` ->
``netmon_aggregate_late_total``, ``decode.skip.<reason>`` ->
``netmon_decode_skip_total{reason="..."}``, ``source.netflow.exporter.<address>.lost.records``
-> ``netmon_source_exporter_lost_records_total{source="netflow",exporter="..."}``,
``<sink>.spool.points`` -> ``netmon_influx_spool_points{sink="..."}``; counters get
``_total``. The sink also counts the intervals
and findings it is handed, and the end of the last interval (event time), so an
alert can fire on a collector that stopped moving.
"""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from typing import Any, Literal

import structlog
from prometheus_client import start_http_server
from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily, Metric
from pydantic import Field, field_validator

from netmon import health
from netmon.batch import SEVERITIES, Scored
from netmon.config import SinkOptions
from netmon.sinks import naming

log = structlog.get_logger(__name__)


class Config(SinkOptions):
    """``[[sinks]] type = "metrics"``: where /metrics listens."""

    type: Literal["metrics"]
    listen: str = Field("127.0.0.1:9123", description="address:port of the /metrics endpoint ([::1]:9123 for IPv6)")

    @field_validator("listen")
    @classmethod
    def _address(cls, value: str) -> str:
        split_listen(value)
        return value


def split_listen(value: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port)."""
    match = re.fullmatch(r"\[?([^\[\]]*?)\]?:(\d{1,5})", value)
    if not match or not 0 < int(match.group(2)) < 65536:
        raise ValueError(f"listen = {value!r}: expected address:port such as 127.0.0.1:9123 or [::1]:9123")
    return match.group(1) or "0.0.0.0", int(match.group(2))


def metric_name(health_name: str) -> tuple[str, dict[str, str]]:
    """A dotted health name as a Prometheus metric name (without ``_total``) and its labels."""
    name = naming.split(health_name)
    return "netmon_" + name.name, name.labels


class HealthCollector:
    """A prometheus-client collector over netmon.health and what this sink saw."""

    def __init__(self) -> None:
        self.intervals = 0
        self.findings = dict.fromkeys(SEVERITIES, 0)
        self.last_interval_end = 0.0
        self.lock = threading.Lock()

    def collect(self) -> Iterator[Metric]:
        counters = health.counters_with_prefix("")
        gauges = {k: v for k, v in health.snapshot().items() if k not in counters}
        for values, family in ((counters, CounterMetricFamily), (gauges, GaugeMetricFamily)):
            grouped: dict[tuple[str, tuple[str, ...]], Metric] = {}
            for health_name, value in sorted(values.items()):
                name, labels = metric_name(health_name)
                key = (name, tuple(sorted(labels)))
                if key not in grouped:
                    grouped[key] = family(name, f"netmon health {name}", labels=list(key[1]))
                grouped[key].add_metric([labels[k] for k in key[1]], value)
            yield from grouped.values()
        with self.lock:
            yield CounterMetricFamily("netmon_intervals", "host-intervals handed to the sinks", value=self.intervals)
            findings = CounterMetricFamily("netmon_findings", "findings handed to the sinks", labels=["severity"])
            for severity, n in self.findings.items():
                findings.add_metric([severity], n)
            yield findings
            yield GaugeMetricFamily("netmon_last_interval_end_seconds",
                                    "end of the last scored interval, UNIX seconds (event time)",
                                    value=self.last_interval_end)


class MetricsSink:
    """Serves /metrics from a background thread until closed."""

    def __init__(self, config: Config) -> None:
        host, port = split_listen(config.listen)
        self.collector = HealthCollector()
        self.registry = CollectorRegistry()
        self.registry.register(self.collector)
        self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        self.port = self._server.server_port
        log.info("serving /metrics", listen=f"{host}:{self.port}")

    def write(self, scored: Scored) -> None:
        with self.collector.lock:
            self.collector.intervals += 1
            for finding in scored.findings:
                self.collector.findings[finding.severity] = self.collector.findings.get(finding.severity, 0) + 1
            self.collector.last_interval_end = max(self.collector.last_interval_end, scored.intervals.end)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def check(config: Config) -> list[str]:
    """Whether the /metrics address can be listened on (``netmon check-config``)."""
    host, port = split_listen(config.listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return [f"cannot listen on {config.listen}: {exc.strerror}"]
    return []


def build(config: Config, settings: Any = None) -> MetricsSink:
    """The sink for one ``[[sinks]] type = "metrics"`` table."""
    for name in naming.START_COUNTERS:
        health.count(name, 0)
    return MetricsSink(config)
