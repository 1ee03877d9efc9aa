"""Population model: is this host unlike its peers?

One river ``HalfSpaceTrees`` per host group (``HostIntervals.group``) and per
telemetry pattern (which features are known: flow records lack the NTP header,
so their rows go to a model of the features they do have; NaN is never read as
0). Features are this interval's values, counts as rates per hour, log-scaled
into [0, 1] with fixed limits (:mod:`netmon.detect.scaling`).

Cheap at a million hosts: each interval a model learns from at most ``sample``
randomly drawn hosts of its group that no detector flagged, and scores every
host with a numpy walk of its trees (:func:`tree_scores`, the same arithmetic as
river's ``score_one`` but over whole columns).

Threshold: a finding needs a score of at least ``threshold`` and above the
group's own 99.9th percentile (over the scores of its last ``recent`` learned
rows) plus ``margin``, so a diverse group does not flood and a uniform one stays
sensitive.

Explanation: beside each forest, the group's typical scaled value and spread per
feature (exponentially weighted over the learned samples); a finding names the
features where the host is furthest above its group, with the group's typical
value. Only rises count: a host quieter than its peers is no security concern.

Cold start: a model scores (otherwise NaN, no finding) once it has learned
``min_learned`` rows, i.e. ``min_learned / sample`` intervals for a large group.
"""

from __future__ import annotations

import pickle
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import structlog
from pydantic import BaseModel, ConfigDict, Field, field_validator
from river.anomaly import HalfSpaceTrees
from river.tree.padded import PaddedBranch

from netmon.batch import HostIntervals
from netmon.detect import scaling
from netmon.detect.engine import DetectorOutput
from netmon.detect.explain import Deviation, finding

log = structlog.get_logger(__name__)

#: Smallest spread (scaled units) a group's z is computed against.
SPREAD_FLOOR = 0.02


class Config(BaseModel):
    """``[detect.population]``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    features: list[str] = Field(
        default_factory=lambda: [
            "requests_per_port",
            "requests_out",
            "servers",
            "rate_vs_poll",
            "org_mismatch",
            "after_kod",
            "replies_out",
            "ctl_out",
        ],
        description="features compared with the host's group (see netmon.detect.scaling.SPECS)",
    )
    n_trees: int = Field(10, ge=1, le=100)
    height: int = Field(8, ge=2, le=14)
    window_size: int = Field(250, ge=10, description="learned rows per HalfSpaceTrees window")
    sample: int = Field(64, ge=1, description="hosts per group learned each interval")
    min_learned: int = Field(500, ge=1, description="rows a model learns before it scores")
    threshold: float = Field(0.2, gt=0, lt=1, description="lowest HalfSpaceTrees score that makes a finding")
    margin: float = Field(0.1, ge=0, lt=1, description="score above the group's own 99.9th percentile that makes a finding")
    critical: float = Field(0.6, gt=0, le=1, description="score that makes a finding critical")
    recent: int = Field(2000, ge=100, description="learned rows' scores kept to place the group's 99.9th percentile")
    min_z: float = Field(4.0, gt=0, description="how far above its group a feature must be to be named")
    memory: int = Field(2000, ge=10, description="learned rows the group's typical values average over")
    seed: int = 7

    @field_validator("features")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        unknown = [v for v in value if v not in scaling.SPECS]
        if unknown:
            raise ValueError(f"unknown features {unknown}; allowed: {', '.join(scaling.SPECS)}")
        return value


@dataclass
class Forest:
    """One group's HalfSpaceTrees as heap-ordered arrays (node i has children 2i+1, 2i+2)."""

    feature: np.ndarray
    threshold: np.ndarray
    r_mass: np.ndarray
    l_mass: np.ndarray


def flatten(model: HalfSpaceTrees, columns: list[str]) -> Forest:
    """Heap-ordered node arrays of every tree of ``model``; ``columns`` maps feature names to indexes."""
    where = {name: i for i, name in enumerate(columns)}
    size = 2 ** (model.height + 1) - 1
    feature = np.zeros((model.n_trees, size), dtype=np.int64)
    threshold = np.zeros((model.n_trees, size))
    r_mass = np.zeros((model.n_trees, size))
    l_mass = np.zeros((model.n_trees, size))
    for t, root in enumerate(model.trees):
        level = [root]
        i = 0
        while level:
            below = []
            for node in level:
                r_mass[t, i] = node.r_mass
                l_mass[t, i] = node.l_mass
                if isinstance(node, PaddedBranch):
                    feature[t, i] = where[node.feature]
                    threshold[t, i] = node.threshold
                    below.extend(node.children)
                i += 1
            level = below
    return Forest(feature, threshold, r_mass, l_mass)


