"""The store under faults: a damaged file is set aside, a full disk never ends a run, nothing is lost
that fits in the memory buffer."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from netmon import health
from netmon.retry import Backoff
from netmon.runtime.sinks import scored_bytes
from netmon.sinks import store as store_module
from netmon.sinks.store import Config, StoreError, build
from tests.store.test_store import interval
from tests.support.disk import fill, small_tmpfs

CASES = Path(__file__).resolve().parents[1] / "cases"
NETMON = str(Path(sys.executable).with_name("netmon"))


def _rows(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT count(*) FROM intervals").fetchone()[0]


def test_damaged_store_is_moved_aside_and_a_fresh_one_created(tmp_path, capsys):
    path = tmp_path / "netmon.db"
    shutil.copy(CASES / "store-damaged" / "netmon.db", path)
    original = path.read_bytes()
    sink = build(Config(path=str(path)))
    sink.write(interval(0.0, ["10.0.0.1", "10.0.0.2"]))
    sink.close()
    aside = sorted(tmp_path.glob("netmon.db.corrupt-*"))
    assert [p.read_bytes() for p in aside if not p.name.endswith(("-wal", "-shm"))] == [original], \
        "the damaged store was not kept aside unchanged"
    assert _rows(path) == 2, "the fresh store did not receive the intervals"
    assert health.snapshot().get("store.corrupt") == 1
    logged = capsys.readouterr()
    out = logged.out + logged.err  # log lines go to stderr once the CLI set logging up
    assert "store file damaged; moved aside" in out and "malformed" in out, out


def test_unreachable_store_path_is_a_clear_error_not_a_move(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where a directory should be")
    with pytest.raises(StoreError, match="cannot create the store"):
        build(Config(path=str(blocker / "netmon.db")))
    assert blocker.read_text() == "a file where a directory should be"


def test_full_disk_never_ends_the_run_and_every_interval_is_written_once_space_returns(tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "COMMIT_EVERY", 0.0)
    monkeypatch.setattr(store_module, "RETRY", Backoff(1e-6, 1e-6))
    with small_tmpfs(tmp_path / "disk", 8192) as disk:
        path = disk / "netmon.db"
        sink = build(Config(path=str(path)))
        hosts = [f"10.0.0.{i}" for i in range(50)]
        for k in range(3):
            sink.write(interval(k * 60.0, hosts))
        filler = fill(disk)
        for k in range(3, 40):
            sink.write(interval(k * 60.0, hosts))
        assert health.snapshot().get("store.write_failed", 0) >= 1, "the full disk never made a write fail"
        assert sink.pending_rows > 0, "no intervals waited in memory while the disk was full"
        filler.unlink()
        sink.write(interval(40 * 60.0, hosts))
        sink.close()
        assert _rows(path) == 41 * 50, "intervals written while the disk was full were lost"
        assert not health.snapshot().get("store.dropped") and not health.snapshot().get("store.lost")


def test_full_disk_buffer_is_bounded_in_bytes_and_drops_oldest_counted(tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "COMMIT_EVERY", 0.0)
    monkeypatch.setattr(store_module, "RETRY", Backoff(1e-6, 1e-6))
    hosts = [f"10.0.0.{i}" for i in range(100)]
    bound = max(1 << 16, 10 * scored_bytes(interval(0.0, hosts)))  # about ten intervals
    with small_tmpfs(tmp_path / "disk", 512) as disk:
        sink = build(Config(path=str(disk / "netmon.db"), buffer_bytes=bound))
        fill(disk)
        for k in range(50):
            sink.write(interval(k * 60.0, hosts))
        held = health.snapshot()["store.pending_bytes"]
        assert sink.pending_bytes == held <= bound, f"{held} bytes held while the disk was full, the bound is {bound}"
        assert sink.pending_rows >= 100, "the newest intervals were not kept"
        assert health.snapshot().get("store.dropped", 0) == 50 * 100 - sink.pending_rows, "drops not counted in rows"
        sink.close()
        assert health.snapshot().get("store.lost", 0) >= 1, "intervals lost at stop were not counted"


def test_replay_on_a_full_disk_finishes_with_clear_errors_and_no_traceback(tmp_path):
    sample = Path(__file__).resolve().parents[2] / "deploy" / "samples"
    pcap = next(iter(sorted(sample.glob("*.pcap*"))), None)
    if pcap is None:
        pytest.skip("no sample capture in deploy/samples")
    with small_tmpfs(tmp_path / "disk", 256) as disk:
        config = tmp_path / "netmon.toml"
        config.write_text(f'[campus]\ninternal = ["10.0.0.0/8"]\n[detect]\ncheckpoint = "{disk}/state.ckpt"\n'
                          f'[[sinks]]\ntype = "store"\npath = "{disk}/netmon.db"\n')
        build(Config(path=str(disk / "netmon.db"))).close()
        fill(disk)
        done = subprocess.run([NETMON, "replay", "--config", str(config), str(pcap)], capture_output=True, text=True,
                              timeout=300, cwd=tmp_path)
    output = done.stdout + done.stderr
    assert "Traceback" not in output, output[-3000:]
    assert done.returncode == 0, output[-3000:]
    assert "checkpoint not written" in output and "store write failed" in output, output[-3000:]


def test_full_disk_at_start_buffers_until_the_store_can_be_opened(tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "RETRY", Backoff(1e-6, 1e-6))
    with small_tmpfs(tmp_path / "disk", 1024) as disk:
        path = disk / "netmon.db"
        build(Config(path=str(path))).close()
        filler = fill(disk)
        sink = build(Config(path=str(path)))
        sink.write(interval(0.0, ["10.0.0.1"]))
        assert sink.pending_rows == 1 and health.snapshot().get("store.write_failed", 0) >= 1
        filler.unlink()
        sink.close()
        assert _rows(path) == 1, "the interval held while the disk was full was not written"


def test_unwritable_store_path_is_a_one_line_error_from_replay_and_check_config(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    config = tmp_path / "netmon.toml"
    config.write_text(f'[campus]\ninternal = ["10.0.0.0/8"]\n[[sinks]]\ntype = "store"\npath = "{blocker}/sub/netmon.db"\n')
    pcap = Path(__file__).resolve().parents[2] / "deploy" / "samples" / "campus-runaway.pcap.gz"
    done = subprocess.run([NETMON, "replay", "--config", str(config), str(pcap)], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert done.returncode == 1 and "cannot create the store's directory" in done.stderr, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    checked = subprocess.run([NETMON, "check-config", str(config)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 2 and "netmon.db" in checked.stderr, checked.stderr
