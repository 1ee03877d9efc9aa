"""The pipeline wires stages by name and runs them in event time."""

from __future__ import annotations

from pathlib import Path

import pytest

from netmon import health, pipeline
from netmon.config import validate

SAMPLE = Path(__file__).resolve().parents[1] / "deploy" / "samples" / "campus-runaway.pcap.gz"


def _settings(tmp_path: Path, **extra):
    return validate(
        {
            "campus": {"internal": ["10.20.0.0/16"]},
            "sources": [{"type": "pcap", "paths": [str(SAMPLE)]}],
            "sinks": [{"type": "store", "path": str(tmp_path / "netmon.db")}],
            "detect": {"checkpoint": str(tmp_path / "state.ckpt")},
            **extra,
        }
    )


def test_flow_source_lateness_keeps_windows_open_for_its_records(tmp_path: Path):
    settings = validate(
        {"sources": [{"type": "netflow", "listen": ["127.0.0.1:0"], "record_delay": 300}], "aggregate": {"lateness": 2}}
    )
    stages = pipeline.build(settings)
    try:
        assert stages.sources[0].lateness == 300, "a flow source's record delay must be its watermark's lateness"
    finally:
        for source in stages.sources:
            source.close()


def test_replay_gives_the_same_findings_every_time(tmp_path: Path):
    health.reset()
    first = pipeline.run(pipeline.build(_settings(tmp_path / "a", ), restore=False))
    second = pipeline.run(pipeline.build(_settings(tmp_path / "b"), restore=False))
    assert first.intervals == second.intervals > 0
    assert [f.to_json() for f in first.findings] == [f.to_json() for f in second.findings]
    assert set(first.worst) == {"10.20.24.112"}, f"only the runaway host should be flagged, got {sorted(first.worst)}"
    counters = health.snapshot()
    assert counters["sink.store.errors"] == 0, "the store sink failed while the replay ran"
    assert counters["sink.store.written"] == first.intervals + second.intervals


def test_every_source_and_sink_plugin_has_check_in_its_contract():
    """check() is part of every plug-in's contract: check-config and a reload call it before starting."""
    from netmon import registry

    missing = [f"{kind} {name}" for kind in ("source", "sink") for name in registry.KINDS[kind]
               if not callable(getattr(registry.plugin(kind, name), "check", None))]
    assert not missing, f"plug-ins without check(config): {missing}"


def test_a_sink_that_cannot_start_is_one_line_naming_it(tmp_path: Path):
    from netmon.sinks.spool import Spool

    held = Spool(tmp_path / "spool", 1 << 20)  # another netmon holds this spool
    settings = validate({"sinks": [{"type": "store", "path": str(tmp_path / "a.db")},
                                   {"type": "influx", "spool_dir": str(tmp_path / "spool")}]})
    try:
        with pytest.raises(pipeline.StartError, match=r"sink influx \(influx\): spool .* in use"):
            pipeline.build_sinks(settings)
    finally:
        held.close()
