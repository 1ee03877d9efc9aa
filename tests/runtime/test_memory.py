"""Issue 11 runtime, item 6 (memory): `netmon run` keeps counts and a bounded worst-N, not every
finding; an open aggregation window holds at most max_window_rows raw rows, each window its own
copy (never a slice keeping a whole batch alive), with volumes kept by weight."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from netmon import health
from netmon.aggregate import Aggregator
from netmon.batch import Finding, HostIntervals, Scored
from netmon.config import Aggregate, Campus
from netmon.decode.frames import decode_frames
from netmon.pipeline import SERVICE_KEEP, Summary
from netmon.sources.pcapfile import read_frames
from tests.runtime.support import INTERNAL, requests

CASE = Path(__file__).resolve().parents[1] / "cases" / "window-flood"


def scored_with_findings(k: int, hosts: int) -> Scored:
    iv = HostIntervals(start=60.0 * k, end=60.0 * (k + 1), host=np.array([], object), group=np.array([], object),
                       role=np.array([], object), features={})
    findings = [Finding(host=f"10.0.{h // 256}.{h % 256}", group="clients", start=60.0 * k, end=60.0 * (k + 1),
                        detector="rule.kod_ignored", severity="warning", score=float(h + k), explanation="x")
                for h in range(hosts)]
    return Scored(intervals=iv, scores={}, findings=findings)


def test_service_summary_keeps_counts_and_a_bounded_worst_n():
    summary = Summary(keep=5)
    for k in range(200):
        summary.add(scored_with_findings(k, hosts=50))
    assert summary.intervals == 200 and summary.finding_count == 200 * 50
    assert len(summary.findings) == 5, "a service must not keep every finding for its whole life"
    assert sorted(f.score for f in summary.findings) == [246.0, 246.0, 247.0, 247.0, 248.0]
    assert len(summary.worst) <= 10, f"hosts kept: {len(summary.worst)}"
    assert SERVICE_KEEP <= 1000


def test_replay_summary_keeps_every_finding():
    summary = Summary()
    for k in range(3):
        summary.add(scored_with_findings(k, hosts=4))
    assert len(summary.findings) == 12


def aggregator(max_rows: int) -> Aggregator:
    return Aggregator(Campus(internal=[INTERNAL]), Aggregate(interval=60, lateness=0, max_window_rows=max_rows))


def test_one_flooded_window_holds_at_most_max_window_rows_and_counts_every_packet():
    expected = json.loads((CASE / "expected.json").read_text())
    health.reset()
    agg = aggregator(expected["max_window_rows"])
    closed, peak = [], 0
    for frames in read_frames(CASE / "flood.pcap.gz"):
        for start in range(0, len(frames), 700):  # as a live source delivers: many small batches
            rows = decode_frames(frames)[start : start + 700]
            closed += agg.add(rows)
            peak = max(peak, int(health.snapshot()["aggregate.pending_rows"]))
    closed += agg.flush()
    assert peak <= expected["max_pending_rows"], f"the open window held {peak} raw rows"
    assert health.snapshot()["aggregate.thinned_rows"] > 0
    window = next(iv for iv in closed if iv.start == expected["window_start"])
    i = list(window.host).index(expected["host"])
    assert window.features["requests_out"][i] == expected["requests_out"], "thinned rows must carry their weight"
    assert window.features["bytes_out"][i] == expected["bytes_out"]


def test_parked_rows_do_not_keep_their_whole_batch_alive():
    agg = aggregator(1_000_000)
    rows = requests(1_700_000_000.0 + np.arange(100_000) * 0.001)
    rows["time"][0] = 1_700_000_000.0 + 3600  # one row in a window far ahead, open for long
    agg.add(rows)
    ahead = agg._pending[int((1_700_000_000 + 3600) // 60)]
    assert all(part.base is None for part in ahead), "a one-row window must own its row, not view the batch"


def test_flood_replay_gives_the_same_answer_every_time():
    def once() -> float:
        agg = aggregator(1000)
        out = []
        for frames in read_frames(CASE / "flood.pcap.gz"):
            out += agg.add(decode_frames(frames))
        out += agg.flush()
        return float(sum(np.nansum(iv.features["instances"]) + np.nansum(iv.features["requests_out"]) for iv in out))

    assert once() == once()
