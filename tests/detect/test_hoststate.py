"""Per-host state rows: found by key whatever the batch, kept apart, dropped when silent."""

from __future__ import annotations

import numpy as np

from netmon.detect.hoststate import Column, HostTable


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
