"""Real exporters on loopback: softflowd, pmacctd and nfcapd beside netmon (DESIGN 'Real parts')."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.flows.exporters import Collecting, capture_truth, ntp_rows, pair_totals, stop_process, wait_for, write_capture


@pytest.fixture
def capture(tmp_path: Path) -> tuple[Path, np.ndarray]:
    ntp, background = ntp_rows()
    path = tmp_path / "ntp.pcap"
    write_capture(path, ntp, background)
    return path, capture_truth(path)


def softflowd_export(pcap: Path, port: int, version: str, workdir: Path, extra: list[str] | None = None) -> None:
    """softflowd reads the pcap, then softflowctl expires every flow and shuts it down."""
    ctl = workdir / f"softflowd-{version}.ctl"
    argv = ["softflowd", "-d", "-r", str(pcap), "-n", f"127.0.0.1:{port}", "-v", version, "-c", str(ctl),
            "-p", str(workdir / f"softflowd-{version}.pid"), *(extra or [])]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert wait_for(ctl.exists, 10), f"softflowd made no control socket: {proc.stderr.read1(4096) if proc.poll() is not None else ''}"
        subprocess.run(["softflowctl", "-c", str(ctl), "expire-all"], check=True, capture_output=True, timeout=10)
        subprocess.run(["softflowctl", "-c", str(ctl), "shutdown"], check=False, capture_output=True, timeout=10)
        proc.wait(timeout=10)
    finally:
        stop_process(proc)


@pytest.mark.skipif(shutil.which("softflowd") is None, reason="softflowd not installed (deploy/install.sh installs it)")
@pytest.mark.parametrize("version", ["5", "9", "10"])
def test_softflowd_export_gives_the_same_ntp_totals_as_the_capture(capture, tmp_path: Path, version: str) -> None:
    pcap, truth = capture
    collecting = Collecting("netflow")
    try:
        softflowd_export(pcap, collecting.port, version, tmp_path, ["-6"] if version != "5" else [])
    finally:
        collecting.stop()
    got = collecting.observations()
    assert (got["ntp"] == 0).all() and (got["flows"] == 1).all()
    v4_only = version == "5"  # NetFlow v5 carries IPv4 only
    want = pair_totals(truth, v4_only)
    assert pair_totals(got) == want, f"NetFlow v{version}: per-pair NTP packets/bytes differ from the capture"
