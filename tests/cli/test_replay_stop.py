"""``netmon replay`` stopped by SIGINT or SIGTERM: the files are read no further, but what was
read is scored, stored and listed, the store is closed cleanly, and the command exits 1 (a
partial result is never taken for a whole one). Before, Ctrl-C aborted without scoring the
open windows and SIGTERM killed the run with the store's last writes uncommitted."""

from __future__ import annotations

import re
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from netmon.cli import main

SAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "samples" / "campus-runaway.pcap.gz"
ARGS = ["replay", str(SAMPLE), "--internal", "10.20.0.0/16"]

#: Replays in batches of 64 KiB and sends itself the signal named by argv[1]: with argv[2] "read",
#: once 3 batches were handled (printing the newest frame time read); with "finish", once every
#: file was read, while the last windows are scored.
INTERRUPTED = """
import os, signal, sys
from netmon import cli, pipeline
from netmon.batch import Frames
from netmon.sources import pcapfile

pcapfile.READ_BYTES = 64 << 10
handle, finish = pipeline.Pipeline.handle, pipeline.Pipeline.finish
handled = []

def signal_me():
    os.kill(os.getpid(), getattr(signal, sys.argv[1]))

def interrupted(self, tag, item):
    handle(self, tag, item)
    handled.append(item)
    if len(handled) == 3 and sys.argv[2] == "read":
        print("read up to", max(float(i.time.max()) for i in handled if isinstance(i, Frames) and len(i)))
        signal_me()

def finishing(self):
    if sys.argv[2] == "finish":
        signal_me()
    finish(self)

pipeline.Pipeline.handle, pipeline.Pipeline.finish = interrupted, finishing
cli.main(sys.argv[3:])
"""


def _scored(output: str) -> int:
    found = re.search(r"(\d+) intervals? scored", output)
    assert found, f"no summary line in the output:\n{output}"
    return int(found.group(1))


def _query(db: Path, sql: str) -> list[tuple]:
    store = sqlite3.connect(db)
    try:
        return store.execute(sql).fetchall()
    finally:
        store.close()


def _interrupted(name: str, when: str, db: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", INTERRUPTED, name, when, *ARGS, "--db", str(db)],
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def whole(tmp_path_factory) -> tuple[int, Path]:
    """Intervals the sample gives when read to its end, and the store they went to."""
    db = tmp_path_factory.mktemp("whole") / "n.db"
    result = CliRunner().invoke(main, [*ARGS, "--db", str(db)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return _scored(result.output), db


@pytest.mark.parametrize("name", ["SIGINT", "SIGTERM"])
def test_a_signalled_replay_stores_what_it_read_closes_the_store_and_exits_1(tmp_path, whole, name):
    db = tmp_path / "n.db"
    done = _interrupted(name, "read", db)
    output = done.stdout + done.stderr
    assert done.returncode == 1, f"{name}: exit status {done.returncode}, not 1 (a partial replay):\n{output}"
    assert "stopped by a signal" in done.stderr, f"{name}: the partial replay was not said to be partial:\n{output}"
    scored, whole_db = _scored(output), whole[1]
    assert 0 < scored < whole[0], f"{name}: {scored} of {whole[0]} intervals: the replay did not stop where it was"
    assert not Path(f"{db}-wal").exists(), f"{name}: the store was not closed (its write-ahead log is left)"
    assert _query(db, "SELECT path FROM inputs") == [(str(SAMPLE),)], f"{name}: the store did not record the replay's file"
    last, end = _query(db, 'SELECT MAX(start), MAX("end") FROM intervals')[0]
    newest = float(re.search(r"read up to (\S+)", done.stdout).group(1))
    assert last is not None and end >= newest, f"{name}: the windows open at the stop (up to {newest}) were not stored"
    before_last = f"SELECT host, start FROM intervals WHERE start < {last} ORDER BY host, start"
    assert _query(db, before_last) == _query(whole_db, before_last), \
        f"{name}: the windows read before the stop are not stored as the whole replay stores them"


def test_a_signal_after_the_files_were_read_leaves_a_whole_replay_that_exits_0(tmp_path, whole):
    done = _interrupted("SIGINT", "finish", tmp_path / "n.db")
    assert done.returncode == 0, f"a replay read to its end was called partial:\n{done.stdout}{done.stderr}"
    assert _scored(done.stdout + done.stderr) == whole[0], "the signal during the last windows cut the result"


def test_the_signal_handlers_are_given_back_after_a_replay(tmp_path):
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    CliRunner().invoke(main, [*ARGS, "--db", str(tmp_path / "n.db")], catch_exceptions=False)
    assert {sig: signal.getsignal(sig) for sig in before} == before, "replay left its own signal handlers behind"
