"""A window's rows are taken in one order whatever order they arrived in: by time, rows of one
time by their NTP transmit timestamp (a reply by the origin it echoes), then by their bytes (issue 12: a cluster's scorer and one
process must compute the same intervals bit for bit)."""

from __future__ import annotations

import numpy as np

from netmon.aggregate import in_time_order
from netmon.batch import OBS_DTYPE


def window(n: int, seed: int) -> np.ndarray:
    """Rows stamped in whole seconds (most share a time), a few of whose fields differ."""
    rng = np.random.default_rng(seed)
    rows = np.zeros(n, OBS_DTYPE)
    rows["time"] = 1_700_000_000.0 + rng.integers(0, 4, n)
    rows["xmt_ts"] = rng.integers(0, 3, n)
    rows["sport"] = rng.integers(0, 3, n)
    return rows


def expected_order(rows: np.ndarray) -> list[tuple[float, int, bytes]]:
    return sorted((float(r["time"]), int(r["xmt_ts"]), r.tobytes()) for r in rows)


def test_rows_are_ordered_by_time_then_transmit_timestamp_then_bytes_whatever_their_arrival():
    rows = window(500, 1)
    want = expected_order(rows)
    for seed in range(5):
        shuffled = rows[np.random.default_rng(seed).permutation(rows.shape[0])]
        held = shuffled.copy()
        got = in_time_order(shuffled)
        assert [(float(r["time"]), int(r["xmt_ts"]), r.tobytes()) for r in got] == want, \
            f"arrival order {seed} gave another order"
        assert got.dtype == OBS_DTYPE
        assert shuffled.tobytes() == held.tobytes(), "the caller's batch was reordered in place"


def test_rows_with_no_time_go_last_and_time_ordered_rows_without_ties_are_returned_as_they_are():
    rows = window(50, 2)
    rows["time"][[3, 17]] = np.nan
    got = in_time_order(rows)
    assert np.isnan(got["time"][-2:]).all() and not np.isnan(got["time"][:-2]).any(), "NaN times not last"
    assert sorted(got.tobytes()[i : i + OBS_DTYPE.itemsize] for i in range(0, got.nbytes, OBS_DTYPE.itemsize)) \
        == sorted(r.tobytes() for r in rows), "rows lost or changed"
    plain = np.zeros(4, OBS_DTYPE)
    plain["time"] = [1.0, 2.0, 3.0, 4.0]
    assert in_time_order(plain) is plain


def test_a_reply_sharing_a_second_with_its_request_follows_it_when_the_client_clock_is_ahead():
    """A client 0.5 s ahead of its server: the reply's transmit timestamp (server clock) is older
    than the request's, yet it answers that request; taken first, the client's next request
    would be judged against it and count an origin mismatch that never happened."""
    rows = np.zeros(3, OBS_DTYPE)
    rows["time"] = 1_700_000_000.0
    rows["ntp"] = 1
    second = 1 << 32
    rows["mode"] = [4, 3, 4]  # arrival: the reply, its request, another host's reply
    rows["xmt_ts"] = [100 * second, 100 * second + second // 2, 7 * second]
    rows["org_ts"] = [100 * second + second // 2, 0, 99 * second]
    got = in_time_order(rows)
    assert got["mode"].tolist() == [4, 3, 4] and got["xmt_ts"].tolist() == [7 * second, 100 * second + second // 2,
                                                                            100 * second], \
        f"the reply did not follow the request it answers: modes {got['mode'].tolist()}, xmt {got['xmt_ts'].tolist()}"
