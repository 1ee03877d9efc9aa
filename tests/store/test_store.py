"""The embedded store: what a run writes, what readers get back, retention, bad files."""

from __future__ import annotations

import math
import sqlite3

import numpy as np
import pytest

from netmon.aggregate import Aggregator
from netmon.batch import FEATURES, Finding, HostIntervals, Scored
from netmon.config import ConfigError, validate
from netmon.detect import rules
from netmon.sinks.store import Config, Store, StoreError, StoreReader, build
from tests.aggregate.craft import Traffic, campus, settings

DAY = 86400.0


def interval(start: float, hosts: list[str], score: float = 0.0, finding: bool = False) -> Scored:
    n = len(hosts)
    features = {name: np.zeros(n) for name in FEATURES}
    features["requests_out"] = np.arange(1, n + 1, dtype=float)
    features["poll"] = np.full(n, np.nan)
    iv = HostIntervals(start=start, end=start + 60, host=np.array(hosts), group=np.array(["clients"] * n),
                       role=np.array(["client"] * n), features=features)
    findings = [Finding(hosts[0], "clients", start, start + 60, "rule.kod_ignored", "critical", score,
                        "KoD ignored", {"after_kod": {"value": 9.0, "baseline": 0.0}}, "192.0.2.1")] if finding else []
    return Scored(iv, {"rules": np.array([score] + [0.0] * (n - 1))}, findings)


def test_written_intervals_and_findings_read_back(tmp_path):
    store = Store(tmp_path / "s.db")
    store.write(interval(0, ["10.0.0.1", "10.0.0.2"], score=5.0, finding=True))
    store.write(interval(60, ["10.0.0.1"]))
    store.close()
    with StoreReader(tmp_path / "s.db") as reader:
        top = reader.top_hosts(10)
        assert [r["host"] for r in top] == ["10.0.0.1", "10.0.0.2"]
        assert top[0]["score"] == 5.0 and top[0]["findings"] == 1 and top[0]["reason"] == "KoD ignored"
        rows = reader.host_intervals("10.0.0.1")
        assert [r["start"] for r in rows] == [0, 60]
        assert rows[0]["requests_out"] == 1 and math.isnan(rows[0]["poll"]), "NaN features read back as NaN"
        assert rows[0]["score_rules"] == 5.0
        (finding,) = reader.host_findings("10.0.0.1")
        assert finding["evidence"] == {"after_kod": {"value": 9.0, "baseline": 0.0}}
        assert finding["server"] == "192.0.2.1" and finding["detector"] == "rule.kod_ignored"


def test_replaying_the_same_interval_twice_replaces_rather_than_doubles(tmp_path):
    store = Store(tmp_path / "s.db")
    store.write(interval(0, ["10.0.0.1"], score=2.0, finding=True))
    store.write(interval(0, ["10.0.0.1"], score=2.0, finding=True))
    store.close()
    with StoreReader(tmp_path / "s.db") as reader:
        assert len(reader.host_intervals("10.0.0.1")) == 1
        assert len(reader.host_findings("10.0.0.1")) == 1


@pytest.mark.parametrize("start", [1764790800.0, 1764790800.1, 2.0 ** 53 + 2.0, 1e-7, -60.0])
def test_interval_times_read_back_exactly_as_reals_and_a_second_write_replaces(tmp_path, start):
    """Whole-second times go into the statement as text (not bound row by row), others are bound:
    either way the stored time is the very float written, so a replay replaces the same key."""
    store = Store(tmp_path / "s.db")
    store.write(interval(start, ["10.0.0.1", "10.0.0.2"], score=1.0))
    store.write(interval(start, ["10.0.0.1"], score=2.0))
    store.close()
    with sqlite3.connect(tmp_path / "s.db") as db:
        rows = db.execute('SELECT host, start, "end", typeof(start), typeof("end"), layout, typeof(layout), score'
                          " FROM intervals ORDER BY host").fetchall()
    assert rows == [("10.0.0.1", start, start + 60, "real", "real", 1, "integer", 2.0),
                    ("10.0.0.2", start, start + 60, "real", "real", 1, "integer", 0.0)], \
        f"interval times or layout not stored exactly as written: {rows}"


