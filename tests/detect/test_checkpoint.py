"""Model state checkpoints: round trip, restart without an alert storm, bad files set aside."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from netmon import health
from netmon.config import Detect
from netmon.detect import checkpoint
from netmon.detect.engine import Engine
from tests.detect.fleet import Fleet

HOUR = 3600.0
MODELS = ["population", "baseline", "drift"]
#: Short warm-ups so a test needs hours, not a day, of intervals.
QUICK = {"baseline": {"warmup": 2 * HOUR}, "drift": {"warmup": 2 * HOUR}}


def _engine(path: Path, restore: bool = True, **tables) -> Engine:
    settings = {"detectors": MODELS, "checkpoint": str(path), **QUICK, **tables}
    return Engine(Detect.model_validate(settings), restore=restore)


def _feed(engine: Engine, fleet: Fleet, start: float, hours: float) -> list:
    found = []
    for k in range(int(hours * 60)):
        found.extend(engine.process(fleet.interval(start + k * 60.0)).findings)
    return found


def _aside(path: Path, kind: str) -> list[Path]:
    return sorted(path.parent.glob(f"{path.name}.{kind}-*"))


def test_round_trip_keeps_arrays_bytes_and_json(tmp_path):
    path = tmp_path / "state.ckpt"
    states = {
        "a": {"hosts": np.array(["10.0.0.1", "2001:db8::/64"]), "mean": np.arange(6, dtype=np.float32).reshape(3, 2)},
        "b": {"blob": b"\x00\x01river", "learned": 12, "columns": ["x", "y"], "nested": {"v": 1.5}},
    }
    checkpoint.save(path, states)
    back = checkpoint.load(path)
    np.testing.assert_array_equal(back["a"]["hosts"], states["a"]["hosts"])
    np.testing.assert_array_equal(back["a"]["mean"], states["a"]["mean"])
    assert back["a"]["mean"].dtype == np.float32
    assert back["b"] == states["b"]
    with zipfile.ZipFile(path) as archive:
        head = json.loads(archive.read("header.json"))
    assert head["magic"] == checkpoint.MAGIC and head["format"] == checkpoint.FORMAT and head["netmon"]


def test_restart_from_checkpoint_keeps_baselines_and_sends_no_alert_storm(tmp_path):
    path = tmp_path / "models" / "state.ckpt"
    fleet = Fleet.clients(80)
    first = _engine(path)
    assert not _feed(first, fleet, 0.0, 3.0), "a steady fleet raised findings before the restart"
    first.save()
    assert path.exists(), "no checkpoint written"

    restored = _engine(path)
    batch = fleet.interval(3.0 * HOUR)
    scored = restored.process(batch)
    for name in MODELS:
        assert np.isfinite(scored.scores[name]).mean() > 0.9, f"{name} came back cold after a restore"
    assert not scored.findings and not _feed(restored, fleet, 3.0 * HOUR + 60, 1.0), "alerts after restore"

    cold = _engine(path, restore=False).process(batch)
    assert np.isnan(cold.scores["baseline"]).all(), "a fresh engine should have no baseline yet"


def test_restored_baseline_still_flags_what_it_flagged_before(tmp_path):
    path = tmp_path / "state.ckpt"
    fleet = Fleet.clients(40, periods=(64.0,))
    fleet.flow = True  # request volume: the baseline's to judge in flow records
    fleet.add(3, 1.0, 0.0, start=3 * HOUR)
    engine = _engine(path)
    before = _feed(engine, fleet, 0.0, 3.5)
    assert any(f.host == fleet.hosts[3] for f in before), "the flood was not flagged before the restart"
    engine.save()
    again = _engine(path).process(fleet.interval(3.5 * HOUR))
    assert any(f.host == fleet.hosts[3] for f in again.findings), "restored models forgot the ongoing anomaly"


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda p: p.write_bytes(b"not a checkpoint at all"), id="garbage"),
        pytest.param(lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), id="truncated"),
        pytest.param(lambda p: p.write_bytes(b""), id="empty"),
    ],
)
def test_corrupt_checkpoint_gives_cold_start_and_is_kept_aside(tmp_path, damage):
    path = tmp_path / "state.ckpt"
    engine = _engine(path)
    _feed(engine, Fleet.clients(20), 0.0, 0.5)
    engine.save()
    damage(path)
    original = path.read_bytes()
    cold = _engine(path)
    assert not path.exists(), "the corrupt checkpoint was left in place"
    kept = _aside(path, "corrupt")
    assert len(kept) == 1 and kept[0].read_bytes() == original, "corrupt file not kept aside unchanged"
    assert health.snapshot().get("detect.checkpoint.corrupt") == 1
    assert len(cold.detectors["baseline"].table) == 0, "models did not start cold"
    cold.save()
    assert checkpoint.load(path), "a fresh checkpoint cannot be written after a corrupt one"


@pytest.mark.parametrize("field,value", [("format", 99), ("river", "0.0.1")])
def test_checkpoint_from_another_version_gives_cold_start_and_is_kept_aside(tmp_path, field, value):
    path = tmp_path / "state.ckpt"
    head = {**checkpoint.header(), field: value}
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("header.json", json.dumps(head))
        archive.writestr("state.json", json.dumps({"dict": {}}))
    assert checkpoint.load(path) == {}
    assert len(_aside(path, "foreign")) == 1 and not path.exists()
    assert health.snapshot().get("detect.checkpoint.foreign") == 1


def test_state_for_other_features_is_dropped_not_crashed_on(tmp_path):
    path = tmp_path / "state.ckpt"
    engine = _engine(path)
    _feed(engine, Fleet.clients(20), 0.0, 0.5)
    engine.save()
    other = _engine(path, baseline={"features": ["requests_out"]}, drift={"features": {"requests_out": {"allowance": 1.0, "floor": 10.0}}})
    assert len(other.detectors["baseline"].table) == 0 and len(other.detectors["drift"].table) == 0


def test_failed_save_leaves_previous_checkpoint_and_no_temp_file(tmp_path):
    path = tmp_path / "state.ckpt"
    checkpoint.save(path, {"a": {"n": 1}})
    before = path.read_bytes()
    with pytest.raises(TypeError):
        checkpoint.save(path, {"a": {"n": object()}})
    assert path.read_bytes() == before, "a failed save damaged the previous checkpoint"
    assert [p.name for p in tmp_path.iterdir()] == ["state.ckpt"], "temporary file left behind"
