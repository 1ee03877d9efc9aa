"""Fixtures: a fresh influxd 1.x and a fresh victoria-metrics per test, stopped by PID."""

from __future__ import annotations

import shutil

import pytest

from tests.influx.servers import Influx1, Victoria


@pytest.fixture
def influx1(tmp_path):
    if not shutil.which("influxd"):
        pytest.skip("influxd (Debian package influxdb) is not installed: bash deploy/install.sh --all")
    root = tmp_path / "influxd"
    root.mkdir()
    server = Influx1.create(root)
    server.start()
    server.create_database("netmon")
    yield server
    server.stop()


@pytest.fixture
def victoria(tmp_path):
    if not shutil.which("victoria-metrics"):
        pytest.skip("victoria-metrics (Debian package) is not installed: bash deploy/install.sh --all")
    root = tmp_path / "vm"
    root.mkdir()
    server = Victoria.create(root, dedup=True)
    server.start()
    yield server
    server.stop()
