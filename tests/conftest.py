"""Fixtures every test area shares: the peer corpus and the network lab."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from netmon import health
from tests.support.lab import CORPUS, Lab, can_make_namespaces

# defaults computed when a module is imported (help texts) must not name /var/lib/netmon either;
# the directory is this run's own, removed when the run ends
if "NETMON_DATA_DIR" not in os.environ:
    os.environ["NETMON_DATA_DIR"] = tempfile.mkdtemp(prefix="netmon-test-data-")
    atexit.register(shutil.rmtree, os.environ["NETMON_DATA_DIR"], ignore_errors=True)


@pytest.fixture
def corpus() -> Path:
    """../shared/corpus, read in place (never copied: some files carry GPL/AGPL terms)."""
    if not CORPUS.is_dir():
        pytest.skip(f"peer corpus not found at {CORPUS} (it sits beside the repository as shared/corpus)")
    return CORPUS


@pytest.fixture
def lab():
    """Network namespaces and processes for one test, all removed afterwards."""
    reason = can_make_namespaces()
    if reason:
        pytest.skip(reason)
    with Lab() as lab:
        yield lab


@pytest.fixture(autouse=True)
def _fresh_health():
    health.reset()
    yield


@pytest.fixture(autouse=True)
def _own_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Each test runs in its own directory, with its own data directory (the default store,
    netmon.paths) in it, so default paths never leak state between tests, into the
    repository or into /var/lib/netmon."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NETMON_DATA_DIR", str(tmp_path / "netmon-data"))
