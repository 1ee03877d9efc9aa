"""Issue 13, smaller items: the default store does not depend on the working directory, a
replay does not silently rewrite ./models/state.ckpt, the README links stay inside the
repository."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from netmon import paths

REPO = Path(__file__).resolve().parents[2]
NETMON = REPO / ".venv" / "bin" / "netmon"
SAMPLE = REPO / "deploy" / "samples" / "campus-runaway.pcap.gz"
RUNAWAY = "10.20.24.112"


def netmon(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(NETMON), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_default_store_path_does_not_depend_on_the_working_directory(tmp_path):
    """replay in one directory, hosts in another: the same store (here systemd's
    $STATE_DIRECTORY), and nothing left in either working directory."""
    env = {k: v for k, v in os.environ.items() if k != "NETMON_DATA_DIR"} | {"STATE_DIRECTORY": str(tmp_path / "state")}
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    done = netmon(["replay", str(SAMPLE), "--internal", "10.20.0.0/16"], first, env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "state" / "netmon.db").is_file(), "the store is not in the data directory"
    hosts = netmon(["hosts", "--top", "3"], second, env)
    assert hosts.returncode == 0 and RUNAWAY in hosts.stdout, hosts.stdout + hosts.stderr
    assert not list(first.iterdir()) and not list(second.iterdir()), "files written in the working directory"


def test_default_store_data_directory_order(tmp_path, monkeypatch):
    for name in ("NETMON_DATA_DIR", "STATE_DIRECTORY", "XDG_DATA_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert paths.data_dir() == tmp_path / "home" / ".local" / "share" / "netmon"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert paths.data_dir() == tmp_path / "xdg" / "netmon"
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert paths.data_dir() == Path("/var/lib/netmon")
    monkeypatch.setenv("STATE_DIRECTORY", f"{tmp_path / 'unit'}:{tmp_path / 'other'}")
    assert paths.data_dir() == tmp_path / "unit"
    monkeypatch.setenv("NETMON_DATA_DIR", str(tmp_path / "explicit"))
    assert paths.data_dir() == tmp_path / "explicit"


@pytest.mark.parametrize("how", ["flag", "none"])
def test_replay_does_not_silently_rewrite_models_state_ckpt(tmp_path, how):
    state = tmp_path / "models" / "state.ckpt"
    state.parent.mkdir()
    state.write_bytes(b"a collector's checkpoint")
    args = ["replay", str(SAMPLE), "--internal", "10.20.0.0/16", "--db", str(tmp_path / "s.db")]
    chosen = tmp_path / "replay.ckpt"
    done = netmon(args + (["--state", str(chosen)] if how == "flag" else []), tmp_path, dict(os.environ))
    assert done.returncode == 0, done.stderr[-2000:]
    assert state.read_bytes() == b"a collector's checkpoint", "replay rewrote ./models/state.ckpt"
    if how == "flag":
        assert f"model state: {chosen}" in done.stderr and chosen.stat().st_size > 0
    else:
        assert "model state: none kept" in done.stderr and not chosen.exists()


def test_readme_links_stay_inside_the_repository():
    for readme in (REPO / "README.md", *sorted((REPO / "deploy").rglob("README.md")), REPO / "models" / "README.md"):
        text = readme.read_text()
        assert "../shared" not in text and "DESIGN.md" not in text, f"{readme}: points outside the repository"
        for target in re.findall(r"\]\(([^)]+)\)", text):
            if re.match(r"https?://", target):
                continue  # a web page is not a file of some other checkout
            resolved = (readme.parent / target.split("#")[0]).resolve()
            assert resolved.is_relative_to(REPO) and resolved.exists(), f"{readme}: link {target} leaves the repository"


def test_default_checkpoint_is_in_the_data_directory_too(tmp_path):
    from netmon.config import Detect

    assert Detect().checkpoint == str(tmp_path / "netmon-data" / "models" / "state.ckpt")  # tests/conftest.py


def test_silences_muzzle_log_and_evidence_default_to_the_data_directory(tmp_path):
    """`netmon silence` run from any directory edits the file the service reads: no default
    path of netmon's depends on the working directory."""
    from netmon.act.muzzle import Config as Muzzle
    from netmon.sinks.alerts import Config as Alerts
    from netmon.sinks.evidence import Config as Evidence

    data = tmp_path / "netmon-data"  # tests/conftest.py
    assert Alerts(type="alerts").silences_file == str(data / "silences.json")
    assert Evidence(type="evidence").dir == str(data / "evidence")
    assert Muzzle().audit_log == str(data / "muzzle.log")
    env = {k: v for k, v in os.environ.items() if k != "NETMON_DATA_DIR"} | {"STATE_DIRECTORY": str(tmp_path / "state")}
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    added = netmon(["silence", "add", "--host", "10.20.3.64", "--for", "7d", "--reason", "NAT gateway"], first, env)
    assert added.returncode == 0, added.stderr[-2000:]
    listed = netmon(["silence", "list"], second, env)
    assert "10.20.3.64" in listed.stdout, f"a silence added in one directory is not listed from another:\n{listed.stdout}"
    assert (tmp_path / "state" / "silences.json").is_file(), "the silences file is not in the data directory"
