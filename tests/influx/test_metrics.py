"""The Prometheus /metrics endpoint, scraped over loopback and parsed by prometheus-client."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from netmon import health
from netmon.config import validate
from netmon.sinks import metrics, naming
from tests.influx.data import make_scored
from tests.influx.servers import free_port


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


@pytest.fixture
def sink():
    sink = metrics.build(metrics.Config(type="metrics", listen=f"127.0.0.1:{free_port()}"))
    yield sink
    sink.close()


def test_health_counters_and_gauges_are_served(sink):
    health.count("source.pcap.packets", 1500)
    health.count("decode.skip.truncated", 3)
    health.count("decode.skip.bad_ip_header", 2)
    health.gauge("influx.spool.points", 42)
    health.gauge("influx.write.latency_ms", 12.5)
    health.gauge("alerts.hook.pager.queue", 4)
    health.count("source.netflow.lost.packets", 9)
    samples = scrape(sink.port)
    assert samples[("netmon_source_packets_total", (("source", "pcap"),))] == 1500
    assert samples[("netmon_decode_skip_total", (("reason", "truncated"),))] == 3
    assert samples[("netmon_decode_skip_total", (("reason", "bad_ip_header"),))] == 2
    assert samples[("netmon_influx_spool_points", (("sink", "influx"),))] == 42
    assert samples[("netmon_influx_write_latency_ms", (("sink", "influx"),))] == 12.5
    assert samples[("netmon_alerts_hook_queue", (("hook", "pager"),))] == 4
    assert samples[("netmon_source_lost_packets_total", (("source", "netflow"),))] == 9


def test_findings_and_last_interval_counted_from_what_the_sink_is_handed(sink):
    sink.write(make_scored(1_700_000_000.0))
    samples = scrape(sink.port)
    assert samples[("netmon_intervals_total", ())] == 1
    assert samples[("netmon_findings_total", (("severity", "critical"),))] == 1
    assert samples[("netmon_findings_total", (("severity", "warning"),))] == 1
    assert samples[("netmon_last_interval_end_seconds", ())] == 1_700_000_060.0


def test_listen_address_validated_in_config():
    with pytest.raises(Exception, match="address:port"):
        validate({"sinks": [{"type": "metrics", "listen": "9123"}]})
    assert metrics.split_listen("[::1]:9123") == ("::1", 9123)


def test_schema_prometheus_names_carry_values_as_labels_not_in_the_name(sink):
    """netmon_source_exporter_127_0_0_1_lost_records_total was the name; the address is a label."""
    health.count("source.netflow.exporter.127.0.0.1.lost.records", 7)
    health.count("source.netflow.exporter.2001:db8::1.lost.records", 2)
    health.count("source.sflow.agent.10.0.0.9.lost.datagrams", 3)
    health.count("alerts.exec.ticket.exit.2", 1)
    health.count("mirror.write.points", 5)
    samples = scrape(sink.port)
    assert samples[("netmon_source_exporter_lost_records_total", (("exporter", "127.0.0.1"), ("source", "netflow")))] == 7
    assert samples[("netmon_source_exporter_lost_records_total", (("exporter", "2001:db8::1"), ("source", "netflow")))] == 2
    assert samples[("netmon_source_exporter_lost_datagrams_total", (("exporter", "10.0.0.9"), ("source", "sflow")))] == 3
    assert samples[("netmon_alerts_exec_exit_total", (("code", "2"), ("hook", "ticket")))] == 1
    assert samples[("netmon_influx_write_points_total", (("sink", "mirror"),))] == 5
    embedded = [name for name, _labels in samples if any(c.isdigit() for c in name.replace("netmon_", ""))]
    assert not embedded, f"metric names with a value in them: {embedded}"


def test_schema_counters_of_a_healthy_collector_are_served_from_the_start_at_zero(sink):
    samples = scrape(sink.port)
    assert samples[("netmon_decode_skip_total", (("reason", "truncated"),))] == 0
    assert samples[("netmon_aggregate_late_total", ())] == 0


CASE = Path(__file__).resolve().parents[1] / "cases" / "health-names-embedding-values"


def test_schema_health_names_become_one_name_and_labels_as_the_case_files_say():
    expected = json.loads((CASE / "expected.json").read_text())
    names = (CASE / "names.txt").read_text().split()
    assert sorted(names) == sorted(expected)
    for health_name in names:
        got = naming.split(health_name)
        assert [got.name, got.labels] == expected[health_name], f"{health_name} became {got}"