def tree_scores(forest: Forest, x: np.ndarray, height: int, window_size: int) -> np.ndarray:
    """river's HalfSpaceTrees ``score_one`` for every row of ``x`` at once (no NaN in ``x``)."""
    n = x.shape[0]
    trees = forest.feature.shape[0]
    size_limit = 0.1 * window_size
    total = np.zeros(n)
    flat = np.ascontiguousarray(x.T).ravel()
    rows = np.arange(n, dtype=np.int64)
    for t in range(trees):
        node = np.zeros(n, dtype=np.int64)
        active = np.ones(n, dtype=bool)
        weight = 1.0
        r_mass, offset, threshold = forest.r_mass[t], forest.feature[t] * n, forest.threshold[t]
        for _ in range(height):
            r = r_mass[node]
            total += r * (weight * active)
            active &= r >= size_limit
            node = 2 * node + 1 + (flat[offset[node] + rows] >= threshold[node])
            weight *= 2.0
        total += r_mass[node] * (weight * active)
    top = trees * window_size * (2 ** (height + 1) - 1)
    return 1.0 - total / top


@dataclass
class Model:
    """One group-and-pattern's forest, its learned-row count and the group's typical values."""

    hst: HalfSpaceTrees
    columns: list[str]
    learned: int = 0
    center: np.ndarray = field(default_factory=lambda: np.zeros(0))
    spread: np.ndarray = field(default_factory=lambda: np.zeros(0))
    recent: np.ndarray = field(default_factory=lambda: np.zeros(0))
    forest: Forest | None = None
    pivots: int = -1

    def current(self, window_size: int) -> Forest:
        """The flattened forest, refreshed when the model has pivoted to a new window
        (scores read only the reference masses, which change only then)."""
        pivots = self.learned // window_size
        if self.forest is None or self.pivots != pivots:
            self.forest, self.pivots = flatten(self.hst, self.columns), pivots
        return self.forest

    def threshold(self, floor: float, margin: float) -> float:
        """The score that makes a finding: the group's own 99.9th percentile plus a margin."""
        if not self.recent.size:
            return floor
        return max(floor, float(np.quantile(self.recent, 0.999)) + margin)


