"""Fixtures: a fresh influxd 1.x and a fresh victoria-metrics per test, stopped by PID."""

from __future__ import annotations

import shutil

import pytest

from tests.influx.servers import Influx1, Server, Victoria


def started(kind: type[Server], binary: str, package: str, root) -> Server:
    if not shutil.which(binary):
        pytest.skip(f"{binary} (Debian package {package}) is not installed: bash deploy/install.sh --all")
    root.mkdir()
    server = kind.create(root)
    server.start()
    return server


@pytest.fixture
def influx1(tmp_path):
    server = started(Influx1, "influxd", "influxdb", tmp_path / "influxd")
    server.create_database("netmon")
    yield server
    server.stop()


@pytest.fixture
def victoria(tmp_path):
    server = started(Victoria, "victoria-metrics", "victoria-metrics", tmp_path / "vm")
    yield server
    server.stop()
