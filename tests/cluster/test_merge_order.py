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


def test_a_hosts_intervals_do_not_depend_on_other_hosts_traffic_in_its_silent_windows():
    """A partition's aggregator sees only its hosts: windows where none of them spoke are never
    computed there, while one process computes them for the rest of the campus. A socket or
    (host, server) pair silent past its memory must be forgotten alike in both, not kept by the
    one whose sweeps happened to come later."""
    from tests.aggregate.craft import Traffic, by_host, campus, settings

    host, other, server = "10.0.0.1", "10.0.0.2", "192.0.2.1"

    def traffic(with_other: bool) -> np.ndarray:
        t = Traffic()
        last = 0
        for time in (30.0, 1290.0, 12790.0, 12850.0):  # gaps past the socket memory, then the pairs'
            sent = t.request(time, host, server, org=last, poll=10)
            last = t.reply(time + 0.02, server, host, org=sent, poll=10)
        if with_other:  # another partition's host, heard in every window
            t.ntpd(other, server, 5.0, 12900.0, poll=4)
        return t.rows()

    def alone(rows: np.ndarray) -> list[dict[str, float]]:
        aggregator = Aggregator(campus(), settings())
        return by_host(aggregator.add(rows) + aggregator.flush(), host)

    apart, together = alone(traffic(False)), alone(traffic(True))
    assert len(apart) == len(together) == 4
    for a, b in zip(apart, together):
        differ = [k for k in a if not (a[k] == b[k] or (np.isnan(a[k]) and np.isnan(b[k])))]
        assert not differ, f"with another host heard in between, {differ}: {[(a[k], b[k]) for k in differ]}"


def test_a_hosts_features_do_not_depend_on_which_other_hosts_share_its_interval():
    """A partition's scorer computes a window with its own hosts only, so a host's place among
    the window's hosts differs from one process's: its features must not depend on it, to the
    last bit (its ports' instances were summed in an order hashed from that place)."""
    from tests.aggregate.craft import Traffic, by_host, campus, settings

    host, server = "10.0.0.1", "192.0.2.1"

    def instances(others: int) -> list[float]:
        t = Traffic()
        for k in range(12):  # 12 ports, each asking faster than its advertised 64 s, at its own pace
            for time in np.arange(0.1 * k, 600.0, 5.0 + 1.37 * k):
                t.reply(time + 0.02, server, host, 40000 + k, org=t.request(time, host, server, 40000 + k))
        for i in range(others):
            t.ntpd(f"10.0.{1 + i // 200}.{1 + i % 200}", server, 3.0, 600.0, poll=6)
        aggregator = Aggregator(campus(), settings())
        return [row["instances"] for row in by_host(aggregator.add(t.rows()) + aggregator.flush(), host)]

    alone = instances(0)
    for others in (1, 7, 50, 300):
        assert instances(others) == alone, f"with {others} other hosts, instances {instances(others)} != {alone}"
