"""The disk spool on its own: order, restart, torn records, bound, one owner."""

from __future__ import annotations

from pathlib import Path

import pytest

from netmon import health
from netmon.sinks import spool as spool_module
from netmon.sinks.spool import Spool, SpoolBusy


def batch(k: int, n: int = 3) -> list[bytes]:
    return [f"m,host=h{k} v={i} {k * 1000 + i}".encode() for i in range(n)]


def drain(spool: Spool) -> list[bytes]:
    sent = []
    while records := spool.read(10):
        sent += [line for r in records for line in r.lines]
        spool.commit(records)
    return sent


def test_batches_come_out_in_the_order_written_across_segments(tmp_path):
    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=200)
    for k in range(20):
        spool.append(batch(k))
    assert spool.pending_points() == 60
    assert drain(spool) == [line for k in range(20) for line in batch(k)]
    assert spool.pending_points() == 0
    assert len(list(tmp_path.glob("*.seg"))) == 1, "sent segments must be deleted"
    spool.close()


def test_reopened_spool_resumes_after_the_last_committed_record(tmp_path):
    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=200)
    for k in range(10):
        spool.append(batch(k))
    records = spool.read(7)  # three records of three points
    spool.commit(records)
    spool.close()
    again = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=200)
    assert again.pending_points() == 30 - 9
    assert drain(again) == [line for k in range(3, 10) for line in batch(k)]
    again.close()


def test_torn_record_at_the_tail_is_cut_and_counted(tmp_path):
    spool = Spool(tmp_path, max_bytes=1 << 20)
    spool.append(batch(1))
    spool.append(batch(2))
    spool.close()
    segment = next(tmp_path.glob("*.seg"))
    segment.write_bytes(segment.read_bytes()[:-5])  # a crash in the middle of the second write
    again = Spool(tmp_path, max_bytes=1 << 20)
    assert drain(again) == batch(1)
    assert health.snapshot()["influx.spool.torn_bytes"] > 0
    again.append(batch(3))
    assert drain(again) == batch(3), "appends after a cut tail must be readable"
    again.close()


def test_bound_drops_oldest_segments_and_counts_their_points(tmp_path):
    spool = Spool(tmp_path, max_bytes=1 << 16, segment_bytes=4096)
    for k in range(2000):
        spool.append(batch(k))
    dropped = health.snapshot()["influx.spool.dropped_points"]
    sent = drain(spool)
    assert dropped > 0
    assert len(sent) + dropped == 6000
    assert sent[-3:] == batch(1999), "the newest points must survive"
    assert sent[0] != batch(0)[0], "the oldest points must be the ones dropped"
    assert sum(p.stat().st_size for p in tmp_path.glob("*.seg")) <= 1 << 16
    spool.close()


def test_second_process_on_the_same_spool_is_refused(tmp_path):
    spool = Spool(tmp_path, max_bytes=1 << 20)
    with pytest.raises(SpoolBusy, match="in use"):
        Spool(tmp_path, max_bytes=1 << 20)
    spool.close()


def test_sink_counts_points_it_cannot_spool_and_keeps_running(tmp_path, monkeypatch):
    from netmon.sinks import influx
    from tests.influx.data import make_scored

    sink = influx.build(influx.Config(type="influx", url="http://127.0.0.1:9", spool_dir=str(tmp_path),
                                      close_timeout=0))

    def disk_full(lines):  # a fault a real disk cannot be made to show on demand here
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sink.spool, "append", disk_full)
    sink.write(make_scored(1_700_000_000.0))
    assert health.snapshot()["influx.spool.dropped_points"] > 0
    monkeypatch.undo()
    sink.close()


def test_cursor_into_a_removed_segment_resumes_at_the_oldest_left(tmp_path):
    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=200)
    for k in range(10):
        spool.append(batch(k))
    spool.commit(spool.read(1))
    spool.close()
    first = min(tmp_path.glob("*.seg"))
    first.unlink()  # e.g. an operator freeing disk space by hand
    again = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=200)
    sent = drain(again)
    assert sent and sent[-3:] == batch(9)
    again.close()


def test_concurrent_append_and_send_keep_order_and_lose_nothing(tmp_path):
    import threading

    spool = Spool(tmp_path, max_bytes=1 << 24, segment_bytes=2048)
    done = threading.Event()

    def writer():
        for k in range(3000):
            spool.append(batch(k, n=2))
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    sent: list[bytes] = []
    while not (done.is_set() and not spool.pending_points()):
        records = spool.read(50)
        if records:
            spool.sync()
            sent += [line for r in records for line in r.lines]
            spool.commit(records)
    thread.join()
    assert sent == [line for k in range(3000) for line in batch(k, n=2)]
    spool.close()


def test_reopening_reads_each_segment_once_and_resumes_mid_segment(tmp_path, monkeypatch):
    """The open scans every segment once; the cursor's segment is not walked again to check the
    cursor and count the points already sent (it was read three times)."""
    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=200)
    for k in range(10):
        spool.append(batch(k))
    spool.commit(spool.read(4))  # two records: the cursor stops inside the first segment
    spool.close()
    reads: list[str] = []
    real_read_bytes, real_open = Path.read_bytes, open

    def read_bytes(path: Path) -> bytes:
        reads.append(path.name)
        return real_read_bytes(path)

    def opened(path, mode="r", *args, **kwargs):
        if "r" in mode and str(path).endswith(".seg"):
            reads.append(Path(path).name)
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    monkeypatch.setattr(spool_module, "open", opened, raising=False)
    again = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=200)
    segments = sorted(p.name for p in tmp_path.glob("*.seg"))
    assert sorted(reads) == segments, f"segments read at open: {sorted(reads)}, each of {segments} once expected"
    assert again.pending_points() == 24, "points sent before the restart not taken off what is pending"
    monkeypatch.undo()
    assert drain(again) == [line for k in range(2, 10) for line in batch(k)]
    again.close()
