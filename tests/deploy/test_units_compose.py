"""The systemd unit (systemd-analyze verify and security) and the compose file
(docker-compose config, Debian's docker-compose 1.29) validated by their own tools."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
UNIT = DEPLOY / "systemd" / "netmon.service"
DROPINS = sorted((DEPLOY / "systemd" / "netmon.service.d").glob("*.conf"))
COMPOSE = DEPLOY / "compose" / "docker-compose.yml"


def unit_copy(tmp_path: Path, dropin: Path | None = None) -> Path:
    """The unit with ExecStart pointing at this checkout's netmon (verify checks it exists)."""
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze not installed (Debian package systemd)")
    unit = tmp_path / "netmon.service"
    unit.write_text(UNIT.read_text().replace("/opt/netmon/bin/netmon", str(REPO / ".venv/bin/netmon")))
    if dropin:
        (tmp_path / "netmon.service.d").mkdir()
        shutil.copy(dropin, tmp_path / "netmon.service.d" / dropin.name)
    return unit


def verify(unit: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("dropin", [None, *DROPINS], ids=lambda p: p.name if p else "base")
def test_unit_and_dropins_verify_without_warnings(tmp_path, dropin):
    result = verify(unit_copy(tmp_path, dropin))
    mine = [line for line in result.stderr.splitlines() if str(tmp_path) in line]
    assert result.returncode == 0 and not mine, result.stderr


def test_verify_would_catch_a_misspelt_key(tmp_path):
    unit = unit_copy(tmp_path)
    unit.write_text(unit.read_text().replace("ProtectSystem=strict", "ProtectSystemm=strict"))
    assert "Unknown key" in verify(unit).stderr


def test_unit_is_hardened(tmp_path):
    text = UNIT.read_text()
    for setting in ("ProtectSystem=strict", "StateDirectory=netmon", "NoNewPrivileges=yes", "DynamicUser=yes",
                    "CapabilityBoundingSet=CAP_NET_RAW", "PrivateDevices=yes", "ProtectHome=yes"):
        assert f"\n{setting}\n" in text, f"missing {setting}"
    result = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(unit_copy(tmp_path))],
                            capture_output=True, text=True, timeout=60)
    score = float(result.stdout.split("Overall exposure level for netmon.service:")[1].split()[0])
    assert score <= 3.0, f"exposure {score} (systemd-analyze security), want <= 3.0:\n{result.stdout[-1500:]}"


def test_ebpf_dropin_grants_exactly_the_ebpf_capabilities():
    text = (DEPLOY / "systemd" / "netmon.service.d" / "ebpf.conf").read_text()
    assert "CapabilityBoundingSet=CAP_NET_RAW CAP_BPF CAP_NET_ADMIN CAP_PERFMON\n" in text


ENV = {"INFLUX_ADMIN_PASSWORD": "a", "INFLUX_TOKEN": "b", "GRAFANA_ADMIN_PASSWORD": "c", "GRAFANA_INFLUX_PASSWORD": "d",
       "PATH": "/usr/bin:/bin"}


def compose_config(path: Path) -> subprocess.CompletedProcess:
    if not shutil.which("docker-compose"):
        pytest.skip("docker-compose not installed (Debian package docker-compose)")
    return subprocess.run(["docker-compose", "-f", str(path), "--project-directory", str(COMPOSE.parent),
                           "config", "-q"], capture_output=True, text=True, env=ENV, timeout=60)


def test_compose_file_is_valid():
    result = compose_config(COMPOSE)
    assert result.returncode == 0, result.stderr


def test_compose_validator_would_catch_a_misspelt_key(tmp_path):
    bad = tmp_path / "docker-compose.yml"
    bad.write_text(COMPOSE.read_text().replace("cap_drop:", "cap_dropp:"))
    assert compose_config(bad).returncode != 0


def test_compose_mounts_and_build_files_exist():
    compose = yaml.safe_load(COMPOSE.read_text())
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE.parent / source).exists() or source == "./netmon.toml", f"missing {source}"
    build = compose["services"]["netmon"]["build"]
    assert (COMPOSE.parent / build["context"] / build["dockerfile"]).is_file()
    assert compose["services"]["netmon"]["cap_add"] == ["NET_RAW"]


def test_grafana_compose_does_not_hand_grafana_the_admin_token():
    """Grafana reads with a read-only v1 user the init script creates; the admin token stays
    with InfluxDB's setup and netmon."""
    compose = yaml.safe_load(COMPOSE.read_text())
    grafana = compose["services"]["grafana"]["environment"]
    assert not any("INFLUX_TOKEN" in str(v) for v in grafana.values()), grafana
    datasource = (DEPLOY / "grafana/provisioning/datasources/netmon-influxdb.yml").read_text()
    assert "INFLUX_TOKEN" not in datasource.split("apiVersion")[1]
    init = (COMPOSE.parent / "influxdb-init" / "dbrp.sh").read_text()
    assert "v1 auth create" in init and "--read-bucket" in init and "--write-bucket" not in init
    assert compose["services"]["influxdb"]["environment"]["GRAFANA_INFLUX_USER"] == grafana["INFLUX_USER"]
