"""A small incident capture for evidence and alert tests: a runaway host ignoring KoD RATE."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from netmon.batch import addr_halves, empty_observations
from netmon.decode.encode import frames_from_observations
from netmon.sources.pcapfile import write_pcap

T0 = 1_700_000_000.0
RATE = int.from_bytes(b"RATE", "big")
RUNAWAY, QUIET, SERVER, OTHER_SERVER = "10.1.2.3", "10.1.2.4", "192.0.2.10", "192.0.2.11"


def packets(src: str, dst: str, times: np.ndarray, mode: int, **fields) -> np.ndarray:
    rows = empty_observations(len(times))
    rows["time"] = times
    rows["src_hi"], rows["src_lo"] = addr_halves(src)
    rows["dst_hi"], rows["dst_lo"] = addr_halves(dst)
    rows["sport"], rows["dport"] = (123, 123)
    rows["packets"], rows["ntp"], rows["version"], rows["mode"], rows["poll"] = 1, 1, 4, mode, 6
    rows["xmt_ts"] = (times.astype(np.uint64) + np.uint64(2_208_988_800)) << np.uint64(32)
    for name, value in fields.items():
        rows[name] = value
    return rows




def incident_rows(calm_before: float = 0.0) -> np.ndarray:
    """20 minutes: a runaway host ignoring KoD RATE, a quiet host polling every 64 s, in time order.

    With ``calm_before`` seconds, traffic starts that much earlier and the runaway
    host first polls like a normal client (every 64 s) for that long."""
    burst = T0 + np.arange(0, 1200, 1.5)
    quiet = T0 + np.arange(-calm_before, 1200, 64.0)
    calm = T0 + np.arange(-calm_before, 0, 64.0)
    rows = np.concatenate([
        packets(RUNAWAY, SERVER, calm, 3),
        packets(SERVER, RUNAWAY, calm + 0.01, 4, stratum=2),
        packets(RUNAWAY, SERVER, burst, 3, org_ts=np.arange(len(burst), dtype=np.uint64) * np.uint64(7919)),
        packets(SERVER, RUNAWAY, burst + 0.01, 4, leap=3, stratum=0, ref_id=RATE),
        packets(QUIET, OTHER_SERVER, quiet, 3),
        packets(OTHER_SERVER, QUIET, quiet + 0.01, 4, stratum=2),
    ])
    return rows[np.argsort(rows["time"], kind="stable")]


def write_incident_pcap(path: Path, calm_before: float = 0.0) -> int:
    """:func:`incident_rows` as one capture file; returns the number of the runaway host's
    packets in the 20 minutes (its requests and the replies)."""
    write_pcap(path, frames_from_observations(incident_rows(calm_before)))
    return 2 * len(np.arange(0, 1200, 1.5))


def write_incident_minutes(directory: Path) -> list[Path]:
    """:func:`incident_rows` as one capture file a minute, as a live source delivers them:
    in batches, so packets keep coming after the first finding."""
    rows = incident_rows()
    minute = ((rows["time"] - T0) // 60).astype(int)
    paths = []
    for m in np.unique(minute).tolist():
        path = directory / f"minute-{m:02d}.pcap"
        write_pcap(path, frames_from_observations(rows[minute == m]))
        paths.append(path)
    return paths
