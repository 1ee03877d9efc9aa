"""The config names every bad key, the value and what is allowed; check-config says so."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from netmon.config import ConfigError, load, validate


def test_defaults_need_no_file():
    settings = load(None)
    assert settings.aggregate.interval == 60
    assert [s.type for s in settings.sinks] == ["store"], "the embedded store is the default sink"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"campus": {"internal": ["10.0.0.0/33"]}}, "campus.internal"),
        ({"campus": {"bogus": 1}}, "campus.bogus"),
        ({"aggregate": {"interval": -5}}, "aggregate.interval"),
        ({"sinks": [{"type": "nope"}]}, "sinks[0]: unknown sink type 'nope'; allowed:"),
        ({"sinks": [{"type": "store", "bogus": 3}]}, "sinks[0].bogus"),
        ({"sources": [{"type": "pcap"}]}, "sources[0].paths"),
        ({"sources": ["pcap"]}, "sources[0]: expected a table"),
        ({"detect": {"detectors": ["nope"]}}, "unknown detector 'nope'; allowed: baseline, drift, hosts, population, rules"),
        ({"detect": {"rules": {"bogus": 1}}}, "detect.rules.bogus"),
        ({"aggregate": {"pair_window": 600}, "detect": {"hosts": {"window": 1800}}},
         "[detect.hosts] window (1800) must equal [aggregate] pair_window (600); leave window out"),
        ({"detect": {"hosts": {"window": 600}}}, "must equal [aggregate] pair_window (1800.0, its default)"),
    ],
)
def test_bad_config_names_the_key(data, expected):
    with pytest.raises(ConfigError) as info:
        validate(data, "test.toml")
    assert expected in str(info.value), f"error should name {expected!r}, said:\n{info.value}"


def test_hosts_window_follows_the_aggregate_pair_window():
    assert validate({"aggregate": {"pair_window": 600}}).detect.settings("hosts").window == 600
    kept = validate({"aggregate": {"pair_window": 600}, "detect": {"hosts": {"z": 3}}}).detect.settings("hosts")
    assert (kept.window, kept.z) == (600, 3), "deriving the window must keep the table's other keys"
    assert validate({}).detect.settings("hosts").window == validate({}).aggregate.pair_window


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as info:
        validate({"campus": {"bogus": 1}, "sinks": [{"type": "nope"}]})
    message = str(info.value)
    assert "campus.bogus" in message and "sinks[0]" in message, message


def test_unreadable_toml_is_a_clear_error(tmp_path: Path):
    bad = tmp_path / "netmon.toml"
    bad.write_text("[campus\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(bad)
    with pytest.raises(ConfigError, match="no such config file"):
        load(tmp_path / "missing.toml")


def test_check_config_exits_2_and_names_the_key(tmp_path: Path):
    bad = tmp_path / "netmon.toml"
    bad.write_text('[aggregate]\ninterval = "soon"\n')
    result = subprocess.run([sys.executable, "-m", "netmon", "check-config", str(bad)], capture_output=True, text=True)
    assert result.returncode == 2, result
    assert "aggregate.interval" in result.stderr and "'soon'" in result.stderr, result.stderr


def test_plugin_tables_are_typed_by_their_type():
    """Issue 11: sources and sinks are a discriminated union generated from the registry, not dicts."""
    from netmon import registry

    settings = validate({"sources": [{"type": "netflow", "listen": ["127.0.0.1:0"], "record_delay": 5}],
                         "sinks": [{"type": "store"}, {"type": "metrics", "buffer": {"when_full": "drop_newest"}}],
                         "detect": {"rules": {}}})
    source, (store, metrics) = settings.sources[0], settings.sinks
    assert isinstance(source, registry.plugin("source", "netflow").Config) and source.record_delay == 5
    assert isinstance(store, registry.plugin("sink", "store").Config)
    assert metrics.buffer.when_full == "drop_newest" and store.buffer.when_full == "block"
    assert isinstance(settings.detect.settings("rules"), registry.plugin("detector", "rules").Config)
    assert validate(settings.model_dump()) == settings, "a dumped config validates back to the same settings"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"sinks": [{"type": "store", "buffer": {"when_full": "drop"}}]}, "sinks[0].buffer.when_full"),
        ({"sinks": [{"path": "x.db"}]}, "sinks[0]: a sink table needs type = one of: alerts, evidence, influx, metrics, store"),
        ({"sources": [{"type": "netflow", "listen": ["nonsense"]}]}, "sources[0].listen"),
        ({"detect": {"nope": {}}}, "unknown table [detect.nope]; allowed:"),
        ({"pipeline": {"restart_initial": 5, "restart_max": 1}}, "restart_max (1.0) must be >= restart_initial"),
        ({"sinks": [{"type": "alerts", "queue_size": 1000}]},
         "sinks[0].queue_size: no longer a key: an alerts sink's queue is bounded in bytes, [sinks.hook_buffer]"),
        ({"sinks": [{"type": "store", "buffer_rows": 100000}]},
         "sinks[0].buffer_rows: no longer a key: the store's memory buffer is bounded in bytes, buffer_bytes"),
    ],
)
def test_typed_union_errors_still_name_the_key_and_the_fix(data, expected):
    with pytest.raises(ConfigError) as info:
        validate(data, "test.toml")
    assert expected in str(info.value), f"error should name {expected!r}, said:\n{info.value}"


def test_dumped_config_has_every_detector_table_to_edit():
    """Tools edit a dumped config (evaluate sets [detect.rules] allowed_servers): tables are dicts."""
    data = load(None).model_dump()
    data["detect"]["rules"]["allowed_servers"] = ["192.0.2.0/24"]
    assert validate(data).detect.settings("rules").allowed_servers == ["192.0.2.0/24"]


def test_reading_a_config_with_every_detector_imports_neither_river_nor_scipy():
    """check-config and the report commands read the config, which names the population detector; its
    river (and the scipy river imports, most of a second) is imported only when a model is made."""
    probe = ("import sys\nfrom netmon.config import load\nsettings = load(None)\nassert settings.detect.population\n"
             "print(sorted({m.split('.')[0] for m in sys.modules} & {'river', 'scipy'}))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", f"reading the config imported {done.stdout.strip()}"