def test_retention_deletes_what_ended_before_the_window_in_event_time(tmp_path):
    store = Store(tmp_path / "s.db", retention_days=2)
    store.write(interval(0, ["10.0.0.1"], finding=True))
    store.write(interval(1 * DAY, ["10.0.0.1"], finding=True))
    store.write(interval(3 * DAY, ["10.0.0.1"], finding=True))
    store.close()
    with StoreReader(tmp_path / "s.db") as reader:
        assert [r["start"] for r in reader.host_intervals("10.0.0.1")] == [1 * DAY, 3 * DAY]
        assert [r["start"] for r in reader.host_findings("10.0.0.1")] == [1 * DAY, 3 * DAY]


def test_new_score_columns_are_added_to_an_existing_file(tmp_path):
    store = Store(tmp_path / "s.db")
    scored = interval(0, ["10.0.0.1"])
    scored.scores["population"] = np.array([0.7])
    store.write(scored)
    store.close()
    with StoreReader(tmp_path / "s.db") as reader:
        (row,) = reader.host_intervals("10.0.0.1")
        assert row["score_population"] == pytest.approx(0.7) and row["score"] == pytest.approx(0.7)


def test_sink_records_the_replayed_files_with_event_times(tmp_path):
    capture = tmp_path / "a.pcap"
    capture.write_bytes(b"")
    run_settings = validate({"sources": [{"type": "pcap", "paths": [str(capture)]}]})
    sink = build(Config(path=str(tmp_path / "s.db")), run_settings)
    sink.write(interval(120, ["10.0.0.1"]))
    sink.write(interval(180, ["10.0.0.1"]))
    sink.close()
    with StoreReader(tmp_path / "s.db") as reader:
        (item,) = reader.inputs()
    assert item["path"] == str(capture.resolve()) and (item["first"], item["last"]) == (120, 240)


def test_default_path_is_in_the_data_directory(tmp_path):
    assert Config().path == str(tmp_path / "netmon-data" / "netmon.db")  # NETMON_DATA_DIR (tests/conftest.py)


def test_reader_on_a_missing_file_says_how_to_make_one(tmp_path):
    with pytest.raises(StoreError, match="netmon replay"):
        StoreReader(tmp_path / "none.db")


def test_a_file_that_is_not_sqlite_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="bad.db"):
        Store(bad)
    with pytest.raises(StoreError, match="bad.db"):
        StoreReader(bad)


def test_bad_store_config_names_the_key():
    with pytest.raises(ConfigError, match="retention_days"):
        validate({"sinks": [{"type": "store", "retention_days": 0}]})
    with pytest.raises(ConfigError, match="retension"):
        validate({"sinks": [{"type": "store", "retension": 3}]})


def test_the_file_uses_write_ahead_logging(tmp_path):
    Store(tmp_path / "s.db").close()
    assert sqlite3.connect(tmp_path / "s.db").execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_real_aggregated_intervals_store_every_feature(tmp_path):
    t = Traffic()
    t.runaway("10.0.0.9", "192.0.2.1", 0, 300, instances=6, kod_from=0)
    aggregator = Aggregator(campus(), settings())
    detector = rules.build(rules.Config())
    store = Store(tmp_path / "s.db")
    for iv in aggregator.add(t.rows()) + aggregator.flush():
        out = detector.score(iv)
        store.write(Scored(iv, out.scores, out.findings))
    store.close()
    with StoreReader(tmp_path / "s.db") as reader:
        rows = reader.host_intervals("10.0.0.9")
        assert set(FEATURES) <= set(rows[0])
        assert sum(r["after_kod"] for r in rows) > 0
        assert {f["detector"] for f in reader.host_findings("10.0.0.9")} >= {"rule.kod_ignored"}


def test_check_config_hook_reports_a_file_that_is_not_a_store_and_creates_nothing(tmp_path):
    from netmon.sinks.store import check

    assert check(Config(path=str(tmp_path / "new" / "n.db"))) == []
    assert not (tmp_path / "new").exists(), "checking must not create the store"
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"not sqlite" * 100)
    (problem,) = check(Config(path=str(bad)))
    assert "bad.db" in problem
