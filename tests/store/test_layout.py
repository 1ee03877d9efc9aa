"""The packed row layout (schema 2): features read back exactly, an old (schema 1) file is read
as it is and converted in place by a writer, a damaged packed row is a clear error."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from netmon import health
from netmon.batch import FEATURES
from netmon.cli import main
from netmon.sinks import store as store_module
from netmon.sinks import store_rows
from netmon.sinks.store import COLUMN_FEATURES, Store, StoreError, StoreReader
from tests.store.test_store import interval

CASE = Path(__file__).resolve().parents[1] / "cases" / "store-schema-1"
EXPECTED = json.loads((CASE / "expected.json").read_text())
HOSTS = list(EXPECTED["host_intervals"])


def _plain(value):
    """As expected.json writes it: NaN as the string "NaN"."""
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _read_all(path: Path) -> dict:
    with StoreReader(path) as reader:
        return _plain({
            "top_hosts": reader.top_hosts(10),
            "host_intervals": {h: reader.host_intervals(h) for h in HOSTS},
            "host_findings": {h: reader.host_findings(h) for h in HOSTS},
            "inputs": [{k: v for k, v in row.items() if k != "recorded"} for row in reader.inputs()],
        })


@pytest.fixture
def old_file(tmp_path) -> Path:
    path = tmp_path / "netmon.db"
    shutil.copy(CASE / "netmon.db", path)
    return path


def _schema(path: Path) -> tuple[str, list[str], list[str]]:
    with sqlite3.connect(path) as db:
        version = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()[0]
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        columns = [row[1] for row in db.execute("PRAGMA table_info(intervals)")]
    return version, tables, columns


def test_pack_reads_back_every_value_exactly_nan_zero_and_missing_included():
    names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"]  # 9: the bitmaps take two bytes each
    features = {
        "a": np.array([0.0, 1.0, np.nan, 1e300]),
        "b": np.array([np.nan] * 4),
        "c": np.zeros(4),
        "d": np.array([0.1, -2.5, 3.0, 5e-324]),
        "i": np.array([7.0, 0.0, np.nan, 1.0 / 3.0]),
    }
    blobs = store_rows.pack(features, names, 4)
    assert len(blobs) == 4
    for k, blob in enumerate(blobs):
        row = store_rows.unpack(blob, names)
        assert list(row) == names
        for name in names:
            want = features[name][k] if name in features else math.nan
            got = row[name]
            assert (math.isnan(want) and math.isnan(got)) or got == want, f"row {k} {name}: wrote {want}, read {got}"
    assert len(blobs[0]) == 4 + 8 * 2, "a row keeps only its non-zero, known values after the two bitmaps"
    assert store_rows.pack({"a": np.array([])}, names, 0) == [], "an empty interval packs to no rows"
    order = np.array([2, 0, 3, 1])
    assert store_rows.pack(features, names, 4, order) == [blobs[i] for i in order], "rows not packed in the order asked"


def test_pack_in_blocks_gives_each_row_the_blob_it_gets_alone(monkeypatch):
    """Rows are packed a block at a time (columns all NaN or zero in one block and not in the
    next, rows asked for twice or not at all): each blob is the one its row packs to alone."""
    rng = np.random.default_rng(7)
    names = [f"f{j}" for j in range(21)]
    n = 50
    features = {name: rng.choice([0.0, np.nan, 2.5, -1e-300], n) for name in names[:19]}
    features["f0"][:20] = 0.0
    features["f1"][20:] = np.nan
    order = np.concatenate([rng.permutation(n)[:40], [3, 3, 49]])
    alone = [store_rows.pack({k: v[i:i + 1] for k, v in features.items()}, names, 1)[0] for i in range(n)]
    monkeypatch.setattr(store_rows, "BLOCK", 7)
    assert store_rows.pack(features, names, n) == alone, "a row packed in a block differs from the row alone"
    assert store_rows.pack(features, names, n, order) == [alone[i] for i in order], "rows not in the order asked"


def test_a_packed_row_that_does_not_fit_its_layout_is_a_value_error():
    (blob,) = store_rows.pack({"a": np.array([1.0]), "b": np.array([2.0])}, ["a", "b"], 1)
    with pytest.raises(ValueError, match="do not fit"):
        store_rows.unpack(blob[:-1], ["a", "b"])
    with pytest.raises(ValueError, match="do not fit"):
        store_rows.unpack(blob, ["a", "b", "c"])
    with pytest.raises(ValueError, match="shorter"):
        store_rows.unpack(b"", ["a"])


def test_a_new_store_packs_features_and_keeps_the_ranked_ones_as_columns(tmp_path):
    store = Store(tmp_path / "s.db")
    store.write(interval(0, ["10.0.0.1", "10.0.0.2"], score=5.0))
    store.close()
    version, tables, columns = _schema(tmp_path / "s.db")
    assert version == "2" and "layouts" in tables
    assert columns[:6] == ["host", "grp", "role", "start", "end", "score"], "(host, start) stay columns 0 and 3"
    assert set(COLUMN_FEATURES) <= set(columns) and {"layout", "features", "score_rules"} <= set(columns)
    assert not set(FEATURES) - set(COLUMN_FEATURES) & set(columns), "the other features are packed"
    with sqlite3.connect(tmp_path / "s.db") as db:  # what plain SQL (tests, sqlite3 shell) still reads
        assert dict(db.execute("SELECT host, requests_out FROM intervals")) == {"10.0.0.1": 1.0, "10.0.0.2": 2.0}


def test_an_old_layout_file_reads_as_before_and_is_not_changed_by_reading(old_file):
    before = hashlib.sha256(old_file.read_bytes()).hexdigest()
    assert _read_all(old_file) == EXPECTED
    assert hashlib.sha256(old_file.read_bytes()).hexdigest() == before, "a reader must not convert or touch the file"
    assert _schema(old_file)[0] == "1"


def test_a_writer_converts_an_old_layout_file_in_place_keeping_every_value(old_file):
    Store(old_file).close()
    version, tables, columns = _schema(old_file)
    assert version == "2" and "intervals_v1" not in tables and "features" in columns
    assert _read_all(old_file) == EXPECTED, "the converted file reads differently from the old one"


def test_writes_after_the_conversion_replace_by_host_and_interval(old_file):
    start = EXPECTED["host_intervals"]["10.0.0.1"][-1]["start"]
    store = Store(old_file)
    store.write(interval(start, ["10.0.0.1"], score=9.0))  # the same (host, start) as a converted row
    store.write(interval(start + 60, ["10.0.0.1"]))
    store.close()
    with StoreReader(old_file) as reader:
        rows = reader.host_intervals("10.0.0.1")
    assert [r["start"] for r in rows] == [r["start"] for r in EXPECTED["host_intervals"]["10.0.0.1"]] + [start + 60]
    assert rows[-2]["score"] == 9.0 and rows[-2]["requests_out"] == 1.0, "the rewritten interval replaced the old row"
    assert rows[0]["score_model_population"] == EXPECTED["host_intervals"]["10.0.0.1"][0]["score_model_population"]


def test_a_conversion_that_fails_midway_leaves_the_old_file_as_it_was(old_file, monkeypatch):
    monkeypatch.setattr(store_module, "MIGRATE_ROWS", 5)
    calls = []

    def failing_pack(*args):
        calls.append(1)
        if len(calls) == 2:  # a fault a real disk rarely shows on demand: the second chunk fails
            raise sqlite3.OperationalError("disk I/O error")
        return store_rows.pack(*args)

    monkeypatch.setattr(store_module.store_rows, "pack", failing_pack)
    with pytest.raises(StoreError):
        Store(old_file)
    monkeypatch.undo()
    assert _schema(old_file)[0] == "1" and _read_all(old_file) == EXPECTED


def test_hosts_and_report_commands_read_an_old_layout_file(old_file):
    runner = CliRunner()
    hosts = runner.invoke(main, ["hosts", "--db", str(old_file)])
    assert hosts.exit_code == 0, hosts.output
    assert hosts.output.index("10.0.0.1") < hosts.output.index("10.0.0.2"), hosts.output
    report = runner.invoke(main, ["report", "10.0.0.1", "--db", str(old_file)])
    assert report.exit_code == 0, report.output
    assert "rule.kod_ignored" in report.output and "/captures/lab.pcap" in report.output.replace("\n", "")
    assert _schema(old_file)[0] == "1", "reading commands never convert"


def test_a_store_of_an_unknown_newer_schema_is_a_clear_error_and_left_alone(tmp_path):
    path = tmp_path / "s.db"
    Store(path).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema'")
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(StoreError, match="schema '99'") as raised:
        Store(path)
    assert not raised.value.corrupt, "a newer store must not be set aside as damaged"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


@pytest.mark.parametrize("edit", ["UPDATE intervals SET features = x'0102'",  # a row cut short
                                  "UPDATE layouts SET features = '5'"],  # a layout that is JSON, no list of names
                         ids=["row", "layout"])
def test_a_damaged_packed_row_is_a_clear_error_naming_the_host(tmp_path, edit):
    path = tmp_path / "s.db"
    store = Store(path)
    store.write(interval(0, ["10.0.0.1"]))
    store.close()
    with sqlite3.connect(path) as db:
        db.execute(edit)
    with StoreReader(path) as reader, pytest.raises(StoreError, match="10.0.0.1.*damaged"):
        reader.host_intervals("10.0.0.1")


def test_a_reader_opened_before_a_writer_converts_the_file_reads_the_converted_rows(old_file):
    with StoreReader(old_file) as reader:
        Store(old_file).close()  # the service starts while `netmon serve` or a report holds the file open
        assert _schema(old_file)[0] == "2"
        rows = _plain({h: reader.host_intervals(h) for h in HOSTS})
    assert rows == EXPECTED["host_intervals"], "a packed row whose layout came after the reader opened read differently"


def test_a_store_whose_layouts_table_is_not_json_is_a_clear_error(tmp_path):
    path = tmp_path / "s.db"
    Store(path).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE layouts SET features = '[not json'")
    with pytest.raises(StoreError, match="not a netmon store"):
        StoreReader(path)


def test_a_hand_edited_old_value_that_is_no_number_converts_as_unknown_and_counted(old_file):
    first = EXPECTED["host_intervals"]["10.0.0.1"][0]
    with sqlite3.connect(old_file) as db:  # SQLite keeps text put in a REAL column as text
        db.execute("UPDATE intervals SET bytes_out = 'abc' WHERE host = '10.0.0.1' AND start = ?", (first["start"],))
    Store(old_file).close()
    assert _schema(old_file)[0] == "2", "the file was not converted"
    assert health.snapshot().get("store.convert.unreadable_values") == 1
    expected = json.loads(json.dumps(EXPECTED["host_intervals"]))
    expected["10.0.0.1"][0]["bytes_out"] = "NaN"
    with StoreReader(old_file) as reader:
        assert _plain({h: reader.host_intervals(h) for h in HOSTS}) == expected, "other values changed in conversion"
