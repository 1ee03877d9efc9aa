"""The sample capture replayed by `netmon replay` into a fresh influxd 1.x (once per session;
the replay creates the database itself)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.influx.servers import Influx1

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "deploy" / "samples" / "campus-runaway.pcap.gz"
RUNAWAY = "10.20.24.112"  # see deploy/samples/README.md
START, END = 1772409600.0, 1772420400.0  # 2026-03-02 00:00 to 03:00 UTC, the capture


@pytest.fixture(scope="session")
def replayed(tmp_path_factory):
    if not shutil.which("influxd"):
        pytest.skip("influxd (Debian package influxdb) is not installed: bash deploy/install.sh --all")
    if not SAMPLE.exists():
        pytest.skip(f"sample capture {SAMPLE} missing")
    root = tmp_path_factory.mktemp("replay")
    (root / "influxd").mkdir()
    server = Influx1.create(root / "influxd")
    server.start()
    config = root / "netmon.toml"
    config.write_text(
        '[campus]\ninternal = ["10.20.0.0/16", "2001:db8:20::/48"]\n'
        '[detect]\ndetectors = ["rules", "population"]\ncheckpoint = "state.ckpt"\n'
        f'[[sinks]]\ntype = "influx"\napi = "v1"\nurl = "{server.url}"\nspool_dir = "spool"\nflush_interval = 0.2\nhealth_interval = 0.1\n'
    )
    result = subprocess.run([str(REPO / ".venv/bin/netmon"), "replay", str(SAMPLE), "--config", str(config)],
                            cwd=root, capture_output=True, text=True, timeout=300)
    try:
        assert result.returncode == 0, f"replay failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
        yield server
    finally:
        server.stop()


