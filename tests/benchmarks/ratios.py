"""Measured comparisons, one JSON line each, for ``run_all.py``'s table.

A benchmark prints its own report and, where it compares netmon with a peer or a
target, also calls :func:`record`. When the environment variable
``NETMON_BENCH_RESULTS`` names a file, the row is appended to it; otherwise
nothing is written, so every benchmark still runs alone.

``better`` says which way is good: ``"higher"`` for rates (records/s), ``"lower"``
for costs (seconds, ns per packet). ``ratio`` is always netmon / peer, so a rate
ratio above 1 and a cost ratio below 1 both mean netmon wins. ``bar`` is the
target the project holds itself to, in the ratio's terms where there is a peer
(e.g. ``<= 1.0`` for "no slower than tcpdump") and in the unit's terms where there
is none (e.g. ``<= 0.3`` seconds).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass


@dataclass
class Row:
    bench: str
    measure: str
    netmon: float
    unit: str
    better: str
    peer: str = ""
    peer_value: float | None = None
    bar: str = ""

    @property
    def ratio(self) -> float | None:
        return self.netmon / self.peer_value if self.peer_value else None

    def met(self) -> bool | None:
        """Whether the bar holds (None without a bar)."""
        if not self.bar:
            return None
        op, limit = self.bar.split()
        value = self.ratio if self.peer else self.netmon
        if value is None:
            return None
        return value <= float(limit) if op == "<=" else value >= float(limit)


def record(bench: str, measure: str, netmon: float, unit: str, better: str, peer: str = "",
           peer_value: float | None = None, bar: str = "") -> None:
    """Append one comparison to ``$NETMON_BENCH_RESULTS`` (no-op when unset)."""
    assert better in ("higher", "lower"), better
    path = os.environ.get("NETMON_BENCH_RESULTS")
    if not path:
        return
    row = Row(bench, measure, float(netmon), unit, better, peer, None if peer_value is None else float(peer_value), bar)
    with open(path, "a") as out:
        out.write(json.dumps(asdict(row)) + "\n")


def load(path: str) -> list[Row]:
    with open(path) as rows:
        return [Row(**json.loads(line)) for line in rows if line.strip()]
