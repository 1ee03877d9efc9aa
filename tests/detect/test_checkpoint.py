"""Model state checkpoints: round trip, restart without an alert storm, bad files set aside."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from netmon import health
from netmon.config import Detect
from netmon.detect import checkpoint
from netmon.detect.engine import Engine
from tests.detect.fleet import Fleet
from tests.support.disk import fill, small_tmpfs

CASES = Path(__file__).resolve().parents[1] / "cases"

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


def _head_and_archive(path: Path) -> tuple[dict, zipfile.ZipFile]:
    line, _, payload = path.read_bytes().partition(b"\n")
    return json.loads(line), zipfile.ZipFile(io.BytesIO(payload))


def test_round_trip_keeps_arrays_and_json(tmp_path):
    path = tmp_path / "state.ckpt"
    states = {
        "a": {"hosts": np.array(["10.0.0.1", "2001:db8::/64"]), "mean": np.arange(6, dtype=np.float32).reshape(3, 2)},
        "b": {"learned": 12, "columns": ["x", "y"], "nested": {"v": 1.5}, "none": None},
    }
    checkpoint.save(path, states)
    back = checkpoint.load(path)
    np.testing.assert_array_equal(back["a"]["hosts"], states["a"]["hosts"])
    np.testing.assert_array_equal(back["a"]["mean"], states["a"]["mean"])
    assert back["a"]["mean"].dtype == np.float32
    assert back["b"] == states["b"]
    head, _ = _head_and_archive(path)
    assert head["magic"] == checkpoint.MAGIC and head["format"] == checkpoint.FORMAT and head["netmon"]


def test_checkpoint_holds_only_json_and_plain_arrays_no_pickle(tmp_path):
    path = tmp_path / "state.ckpt"
    engine = _engine(path, population={"min_learned": 50, "persist": 0.0})
    _feed(engine, Fleet.clients(40), 0.0, 1.0)
    assert engine.detectors["population"].models, "the population model learned nothing to checkpoint"
    engine.save()
    _, archive = _head_and_archive(path)
    names = archive.namelist()
    assert set(names) == {"state.json"} | {n for n in names if n.startswith("arrays/") and n.endswith(".npy")}, names
    for name in names:
        if name.endswith(".npy"):
            array = np.lib.format.read_array(io.BytesIO(archive.read(name)), allow_pickle=False)
            assert array.dtype != object, f"{name} is an object array (pickle inside)"


def test_bytes_are_refused_when_saving_nothing_opaque_goes_in(tmp_path):
    with pytest.raises(TypeError):
        checkpoint.save(tmp_path / "state.ckpt", {"b": {"blob": b"\x80\x04opaque"}})


@pytest.mark.parametrize("population, hours", [
    ({"min_learned": 50, "persist": 0.0}, 1.5),
    # a group above ``sample`` hosts is learned from a random draw each interval: the draws after
    # a restore (a cluster's lease handover) must be those one uninterrupted process makes, or the
    # forests part and the partition's scores and findings differ from then on
    ({"min_learned": 50, "persist": 0.0, "sample": 8}, 1.0),
], ids=["learns-every-host", "draws-a-sample-of-a-larger-group"])
def test_restored_population_forest_scores_and_learns_exactly_as_before(tmp_path, population, hours):
    path = tmp_path / "state.ckpt"
    fleet = Fleet.clients(60)
    first = _engine(path, population=population)
    _feed(first, fleet, 0.0, hours)
    first.save()
    second = _engine(path, population=population)
    for k in range(30):
        batch = fleet.interval(hours * HOUR + k * 60.0)
        a, b = first.process(batch), second.process(batch)
        np.testing.assert_array_equal(a.scores["population"], b.scores["population"],
                                      err_msg=f"restored population scores differ {k} intervals after the restore")
    assert np.isfinite(a.scores["population"]).any(), "the population model never scored"


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


def _write(path: Path, head: dict, payload: bytes) -> None:
    path.write_bytes(json.dumps(head).encode().ljust(checkpoint.HEADER_BYTES - 1) + b"\n" + payload)


def _archive(state: dict) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("state.json", json.dumps(state))
    return buffer.getvalue()


def test_checkpoint_of_another_format_gives_cold_start_and_is_kept_aside(tmp_path):
    path = tmp_path / "state.ckpt"
    payload = _archive({"dict": {}})
    _write(path, {**checkpoint.header(), "format": 99, "bytes": len(payload), "sha256": hashlib.sha256(payload).hexdigest()},
           payload)
    assert checkpoint.load(path) == {}
    assert len(_aside(path, "foreign")) == 1 and not path.exists()
    assert health.snapshot().get("detect.checkpoint.foreign") == 1


def test_checksum_mismatch_is_refused_before_the_archive_is_opened(tmp_path):
    path = tmp_path / "state.ckpt"
    checkpoint.save(path, {"a": {"n": np.arange(100)}})
    data = bytearray(path.read_bytes())
    data[-30] ^= 0xFF
    path.write_bytes(bytes(data))
    assert checkpoint.load(path) == {}
    assert len(_aside(path, "corrupt")) == 1
    assert health.snapshot().get("detect.checkpoint.corrupt") == 1


@pytest.mark.parametrize("case", ["checkpoint-pickle-runs-code", "checkpoint-pickle-missing-module",
                                  "checkpoint-npy-object-missing-module"])
def test_crafted_checkpoint_is_set_aside_never_run_and_models_start_cold(tmp_path, case, capsys):
    expected = json.loads((CASES / case / "expected.json").read_text())
    path = tmp_path / "models" / "state.ckpt"
    path.parent.mkdir()
    shutil.copy(CASES / case / "state.ckpt", path)
    for attempt in range(2):  # a crash loop would fail the second start too
        engine = _engine(path)
        assert len(engine.detectors["population"].models) == 0, "models did not start cold"
        engine.save()
        shutil.copy(CASES / case / "state.ckpt", path)
    assert not (tmp_path / "netmon-pwned").exists(), "the crafted checkpoint ran its code"
    assert len(_aside(path, expected["kind"])) >= 1, f"not set aside as {expected['kind']}"
    assert health.snapshot().get(f"detect.checkpoint.{expected['kind']}") == 2
    logged = capsys.readouterr()
    assert expected["reason"] in logged.out + logged.err, "the log does not say why the checkpoint was refused"


def test_checkpoint_is_written_periodically_not_only_at_stop(tmp_path):
    path = tmp_path / "state.ckpt"
    engine = _engine(path, checkpoint_every=0.2)
    fleet = Fleet.clients(20)
    k = 0
    deadline = time.monotonic() + 60

    def learned() -> int:
        """Hosts in the checkpoint on disk now (0 before the first periodic save)."""
        return len(checkpoint.load(path)["baseline"]["hosts"]) if path.exists() else 0

    # a save may land before every host was learned on a busy machine (an interval outlasts
    # the period): go on until one holds them all, never waiting a fixed time
    while learned() < 20 and time.monotonic() < deadline:
        engine.process(fleet.interval(k * 60.0))
        k += 1
    assert path.exists(), "no checkpoint written while running (only save() at stop would write one)"
    assert learned() == 20, f"no periodic checkpoint held the 20 learned hosts within 60 s ({learned()})"


def test_full_disk_fails_the_checkpoint_counted_and_the_models_run_on(tmp_path):
    with small_tmpfs(tmp_path / "disk", 256) as disk:
        path = disk / "state.ckpt"
        engine = _engine(path, checkpoint_every=0.001)
        fleet = Fleet.clients(200)
        engine.save()
        assert path.exists()
        before = path.read_bytes()
        filler = fill(disk)
        _feed(engine, fleet, 0.0, 0.3)
        failed = health.snapshot().get("detect.checkpoint.failed", 0)
        assert failed >= 1, "a checkpoint on a full disk did not fail as counted"
        assert path.read_bytes() == before, "a failed checkpoint damaged the previous one"
        assert [p.name for p in disk.iterdir() if p.name.startswith(".")] == [], "temporary file left on the full disk"
        filler.unlink()
        _feed(engine, fleet, 0.3 * HOUR, 0.05)
        assert path.read_bytes() != before, "the checkpoint was not retried once space came back"
        assert checkpoint.load(path)["baseline"]["hosts"].size == 200


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


def test_sigkill_mid_run_leaves_a_loadable_checkpoint_at_most_one_period_old(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    sample = Path(__file__).resolve().parents[2] / "deploy" / "samples" / "campus-runaway.pcap.gz"
    path = tmp_path / "models" / "state.ckpt"
    config = tmp_path / "netmon.toml"
    config.write_text(f'[campus]\ninternal = ["10.0.0.0/8"]\n[detect]\ncheckpoint = "{path}"\ncheckpoint_every = 0.05\n'
                      f'[[sinks]]\ntype = "store"\npath = "{tmp_path}/netmon.db"\n')
    netmon = str(Path(sys.executable).with_name("netmon"))
    proc = subprocess.Popen([netmon, "replay", "--config", str(config), str(sample)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not path.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert path.exists(), "no checkpoint while the replay ran"
        first = path.stat().st_mtime_ns
        while path.stat().st_mtime_ns == first and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)  # kill right after a periodic save replaced the first: saving goes on
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(30)
    states = checkpoint.load(path)
    assert set(states) >= {"population", "baseline", "drift"}, "the checkpoint left by a SIGKILL did not load"
    assert not _aside(path, "corrupt"), "a SIGKILL left a torn checkpoint"


@pytest.mark.parametrize("damage", [
    pytest.param(lambda f: f.update(feature=f["feature"] + 1000), id="split-feature-out-of-range"),
    pytest.param(lambda f: f.update(rng=f["rng"].astype(np.int64) - 2**40), id="generator-words-negative"),
    pytest.param(lambda f: f.update(height=40), id="height-too-large"),
    pytest.param(lambda f: f.update(l_mass=f["l_mass"][:, :3]), id="masses-misshapen"),
    pytest.param(lambda f: f.pop("threshold"), id="thresholds-missing"),
])
def test_checksummed_but_inconsistent_forest_starts_population_cold_others_keep_state(tmp_path, damage):
    path = tmp_path / "state.ckpt"
    engine = _engine(path, population={"min_learned": 50, "persist": 0.0})
    _feed(engine, Fleet.clients(40), 0.0, 1.0)
    states = {name: d.state() for name, d in engine.detectors.items() if hasattr(d, "state")}
    for model in states["population"]["models"].values():
        damage(model["forest"])
    checkpoint.save(path, states)
    restored = _engine(path, population={"min_learned": 50, "persist": 0.0})
    assert restored.detectors["population"].models == {}, "an inconsistent forest was loaded"
    assert len(restored.detectors["baseline"].table) == 40, "the other detectors lost their state"


def test_archive_that_would_expand_beyond_its_bound_is_refused_before_decompressing(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint, "EXPANDED_FREE", 1 << 20)
    path = tmp_path / "state.ckpt"
    checkpoint.save(path, {"a": {"zeros": np.zeros(1 << 19)}})  # 4 MiB of zeros deflate to a few KiB
    assert checkpoint.load(path) == {}
    assert len(_aside(path, "corrupt")) == 1, "the zip bomb was not set aside"


def test_a_detector_state_that_does_not_fit_starts_that_detector_cold_instead_of_stopping_the_start():
    engine = Engine(Detect(detectors=["rules", "baseline"]), restore=False)
    good = engine.state()
    engine.load_state({"rules": {"hosts": ["10.0.0.1"]}, "baseline": good["baseline"]})
    assert engine.detectors["rules"].streaks == {}, "a rules state missing its columns should leave rules cold"


def test_checkpoint_bytes_round_trip_and_foreign_bytes_are_refused_before_reading():
    states = {"rules": {"hosts": ["10.0.0.1"], "counts": [3], "ends": [60.0]}}
    assert checkpoint.loads(checkpoint.dumps(states)) == states
    with pytest.raises(checkpoint.CheckpointError, match="not a netmon checkpoint"):
        checkpoint.loads(b"\x80\x04junk that is not a checkpoint")


def test_a_population_state_of_other_forest_parameters_starts_cold_instead_of_failing_every_score(tmp_path):
    path = tmp_path / "state.ckpt"
    tables = {"population": {"min_learned": 50, "persist": 0.0, "height": 6}}
    fleet = Fleet.clients(60)
    first = _engine(path, **tables)
    _feed(first, fleet, 0.0, 1.5)
    assert first.detectors["population"].models, "the population model learned nothing to checkpoint"
    first.save()
    for changed in ({"height": 8}, {"height": 4}, {"n_trees": 12}, {"window_size": 100}):
        second = _engine(path, population={**tables["population"], **changed})
        assert not second.detectors["population"].models, f"a forest saved at height 6 was kept under {changed}"
        scores = second.process(fleet.interval(1.5 * HOUR)).scores["population"]
        assert np.isnan(scores).all(), f"a cold population model scored under {changed}"
    kept = _engine(path, **tables)
    assert kept.detectors["population"].models, "a state of the configured forest parameters was dropped"


def _population_state(path: Path) -> dict:
    engine = _engine(path, population={"min_learned": 50, "persist": 0.0, "sample": 8})
    _feed(engine, Fleet.clients(60), 0.0, 1.0)
    state = engine.state()["population"]
    assert state["models"] and "sampler" in state, "the population detector saved no models or no sampler"
    return state


def test_population_checkpoint_from_before_the_sampler_loads_its_models_and_draws_from_the_seed(tmp_path):
    state = _population_state(tmp_path / "state.ckpt")
    del state["sampler"]
    engine = _engine(tmp_path / "state.ckpt", restore=False, population={"sample": 8})
    engine.load_state({"population": state})
    population = engine.detectors["population"]
    assert set(population.models) == set(state["models"]), "an older checkpoint's models were not restored"
    seeded = np.random.default_rng(population.config.seed).bit_generator.state
    assert population.rng.bit_generator.state == seeded, "without a saved sampler the draws should start from the seed"


@pytest.mark.parametrize("sampler", [
    {"bit_generator": "MT19937"}, "PCG64", [1, 2], None, {"bit_generator": "PCG64"},
    {"state": "-1"}, {"state": "f" * 64}, {"inc": 5}, {"has_uint32": 2**70}, {"uinteger": -1},
])
def test_a_hand_edited_population_sampler_starts_the_model_cold_and_never_crashes(tmp_path, sampler):
    state = _population_state(tmp_path / "state.ckpt")
    if isinstance(sampler, dict) and "bit_generator" not in sampler:
        sampler = {**state["sampler"], **sampler}
    state["sampler"] = sampler
    engine = _engine(tmp_path / "state.ckpt", restore=False, population={"sample": 8})
    engine.load_state({"population": state})
    assert engine.detectors["population"].models == {}, f"sampler {str(sampler)[:60]} was taken as a position"
