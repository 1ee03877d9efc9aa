"""A bound on the raw rows one open window holds: past it, a flood is thinned, not hoarded.

Rows wait unreduced in their window until it closes (features need every packet in
event order), so a flood (a reflection attack, or 15 M identical frames unpacked from
an 8.6 MB gzip capture) would otherwise grow one window by ~123 bytes a row, and three
times that while it closes, without limit. When a window holds more than ``max_rows``
rows, what it holds is halved (every other row kept) and later rows of that window are
kept 1 in ``k`` (``k`` doubling each time the bound is reached again); every kept row's
``packets`` and ``bytes`` are multiplied by the factor, as for sampled telemetry (sFlow),
so volumes stay right and the window's memory stays under ``max_rows`` rows. Thinning
is deterministic (by position), so a replay gives the same answer every time; rows
left out are counted (``aggregate.thinned_rows``) and each thinned window logged once.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import structlog

from netmon import health

log = structlog.get_logger(__name__)


class Thinning:
    """Per open window: rows held, the 1-in-k factor applied, and rows seen at that factor."""

    def __init__(self, max_rows: int) -> None:
        self.max_rows = max_rows
        self._held: dict[int, int] = {}
        self._factor: dict[int, int] = {}
        self._seen: dict[int, int] = {}

    def sample(self, window: int, rows: np.ndarray) -> np.ndarray:
        """``rows`` of ``window`` as the window keeps them: an own copy, 1 in k once thinned."""
        factor = self._factor.get(window, 1)
        if factor == 1:
            return rows.copy()
        seen = self._seen.get(window, 0)
        keep = (np.arange(seen, seen + rows.shape[0]) % factor) == 0
        self._seen[window] = seen + rows.shape[0]
        kept = rows[keep]  # a boolean index copies
        kept["packets"] *= factor
        kept["bytes"] *= factor
        health.count("aggregate.thinned_rows", rows.shape[0] - kept.shape[0])
        return kept

    def add(self, window: int, parts: list[np.ndarray], part: np.ndarray) -> list[np.ndarray]:
        """``parts`` of ``window`` with ``part`` added, halved as often as the bound needs."""
        parts.append(part)
        self._held[window] = self._held.get(window, 0) + part.shape[0]
        while self._held[window] > self.max_rows:
            parts = [self._halve(window, parts)]
        self._publish()
        return parts

    def _halve(self, window: int, parts: list[np.ndarray]) -> np.ndarray:
        """Keep every other row the window holds (weights doubled) and sample later rows at twice the rate."""
        rows = np.concatenate(parts) if len(parts) > 1 else parts[0]
        kept = rows[::2].copy()
        kept["packets"] *= 2
        kept["bytes"] *= 2
        health.count("aggregate.thinned_rows", rows.shape[0] - kept.shape[0])
        if window not in self._factor:
            log.warning("window over its row bound: thinning a flood (packets and bytes stay weighted)",
                        window_start_index=window, max_rows=self.max_rows)
        self._factor[window] = 2 * self._factor.get(window, 1)
        self._held[window] = kept.shape[0]
        return kept

    def forget(self, window: int) -> None:
        """``window`` closed."""
        for table in (self._held, self._factor, self._seen):
            table.pop(window, None)
        self._publish()

    def state(self) -> dict[str, Any]:
        """Per open window: rows held, factor, rows seen (keys are window indexes as text)."""
        return {name: {str(k): v for k, v in getattr(self, f"_{name}").items()} for name in ("held", "factor", "seen")}

    def load_state(self, state: dict[str, Any]) -> None:
        for name in ("held", "factor", "seen"):
            setattr(self, f"_{name}", {int(k): int(v) for k, v in state[name].items()})
        self._publish()

    def held(self) -> int:
        """Raw rows held over every open window."""
        return sum(self._held.values())

    def _publish(self) -> None:
        health.gauge("aggregate.pending_rows", self.held())
