"""The cluster deploy kit (deploy/cluster/): its units pass systemd-analyze verify, the
scorer runs with no capability, and the compose file passes docker-compose config."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from tests.deploy.test_units_compose import compose_config, verify

REPO = Path(__file__).resolve().parents[2]
KIT = REPO / "deploy" / "cluster"


@pytest.mark.parametrize("role", ["collector", "scorer"])
def test_cluster_units_verify_and_run_their_role(tmp_path: Path, role: str):
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze not installed (Debian package systemd)")
    text = (KIT / f"netmon-{role}.service").read_text()
    assert f"ExecStart=/opt/netmon/bin/netmon run --role {role} --config /etc/netmon/netmon.toml" in text
    unit = tmp_path / f"netmon-{role}.service"
    unit.write_text(text.replace("/opt/netmon/bin/netmon", str(REPO / ".venv/bin/netmon")))
    result = verify(unit)
    mine = [line for line in result.stderr.splitlines() if str(tmp_path) in line]
    assert result.returncode == 0 and not mine, result.stderr


def test_the_scorer_unit_grants_no_capability_and_no_raw_sockets():
    text = (KIT / "netmon-scorer.service").read_text()
    assert "\nCapabilityBoundingSet=\n" in text and "AmbientCapabilities" not in text
    assert "AF_PACKET" not in text


def test_cluster_compose_file_is_valid_and_builds_with_the_nats_client():
    compose = KIT / "docker-compose.yml"
    result = compose_config(compose)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(compose.read_text())["services"]
    for role in ("collector", "scorer"):
        assert services[role]["command"][:3] == ["run", "--role", role]
        assert services[role]["build"]["args"]["EXTRAS"] == "[cluster]"
        assert (compose.parent / services[role]["build"]["context"] / services[role]["build"]["dockerfile"]).is_file()
    assert "-js" in services["nats"]["command"], "NATS must run with JetStream"
