"""The Alertmanager route example, checked and routed by Debian's amtool; the Prometheus
rules example only names metrics netmon's /metrics endpoint really serves."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from netmon import health
from netmon.sinks import influx, metrics
from tests.influx.servers import free_port

DIR = Path(__file__).resolve().parents[2] / "deploy" / "alertmanager"
CONFIG = DIR / "alertmanager.yml"


def amtool(*args: str) -> subprocess.CompletedProcess:
    if not shutil.which("amtool"):
        pytest.skip("amtool not installed (Debian package prometheus-alertmanager)")
    return subprocess.run(["amtool", *args], capture_output=True, text=True, timeout=30)


def route(*labels: str) -> set[str]:
    result = amtool("config", "routes", "test", f"--config.file={CONFIG}", *labels)
    assert result.returncode == 0, result.stderr
    return set(result.stdout.strip().split(","))


def test_alertmanager_example_passes_amtool_check():
    result = amtool("check-config", str(CONFIG))
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr


def test_netmon_alerts_route_by_severity_and_group():
    assert route("alertname=netmon_rule_kod_ignored", "severity=critical", "host=10.1.0.1") == {
        "security-oncall", "security-chat"}
    assert route("alertname=netmon_model_population", "severity=warning", "group=residence") == {"noc-chat"}
    assert route("alertname=netmon_model_population", "severity=warning", "group=clients") == {"security-chat"}
    assert route("alertname=NetmonSpoolGrowing") == {"noc-mail"}


def test_prometheus_rules_name_metrics_the_endpoint_serves(tmp_path):
    rules = yaml.safe_load((DIR / "prometheus-rules.yml").read_text())
    wanted = {name for group in rules["groups"] for rule in group["rules"]
              for name in re.findall(r"\bnetmon_[a-z_]+", rule["expr"])}
    sink = influx.build(influx.Config(type="influx", url=f"http://127.0.0.1:{free_port()}", close_timeout=0,
                                      spool_dir=str(tmp_path / "spool")))
    endpoint = metrics.build(metrics.Config(type="metrics", listen=f"127.0.0.1:{free_port()}"))
    try:
        health.count("decode.skip.truncated")
        health.count("source.capture.kernel_drops")
        text = requests.get(f"http://127.0.0.1:{endpoint.port}/metrics", timeout=5).text
    finally:
        endpoint.close()
        sink.close()
    served = {s.name for family in text_string_to_metric_families(text) for s in family.samples}
    assert wanted <= served, f"rules name metrics /metrics does not serve: {sorted(wanted - served)}"
