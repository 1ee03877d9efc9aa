"""Issue 13 item 9: the systemd recipe works as written. A non-editable install under a
prefix runs with the checkout hidden (as ProtectHome=yes hides one under /root), the eBPF
compile cache goes to the unit's CacheDirectory=, and the flows-only drop-in replaces the
address families instead of adding to them (systemd-analyze security reads unit + drop-in)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from netmon.sources.ebpf import loader
from tests.deploy.test_units_compose import DEPLOY, REPO, UNIT, unit_copy

FLOWS_ONLY = DEPLOY / "systemd" / "netmon.service.d" / "flows-only.conf"


def security(unit: Path) -> str:
    result = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(unit)], capture_output=True,
                            text=True, timeout=60)
    return result.stdout


def test_systemd_flows_only_dropin_resets_the_address_families(tmp_path):
    for name in ("base", "flows", "broken"):
        (tmp_path / name).mkdir()
    packet = "RestrictAddressFamilies=~AF_PACKET"
    base = security(unit_copy(tmp_path / "base"))
    assert f"✗ {packet}" in base, "the base unit allows AF_PACKET (capture): the check below would prove nothing"
    assert f"✓ {packet}" in security(unit_copy(tmp_path / "flows", FLOWS_ONLY)), (
        "with flows-only.conf the service must not be able to open packet sockets")
    broken = tmp_path / "flows-only.conf"
    broken.write_text(FLOWS_ONLY.read_text().replace("RestrictAddressFamilies=\n", ""))
    unit = unit_copy(tmp_path / "broken", broken)
    assert f"✗ {packet}" in security(unit), "without the empty assignment the list is added to: the test must see it"


def test_systemd_ebpf_compile_cache_goes_to_the_units_cache_directory(tmp_path, monkeypatch):
    """The unit's dynamic user has no home: the compiled program goes to $CACHE_DIRECTORY."""
    assert "\nCacheDirectory=netmon\n" in UNIT.read_text()
    if not shutil.which("clang") or not Path("/usr/include/bpf/bpf_helpers.h").exists():
        pytest.skip("clang and libbpf-dev are needed to compile the eBPF program")
    monkeypatch.setenv("CACHE_DIRECTORY", str(tmp_path / "cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "no-home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    built = loader.compile_program()
    assert built.parent == tmp_path / "cache" / "ebpf" and built.stat().st_size > 0
    assert not (tmp_path / "no-home").exists()


@pytest.mark.slow
def test_systemd_install_prefix_is_a_copy_that_runs_with_the_checkout_hidden(tmp_path):
    """install.sh --prefix builds a venv with netmon installed non-editable: with the checkout
    hidden under an empty tmpfs (what ProtectHome=yes does to one under /root), the installed
    netmon still replays the sample capture."""
    if shutil.which("unshare") is None or subprocess.run(["id", "-u"], capture_output=True, text=True).stdout.strip() != "0":
        pytest.skip("hiding the checkout needs root and unshare (a private mount namespace)")
    prefix = tmp_path / "opt" / "netmon"
    done = subprocess.run(["bash", str(DEPLOY / "install.sh"), "--prefix", str(prefix)], capture_output=True,
                          text=True, timeout=540)
    assert done.returncode == 0, done.stderr[-2000:]
    assert UNIT.read_text().count("ExecStart=/opt/netmon/bin/netmon run") == 1, "the unit runs PREFIX/bin/netmon"
    sample = tmp_path / "sample.pcap.gz"
    shutil.copy(DEPLOY / "samples" / "campus-runaway.pcap.gz", sample)
    script = (f"mount -t tmpfs none {REPO} && cd {tmp_path} && "
              f"{prefix}/bin/netmon replay {sample} --internal 10.20.0.0/16 --db {tmp_path / 'store.db'}")
    run = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and "intervals scored" in run.stdout, f"{run.stdout[-1500:]}\n{run.stderr[-1500:]}"
    assert "10.20.24.112" in run.stdout, "the installed copy did not find the sample's runaway"
