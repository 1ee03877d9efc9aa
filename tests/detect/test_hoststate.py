"""Per-host state rows: found by key whatever the batch, kept apart, dropped when silent."""

from __future__ import annotations

import numpy as np

from netmon.detect.hoststate import Column, HostKeys, HostTable, categories, windowed


def _table() -> HostTable:
    return HostTable({"value": Column("f4", 0, np.nan)}, capacity=2)


def test_a_host_keeps_its_row_whatever_else_is_in_the_batch():
    table = _table()
    first = table.rows(np.array(["10.0.0.1", "10.0.0.2"]))
    wider = table.rows(np.array(["2001:db8:1:2::/64", "10.0.0.2", "10.0.0.1"]))
    alone = table.rows(np.array(["10.0.0.1"], dtype=object))
    assert wider[2] == first[0] and wider[1] == first[1] and alone[0] == first[0], "row moved with the batch's width"
    assert len(table) == 3 and len(set(wider.tolist())) == 3, "distinct hosts share a row"


def test_duplicate_new_hosts_in_one_batch_share_one_row():
    table = _table()
    rows = table.rows(np.array(["10.0.0.9", "10.0.0.9", "10.0.0.8"]))
    assert rows[0] == rows[1] != rows[2] and len(table) == 2


def test_prune_drops_silent_hosts_and_keeps_the_others_findable():
    table = _table()
    rows = table.rows(np.array([f"10.0.0.{i}" for i in range(50)]))
    table["value"][rows] = np.arange(50, dtype=np.float32)
    table.prune(table["value"] % 2 == 0)
    assert len(table) == 25
    again = table.rows(np.array(["10.0.0.40", "10.0.0.3"]))
    assert table["value"][again[0]] == 40.0, "a kept host lost its state"
    assert np.isnan(table["value"][again[1]]), "a pruned host came back with old state"


def test_state_round_trip_restores_rows_by_key():
    table = _table()
    rows = table.rows(np.array(["a", "bb", "ccc"]))
    table["value"][rows] = [1.0, 2.0, 3.0]
    back = _table()
    back.load(table.state())
    assert back["value"][back.rows(np.array(["ccc", "a"]))].tolist() == [3.0, 1.0]


def test_a_host_seen_later_than_the_batch_starts_over_instead_of_decaying_backwards():
    from netmon.batch import HostIntervals
    from netmon.detect.drift import Config, Drift

    model = Drift(Config())

    def batch(end: float) -> HostIntervals:
        features = {"requests_out": np.array([3.0]), "rate_vs_poll": np.array([1.0]), "org_mismatch": np.array([0.0])}
        return HostIntervals(start=end - 60.0, end=end, host=np.array(["10.0.0.1"]), group=np.array(["clients"]),
                             role=np.array(["client"]), features=features)

    for end in (3600.0, 3660.0):
        model.learn(batch(end), np.ones(1, dtype=bool))
    replayed = model.visit(batch(120.0))  # an older capture replayed after a checkpoint from a later one
    assert replayed.fresh.all() and np.isnan(replayed.elapsed).all()
    assert np.isfinite(replayed.sums).all() and (replayed.sums >= 0).all()


def test_windowed_features_do_not_depend_on_the_other_features_beside_them():
    """Counts and levels, each with its own window, give the same values computed together as one at a time
    (the function works on the count and the level columns separately, and shares work between equal windows)."""
    rng = np.random.default_rng(4)
    n = 500
    sums = (rng.random((n, 4)) * 50).astype(np.float32)
    sums[rng.random((n, 4)) < 0.2] = np.nan
    elapsed = rng.random(n) * 4000
    elapsed[rng.random(n) < 0.3] = np.nan
    age = rng.random(n) * 9000
    values = rng.random((n, 4)) * 40 - 2
    values[rng.random((n, 4)) < 0.3] = np.nan
    rates = np.array([True, False, True, False])
    priors = np.array([0.0, 1.0, 0.0, 3.0])
    window = np.array([1800.0, 1800.0, 21600.0, 600.0])
    state, current = windowed(sums, elapsed, age, 60.0, window, values, rates, priors)
    assert state.dtype == current.dtype == np.float64
    for j in range(4):
        alone = windowed(sums[:, [j]], elapsed, age, 60.0, window[[j]], values[:, [j]], rates[[j]], priors[[j]])
        assert np.array_equal(state[:, [j]], alone[0], equal_nan=True), f"feature {j}: state differs beside others"
        assert np.array_equal(current[:, [j]], alone[1], equal_nan=True), f"feature {j}: current differs beside others"
    assert np.isnan(current[np.isnan(values)]).all(), "a feature this interval did not know must read NaN"


def test_rows_found_through_the_intervals_keys_are_the_rows_found_by_hashing_again():
    table = _table()
    known = np.array([f"10.0.{i // 256}.{i % 256}" for i in range(3000)])
    table.rows(known)
    batch = np.random.default_rng(2).permutation(np.concatenate([known[::7], ["10.9.9.9", "2001:db8::/64"]]))
    by_keys = table.rows(batch, HostKeys.of(batch))
    assert np.array_equal(by_keys, table.rows(batch)), "the shared sorted lookup found other rows"
    assert [table.keys[r] for r in by_keys] == batch.tolist(), "a host was given another host's row"


def test_keys_among_names_is_exactly_membership_by_string(monkeypatch):
    hosts = np.array([f"10.0.{i // 256}.{i % 256}" for i in range(2000)] + ["2001:db8:1:2::/64"])
    keys = HostKeys.of(hosts)
    names = {"10.0.0.7", "10.0.3.200", "2001:db8:1:2::/64", "10.99.0.1"}  # the last is not in the interval
    assert np.array_equal(keys.among(names), np.isin(hosts, list(names)))
    assert not keys.among(set()).any() and keys.among(set()).shape == hosts.shape
    # every key hashing alike (a collision on every row): the string comparison still decides
    monkeypatch.setattr("netmon.detect.hoststate.host_hashes", lambda h: np.zeros(len(h), dtype=np.uint64))
    colliding = HostKeys.of(hosts)
    assert np.array_equal(colliding.among(names), np.isin(hosts, list(names))), "a hash collision flagged another host"


def test_an_empty_interval_hashes_to_no_keys():
    assert HostKeys.of(np.array([], dtype=str)).hashes.shape == (0,)


def test_categories_are_numpy_unique_with_its_inverse_for_few_or_many_values():
    rng = np.random.default_rng(3)
    columns = [
        np.array(["residences", "labs", "clients", "labs"])[rng.integers(0, 4, 5000)],
        np.array([f"hall-{k}" for k in range(40)])[rng.integers(0, 40, 5000)],  # more than the fast path takes
        rng.integers(-5, 40, 3000) * 7,
        np.array(["only"]),
        np.array([], dtype=str),
    ]
    for values in columns:
        names, inverse = categories(values)
        want_names, want_inverse = np.unique(values, return_inverse=True)
        assert names.dtype == want_names.dtype and np.array_equal(names, want_names), f"names differ for {values[:5]}"
        assert np.array_equal(inverse, want_inverse), f"inverse differs for {values[:5]}"
