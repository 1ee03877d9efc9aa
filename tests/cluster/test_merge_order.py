"""A window's rows reach a scorer in whatever order its collectors' streams merge: the
intervals must not depend on it (issue 12: one process and a cluster, bit for bit)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from netmon.aggregate import Aggregator
from netmon.batch import Frames, HostIntervals
from netmon.config import Aggregate, Campus
from netmon.decode.frames import decode_frames
from netmon.sources.pcap import Config, PcapSource

CASE = Path(__file__).resolve().parents[1] / "cases" / "cluster-rows-sharing-a-time"
CAMPUS = Campus(internal=["10.20.0.0/16", "2001:db8:20::/48"])


def observations(path: Path) -> np.ndarray:
    """The capture's decoded rows, in capture order."""
    batches = PcapSource(Config(paths=[str(path)])).batches()
    return np.concatenate([decode_frames(b) for b in batches if isinstance(b, Frames)])


def aggregate(batches: list[np.ndarray]) -> list[HostIntervals]:
    aggregator = Aggregator(CAMPUS, Aggregate())
    for batch in batches:
        aggregator.insert(batch)
    return aggregator.flush()


def two_collectors(rows: np.ndarray, size: int) -> list[np.ndarray]:
    """The rows dealt one by one to two collectors, their batches of ``size`` arriving second's first."""
    first, second = rows[0::2], rows[1::2]
    out = []
    for at in range(0, max(first.shape[0], second.shape[0]), size):
        out += [second[at : at + size], first[at : at + size]]
    return out


def differences(a: list[HostIntervals], b: list[HostIntervals]) -> list[str]:
    """Each (interval, feature) whose hosts or values are not bit for bit the same."""
    if [(x.start, x.host.tolist()) for x in a] != [(y.start, y.host.tolist()) for y in b]:
        return ["other intervals or hosts"]
    return [f"{x.start:.0f} {name}" for x, y in zip(a, b) for name in x.features
            if not np.array_equal(x.features[name], y.features[name], equal_nan=True)]


def test_rows_sharing_a_time_give_the_same_intervals_whatever_order_the_collectors_deliver_them():
    rows = observations(CASE / "capture.pcap")
    assert (np.diff(rows["time"]) == 0).mean() > 0.5, "the case's capture should stamp whole seconds (many ties)"
    whole = aggregate([rows])
    for name, batches in [("two collectors, batches of 7", two_collectors(rows, 7)),
                          ("two collectors, batches of 100", two_collectors(rows, 100)),
                          ("the capture backwards, one row at a time", [rows[i : i + 1] for i in range(rows.shape[0])][::-1])]:
        assert not differences(whole, aggregate(batches)), f"{name}: {differences(whole, aggregate(batches))[:5]}"


def test_rows_sharing_a_time_are_taken_in_the_order_their_senders_stamped_them():
    """A request and its reply in one second: the reply's transmit timestamp is the later one, so
    the next request's origin is checked against it and matches (as the capture's order says)."""
    expected = json.loads((CASE / "expected.json").read_text())
    intervals = aggregate([observations(CASE / "capture.pcap")])
    got = {name: int(sum(np.nansum(iv.features[name]) for iv in intervals)) for name in expected}
    assert got == expected, f"origin checks of rows sharing a time: {got}, expected {expected}"
