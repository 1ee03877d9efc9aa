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




def write_incident_pcap(path: Path) -> int:
    """A 20-minute capture: a runaway host ignoring KoD RATE, a quiet host polling every 64 s.

    Returns the number of the runaway host's packets (its requests and the replies)."""
    burst = T0 + np.arange(0, 1200, 1.5)
    quiet = T0 + np.arange(0, 1200, 64.0)
    rows = np.concatenate([
        packets(RUNAWAY, SERVER, burst, 3, org_ts=np.arange(len(burst), dtype=np.uint64) * np.uint64(7919)),
        packets(SERVER, RUNAWAY, burst + 0.01, 4, leap=3, stratum=0, ref_id=RATE),
        packets(QUIET, OTHER_SERVER, quiet, 3),
        packets(OTHER_SERVER, QUIET, quiet + 0.01, 4, stratum=2),
    ])
    rows = rows[np.argsort(rows["time"], kind="stable")]
    write_pcap(path, frames_from_observations(rows))
    return 2 * len(burst)
