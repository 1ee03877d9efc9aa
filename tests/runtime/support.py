"""Helpers for the runtime tests: settings in a temporary directory, observation rows, stages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from netmon import pipeline
from netmon.aggregate import Aggregator
from netmon.batch import OBS_DTYPE, addr_halves
from netmon.config import Settings, validate
from netmon.detect.engine import Engine

INTERNAL = "10.20.0.0/16"


def settings(tmp_path: Path, **extra: Any) -> Settings:
    """Campus 10.20/16, a store and a checkpoint under ``tmp_path``, rules only; ``extra`` tables replace."""
    data = {
        "campus": {"internal": [INTERNAL]},
        "aggregate": {"interval": 10, "lateness": 0},
        "detect": {"detectors": ["rules"], "checkpoint": str(tmp_path / "state.ckpt")},
        "sinks": [{"type": "store", "path": str(tmp_path / "netmon.db")}],
        **extra,
    }
    return validate(data)


def requests(times: list[float] | np.ndarray, host: str = "10.20.0.5", server: str = "192.0.2.1",
             sport: int = 40000) -> np.ndarray:
    """NTP client requests (mode 3) from ``host`` to ``server`` at ``times`` (UNIX s)."""
    rows = np.zeros(len(times), OBS_DTYPE)
    rows["time"] = times
    rows["src_hi"], rows["src_lo"] = addr_halves(host)
    rows["dst_hi"], rows["dst_lo"] = addr_halves(server)
    rows["sport"], rows["dport"] = sport, 123
    rows["packets"], rows["bytes"], rows["ntp"], rows["mode"], rows["version"], rows["poll"] = 1, 76, 1, 3, 4, 6
    rows["ntp_len"] = 48
    return rows


def stages(config: Settings, sources: list | None = None, sinks: list | None = None) -> pipeline.Stages:
    """Stages of ``config`` with the given supervised sources and managed sinks (default: none)."""
    return pipeline.Stages(sources=sources or [], aggregator=Aggregator(config.campus, config.aggregate),
                           engine=Engine(config.detect, restore=False), sinks=sinks or [], runtime=config.pipeline)
