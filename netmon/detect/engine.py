"""Runs the configured detectors over each closed interval and gates their learning.

Order matters: every detector scores the interval first; then hosts that any
detector flagged (a finding of severity warning or worse) are kept out of
learning, so an anomalous interval never teaches a model that it is normal.
Learning detectors' state is checkpointed through ``netmon.detect.checkpoint``:
every ``checkpoint_every`` seconds of wall clock while intervals come in, and at
stop. A checkpoint that cannot be written (disk full, unwritable directory) is
logged and counted (``detect.checkpoint.failed``) and tried again a period later;
the models run on.
"""

from __future__ import annotations

import ctypes
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import structlog

from netmon import health, registry
from netmon.batch import Finding, HostIntervals, Scored
from netmon.config import Detect
from netmon.detect.hoststate import HostKeys, HostModel

log = structlog.get_logger(__name__)


@dataclass
class DetectorOutput:
    """One detector's verdict on one interval.

    ``scores`` maps a score name (``population``, ``baseline``...) to a float64
    column aligned with ``intervals.host``; ``findings`` are the explained alerts.
    """

    scores: dict[str, np.ndarray] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)


class Detector(Protocol):
    def score(self, intervals: HostIntervals) -> DetectorOutput: ...


def _learns(detector: Any) -> bool:
    return hasattr(detector, "learn")


#: glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: The largest mmap threshold glibc takes on 64-bit systems (half its heap size): 32 MiB.
REUSED_BLOCK = 32 << 20
#: Free memory at the top of the heap kept for the next interval rather than handed back.
KEPT_FREE = 1 << 30


def reuse_freed_memory() -> bool:
    """Have glibc's malloc keep freed blocks of up to :data:`REUSED_BLOCK` bytes for reuse.

    By default a numpy temporary larger than 128 KiB to a few MiB is mapped fresh from the
    kernel and unmapped when freed, so every interval takes a page fault per 4 KiB of its
    temporaries again: 15 % of an interval's CPU at 100,000 hosts and 40 % at a million.
    The detectors make the same temporaries every interval, so the heap keeps them
    (up to :data:`KEPT_FREE` bytes free). Process-wide; setting it again changes nothing.
    False where the C library has no ``mallopt`` (not glibc) or refuses the values.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, REUSED_BLOCK)) and bool(mallopt(_M_TRIM_THRESHOLD, KEPT_FREE))


class Engine:
    """The detect stage: detectors by name from ``[detect]``, state restored at start."""

    def __init__(self, settings: Detect, restore: bool = True) -> None:
        self.settings = settings
        if settings.detectors:
            reuse_freed_memory()
        self.detectors: dict[str, Any] = {
            name: registry.plugin("detector", name).build(settings.settings(name)) for name in settings.detectors
        }
        self._saved = time.monotonic()
        if restore and settings.checkpoint and self._stateful():
            from netmon.detect import checkpoint

            self.load_state(checkpoint.load(Path(settings.checkpoint)))

    def state(self) -> dict[str, Any]:
        """Every stateful detector's state, by name (what a checkpoint holds)."""
        return {name: d.state() for name, d in self._stateful().items()}

    def load_state(self, states: dict[str, Any]) -> None:
        """Restore detectors from :meth:`state`'s output; names not configured are ignored, and
        a detector whose state does not fit starts cold (a log line), so one bad entry never
        stops a start or a cluster takeover."""
        for name, state in states.items():
            if name in self.detectors:
                try:
                    self.detectors[name].load_state(state)
                except (KeyError, ValueError, TypeError, AttributeError) as exc:
                    log.warning("model state unusable; starting cold", detector=name, error=f"{type(exc).__name__}: {exc}")

    def _stateful(self) -> dict[str, Any]:
        return {name: d for name, d in self.detectors.items() if hasattr(d, "state")}

    def process(self, intervals: HostIntervals) -> Scored:
        """Score one interval with every detector, then let the learners learn.

        Host keys are hashed once here, handed to every per-host model and used to keep
        the flagged hosts out of learning."""
        keys = HostKeys.of(intervals.host)
        extra = {d: ((keys,) if isinstance(d, HostModel) else ()) for d in self.detectors.values()}
        scores: dict[str, np.ndarray] = {}
        findings: list[Finding] = []
        for detector in self.detectors.values():
            out = detector.score(intervals, *extra[detector])
            scores.update(out.scores)
            findings.extend(out.findings)
        flagged = {f.host for f in findings if f.severity != "info"}
        normal = ~keys.among(flagged)
        for detector in self.detectors.values():
            if _learns(detector):
                detector.learn(intervals, normal, *extra[detector])
        every = self.settings.checkpoint_every
        if every and time.monotonic() - self._saved >= every:
            self.save()
        return Scored(intervals=intervals, scores=scores, findings=findings)

    def save(self) -> bool:
        """Checkpoint every stateful detector (no-op when none is, or no checkpoint is configured);
        False when writing failed."""
        self._saved = time.monotonic()
        if not self.settings.checkpoint:
            return True
        states = self.state()
        if not states:
            return True
        from netmon.detect import checkpoint

        try:
            checkpoint.save(Path(self.settings.checkpoint), states)
        except OSError as exc:
            health.count("detect.checkpoint.failed")
            log.error("checkpoint not written; models keep running, next try in one period",
                      path=self.settings.checkpoint, error=exc.strerror or str(exc))
            return False
        return True