class Population:
    """The per-group population detector."""

    name = "population"

    def __init__(self, config: Config) -> None:
        self.config = config
        self.names = tuple(config.features)
        self.top = np.log2(1.0 + np.array([scaling.SPECS[n].limit for n in self.names]))
        self.floors = scaling.floors(self.names)
        self.models: dict[str, Model] = {}
        self.rng = np.random.default_rng(config.seed)
        self._seen: tuple[int, tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]] | None = None

    def _model(self, key: str, columns: list[str]) -> Model:
        model = self.models.get(key)
        if model is None:
            cfg = self.config
            seed = cfg.seed + zlib.crc32(key.encode())
            hst = HalfSpaceTrees(n_trees=cfg.n_trees, height=cfg.height, window_size=cfg.window_size, seed=seed)
            model = self.models[key] = Model(hst, columns, 0, np.zeros(len(columns)), np.zeros(len(columns)))
        return model

    def _groups(self, intervals: HostIntervals) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Per-hour values, their [0, 1] scaling, and host indexes by model key
        (computed once per interval: learning reuses what scoring computed)."""
        if self._seen is not None and self._seen[0] == id(intervals):
            return self._seen[1]
        self._seen = (id(intervals), self._split(intervals))
        return self._seen[1]

    def _split(self, intervals: HostIntervals) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        values = scaling.matrix(intervals, self.names)
        scaled = scaling.unit_scaled(values, self.names)
        known = ~np.isnan(scaled)
        by_key: dict[str, np.ndarray] = {}
        if not len(intervals):
            return values, scaled, by_key
        groups, group_of = np.unique(np.asarray(intervals.group, dtype=str), return_inverse=True)
        pattern = known.astype(np.int64) @ (1 << np.arange(len(self.names), dtype=np.int64))
        combined = group_of.astype(np.int64) << len(self.names) | pattern
        unique, inverse = np.unique(combined, return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        bounds = np.searchsorted(inverse[order], np.arange(len(unique) + 1))
        for u, code in enumerate(unique.tolist()):
            members = order[bounds[u] : bounds[u + 1]]
            if known[members[0]].sum() >= 2:
                by_key[f"{groups[code >> len(self.names)]}|{code & ((1 << len(self.names)) - 1):x}"] = members
        return values, scaled, by_key

    def _columns(self, known: np.ndarray) -> list[str]:
        return [n for n, k in zip(self.names, known) if k]

    def score(self, intervals: HostIntervals) -> DetectorOutput:
        """HalfSpaceTrees score of each host within its group; findings above the threshold."""
        cfg = self.config
        values, scaled, by_key = self._groups(intervals)
        scores = np.full(len(intervals), np.nan)
        findings = []
        for key, members in by_key.items():
            model = self.models.get(key)
            if model is None or model.learned < cfg.min_learned:
                continue
            known = ~np.isnan(scaled[members[0]])
            x = scaled[np.ix_(members, np.flatnonzero(known))]
            s = tree_scores(model.current(cfg.window_size), x, cfg.height, cfg.window_size)
            scores[members] = s
            threshold = model.threshold(cfg.threshold, cfg.margin)
            z = (x - model.center) / np.maximum(model.spread * 1.25, SPREAD_FLOOR)
            cols = np.flatnonzero(known)
            typical = scaling.unlevel(model.center * self.top[cols])
            rise = values[np.ix_(members, cols)] - typical >= self.floors[cols]
            named = (z >= cfg.min_z) & rise
            group = key.split("|")[0]
            for m in np.flatnonzero((s >= threshold) & named.any(axis=1)).tolist():
                i = int(members[m])
                findings.append(
                    finding(
                        intervals,
                        i,
                        "model.population",
                        "critical" if s[m] >= max(cfg.critical, threshold) else "warning",
                        float(s[m]),
                        f"the population of group {group} ({model.learned} host-intervals learned, "
                        f"score {s[m]:.2f} over {threshold:.2f})",
                        [
                            Deviation(self.names[cols[j]], float(values[i, cols[j]]), float(typical[j]), float(z[m, j]))
                            for j in np.flatnonzero(named[m])
                        ],
                    )
                )
        return DetectorOutput(scores={"population": scores}, findings=findings)

    def learn(self, intervals: HostIntervals, normal: np.ndarray) -> None:
        """Learn a sample of each group's normal hosts."""
        cfg = self.config
        _, scaled, by_key = self._groups(intervals)
        self._seen = None
        for key, members in by_key.items():
            members = members[normal[members]]
            if members.size == 0:
                continue
            if members.size > cfg.sample:
                members = self.rng.choice(members, cfg.sample, replace=False)
            known = ~np.isnan(scaled[members[0]])
            columns = self._columns(known)
            model = self._model(key, columns)
            x = scaled[np.ix_(members, np.flatnonzero(known))]
            if model.learned >= cfg.window_size:
                seen = tree_scores(model.current(cfg.window_size), x, cfg.height, cfg.window_size)
                model.recent = np.concatenate([model.recent, seen])[-cfg.recent :]
            for row in x.tolist():
                model.hst.learn_one(dict(zip(columns, row)))
            alpha = max(1.0 / (model.learned + members.size), members.size / cfg.memory)
            mean = x.mean(axis=0)
            if model.learned == 0:
                model.center = mean
                model.spread = np.abs(x - mean).mean(axis=0)
            else:
                model.spread = model.spread + alpha * (np.abs(x - model.center).mean(axis=0) - model.spread)
                model.center = model.center + alpha * (mean - model.center)
            model.learned += int(members.size)

    def state(self) -> dict[str, Any]:
        """Per model: river's forest as a pickle (bytes; see models/README.md) and numpy arrays."""
        return {
            "features": list(self.names),
            "models": {
                key: {
                    "hst": pickle.dumps(m.hst, protocol=pickle.HIGHEST_PROTOCOL),
                    "columns": list(m.columns),
                    "learned": m.learned,
                    "center": m.center,
                    "spread": m.spread,
                    "recent": m.recent,
                }
                for key, m in self.models.items()
            },
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state`; an unusable state leaves the model cold, with a log line."""
        if list(state.get("features", [])) != list(self.names):
            log.warning("population state is for other features; starting cold", saved=state.get("features"))
            return
        try:
            models = {}
            for key, m in state["models"].items():
                hst = pickle.loads(m["hst"])
                if not isinstance(hst, HalfSpaceTrees):
                    raise TypeError(f"model {key!r} is a {type(hst).__name__}, not HalfSpaceTrees")
                models[key] = Model(
                    hst,
                    list(m["columns"]),
                    int(m["learned"]),
                    np.asarray(m["center"]),
                    np.asarray(m["spread"]),
                    np.asarray(m["recent"]),
                )
        except (KeyError, TypeError, ValueError, pickle.UnpicklingError, AttributeError, EOFError) as exc:
            log.warning("population state unusable; starting cold", error=str(exc))
            return
        self.models = models

    def nbytes(self) -> int:
        return sum(len(pickle.dumps(m.hst)) for m in self.models.values())


def build(config: Config) -> Population:
    return Population(config)
