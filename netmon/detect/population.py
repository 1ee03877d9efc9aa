"""Population model: is this host unlike its peers?

One river ``HalfSpaceTrees`` per host group (``HostIntervals.group``) and per
telemetry pattern (which features are known: flow records lack the NTP header,
so their rows go to a model of the features they do have; NaN is never read as
0). Each host is described by its recent behaviour, not one interval's: counts
as rates per hour over a sliding ``window`` and levels averaged over it
(:func:`netmon.detect.hoststate.windowed`), so a host polling every 1024 s and
one polling every 64 s differ, and one interval of a reboot's iburst does not
stand out. The default features are per-source-port and per-role shapes
(requests per port, requests against the advertised poll, server traffic,
mode 6/7 traffic), not raw volume, so a NAT gateway, which is many ordinary
clients on many ports, looks like its peers. Values are log-scaled into [0, 1]
with fixed limits (:mod:`netmon.detect.scaling`).

Cheap at a million hosts: each interval a model learns from at most ``sample``
randomly drawn hosts of its group that no detector flagged, that it does not
score as outliers itself and that it has known for ``persist`` seconds (a new
device has to show it is ordinary before it teaches what ordinary is), and scores every host with a numpy walk of its trees
(:func:`tree_scores`, the same arithmetic as river's ``score_one`` over whole
columns). Per host it keeps only the windowed values (4 bytes a feature) and
when its current run as an outlier began.

Threshold: beside each forest the model keeps the last ``recent`` rows it
learned, so it knows its group's ``quantile`` (99.9th percentile) per feature.
A host is an outlier when its forest score is at least ``threshold`` and at
least one feature is ``ratio`` times above the group's percentile and by more
than ``floor_scale`` times the feature's floor. A finding needs the host to
stay an outlier for ``persist`` seconds: booting machines (iburst, then fast
polling for an hour) are rare but normal; a device hard-wired to poll every few
seconds is not. The finding names those features, each with the group's
percentile, so it reads "fastest socket 240/h, 99.9% of group clients at most
56/h". Only rises count: a host quieter than its peers is no security concern. A fast socket that polls as it advertises, at NTP's
minimum poll (16 s) or slower, is configuration (``minpoll 4``) and is not
named for ``socket_rate``; one asking faster than it says, or below 16 s, is.

Cold start: a model scores (otherwise NaN, no finding) once it has learned
``min_learned`` rows, i.e. ``min_learned / sample`` intervals for a large group;
findings then need ``persist`` seconds more.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import structlog
from pydantic import Field, field_validator

from netmon.batch import HostIntervals
from netmon.config import Strict
from netmon.detect import forests, scaling
from netmon.detect.engine import DetectorOutput
from netmon.detect.explain import Deviation, finding
from netmon.detect.hoststate import Column, HostKeys, HostModel, Visit, categories

if TYPE_CHECKING:
    from river.anomaly import HalfSpaceTrees

log = structlog.get_logger(__name__)


class Config(Strict):
    """``[detect.population]``."""

    features: list[str] = Field(
        default_factory=lambda: ["socket_rate", "requests_per_port", "requests_in", "replies_out", "ctl_out"],
        description="features compared with the host's group (see netmon.detect.scaling.SPECS)",
    )
    window: float = Field(1800.0, gt=0, description="seconds a host's recent behaviour is measured over")
    persist: float = Field(7200.0, ge=0, description="seconds a host must stay an outlier to make a finding")
    floor_scale: float = Field(4.0, gt=0, description="times each feature's floor a host must exceed its group by")
    forget_after: float = Field(6 * 3600.0, gt=0, description="seconds of silence after which a host starts over")
    n_trees: int = Field(10, ge=1, le=100)
    height: int = Field(8, ge=2, le=14)
    window_size: int = Field(250, ge=10, description="learned rows per HalfSpaceTrees window")
    sample: int = Field(64, ge=1, description="hosts per group learned each interval")
    min_learned: int = Field(500, ge=1, description="rows a model learns before it scores")
    threshold: float = Field(0.2, ge=0, lt=1, description="lowest HalfSpaceTrees score of an outlier")
    critical: float = Field(0.6, gt=0, le=1, description="score that makes a finding critical")
    recent: int = Field(20000, ge=100, description="learned rows kept to place the group's percentile")
    remember: int = Field(16, ge=1, description="of each interval's learned rows, how many are kept (a day at 60 s)")
    quantile: float = Field(0.999, gt=0.5, lt=1, description="the group's percentile a feature is compared with")
    ratio: float = Field(2.0, ge=1, description="factor above the group's percentile that makes a feature stand out")
    seed: int = 7

    _known = field_validator("features")(scaling.known)


@dataclass
class Forest:
    """One group's HalfSpaceTrees as heap-ordered arrays (node i has children 2i+1, 2i+2)."""

    feature: np.ndarray
    threshold: np.ndarray
    r_mass: np.ndarray


def flatten(model: HalfSpaceTrees, columns: list[str]) -> Forest:
    """Heap-ordered node arrays of every tree of ``model`` (:func:`netmon.detect.forests.export`'s
    walk); ``columns`` maps feature names to indexes. Leaves' features (-1) are never read."""
    arrays = forests.export(model, columns)
    return Forest(arrays["feature"].astype(np.int64), arrays["threshold"], arrays["r_mass"].astype(np.float64))


def _path_masses(forest: Forest, height: int, size_limit: float) -> np.ndarray:
    """Per tree and leaf, what river's ``score_one`` adds on the way down to that leaf: each
    node's reference mass times 2^depth, until (and with) the first node lighter than
    ``size_limit``. A path is decided by its leaf, so scoring a row needs only its leaf."""
    path = np.zeros(forest.r_mass.shape)
    going = np.zeros(forest.r_mass.shape, dtype=bool)
    path[:, 0] = forest.r_mass[:, 0]
    going[:, 0] = forest.r_mass[:, 0] >= size_limit
    for depth in range(1, height + 1):
        nodes = np.arange(2**depth - 1, 2 ** (depth + 1) - 1)
        parent = (nodes - 1) // 2
        r = forest.r_mass[:, nodes]
        path[:, nodes] = path[:, parent] + np.where(going[:, parent], r * 2.0**depth, 0.0)
        going[:, nodes] = going[:, parent] & (r >= size_limit)
    return path


def tree_scores(forest: Forest, x: np.ndarray, height: int, window_size: int) -> np.ndarray:
    """river's HalfSpaceTrees ``score_one`` for every row of ``x`` at once (no NaN in ``x``).

    Each row only walks down to its leaf; what river adds along the way is read from the
    leaf (:func:`_path_masses`). The masses and their weights are whole numbers, so every
    sum is exact whatever order it is added in, and the scores equal river's."""
    n = x.shape[0]
    size_limit = 0.1 * window_size
    path = _path_masses(forest, height, size_limit)
    total = np.zeros(n)
    flat = np.ascontiguousarray(x.T).ravel()
    rows = np.arange(n, dtype=np.int64)
    for t in range(forest.feature.shape[0]):
        node = np.zeros(n, dtype=np.int64)
        offset, threshold = forest.feature[t] * n, forest.threshold[t]
        for _ in range(height):
            node = 2 * node + 1 + (flat.take(offset.take(node) + rows) >= threshold.take(node))
        total += path[t].take(node)
    top = forest.feature.shape[0] * window_size * (2 ** (height + 1) - 1)
    return 1.0 - total / top


#: NTP's minimum poll exponent (RFC 5905: 16 s).
MIN_POLL = 4
#: A socket this many times faster than its advertised poll does not poll as it says.
HONEST_RATIO = 1.5


def honest_pollers(intervals: HostIntervals) -> np.ndarray:
    """Hosts whose fastest socket polls as it advertises, at NTP's minimum poll or slower:
    a fast socket of theirs (``minpoll 4``) is configuration, not a device hard-wired to
    ask every few seconds whatever it claims. Unmeasured (NaN) ratios count as honest."""
    f = intervals.features
    poll = np.where(np.nan_to_num(f["poll"]) == 0, 6.0, np.nan_to_num(f["poll"], nan=6.0))
    ratio = np.nan_to_num(np.asarray(f["rate_vs_poll"], dtype=np.float64), nan=1.0)
    return (ratio < HONEST_RATIO) & (poll >= MIN_POLL)


def sampler_state(rng: np.random.Generator) -> dict[str, Any]:
    """The draw generator's position (PCG64; its 128-bit words as hex strings, JSON has no such
    integers): a restored detector draws the same hosts to learn as one never stopped."""
    state = rng.bit_generator.state
    return {"bit_generator": state["bit_generator"], "state": f"{state['state']['state']:x}",
            "inc": f"{state['state']['inc']:x}", "has_uint32": int(state["has_uint32"]),
            "uinteger": int(state["uinteger"])}


def load_sampler(state: dict[str, Any]) -> np.random.Generator:
    """The generator :func:`sampler_state` saved; ValueError when it is not a PCG64 position."""
    if state.get("bit_generator") != "PCG64":
        raise ValueError(f"sampler is {state.get('bit_generator')!r}, not PCG64")
    bits = np.random.PCG64()
    bits.state = {"bit_generator": "PCG64", "state": {"state": int(state["state"], 16), "inc": int(state["inc"], 16)},
                  "has_uint32": int(state["has_uint32"]), "uinteger": int(state["uinteger"])}
    return np.random.Generator(bits)


@dataclass
class Model:
    """One group-and-pattern's forest, its learned-row count and recent learned rows."""

    hst: HalfSpaceTrees
    columns: list[str]
    learned: int = 0
    recent: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    forest: Forest | None = None
    pivots: int = -1

    def current(self, window_size: int) -> Forest:
        """The flattened forest, refreshed when the model has pivoted to a new window
        (scores read only the reference masses, which change only then)."""
        pivots = self.learned // window_size
        if self.forest is None or self.pivots != pivots:
            self.forest, self.pivots = flatten(self.hst, self.columns), pivots
        return self.forest

    def percentile(self, q: float) -> np.ndarray:
        """The group's ``q`` quantile of each feature (scaled units) over the recent learned rows."""
        return np.quantile(self.recent, q, axis=0)


@dataclass
class _Seen:
    """What scoring computed for one interval, handed to learning."""

    visit: Visit
    values: np.ndarray
    scaled: np.ndarray
    by_key: dict[str, np.ndarray]
    outlier: np.ndarray
    since: np.ndarray


class Population(HostModel):
    """The per-group population detector."""

    name = "population"

    def __init__(self, config: Config) -> None:
        columns = {"since": Column("f8", 0, np.nan)}
        super().__init__(tuple(config.features), columns, config.window, config.forget_after)
        self.config = config
        self.top = np.log2(1.0 + np.array([scaling.SPECS[n].limit for n in self.names]))
        self.floors = scaling.floors(self.names) * config.floor_scale
        self.models: dict[str, Model] = {}
        self.rng = np.random.default_rng(config.seed)
        self._seen: _Seen | None = None

    def _model(self, key: str, columns: list[str]) -> Model:
        model = self.models.get(key)
        if model is None:
            # river (and the scipy it imports, ~0.8 s) only once a model is made: commands that read
            # the config, which names this plug-in, never build one
            from river.anomaly import HalfSpaceTrees

            cfg = self.config
            seed = cfg.seed + zlib.crc32(key.encode())
            hst = HalfSpaceTrees(n_trees=cfg.n_trees, height=cfg.height, window_size=cfg.window_size, seed=seed)
            model = self.models[key] = Model(hst, columns)
        return model

    def _observe(self, intervals: HostIntervals, keys: HostKeys | None) -> _Seen:
        """Each host's windowed values and their model key (once per interval)."""
        if self._seen is not None and self._seen.visit.intervals is intervals:
            return self._seen
        visit = self.visit(intervals, keys)
        scaled = scaling.unit_scaled(visit.current, self.names)
        self._seen = _Seen(
            visit=visit,
            values=visit.current,
            scaled=scaled,
            by_key=self._split(intervals, scaled),
            outlier=np.zeros(len(intervals), dtype=bool),
            since=self.carried(visit, "since"),
        )
        return self._seen

    def _split(self, intervals: HostIntervals, scaled: np.ndarray) -> dict[str, np.ndarray]:
        """Host indexes by model key: group and which features are known."""
        known = ~np.isnan(scaled)
        by_key: dict[str, np.ndarray] = {}
        if not len(intervals):
            return by_key
        bits = len(self.names)
        groups, group_of = categories(np.asarray(intervals.group, dtype=str))
        pattern = known.astype(np.int64) @ (1 << np.arange(bits, dtype=np.int64))
        combined = group_of.astype(np.int64) << bits | pattern
        unique, inverse = np.unique(combined, return_inverse=True)  # integers: a sort beats comparison passes
        # a stable sort of small integers is a radix sort: one pass, not a million-row merge sort
        order = np.argsort(inverse.astype(np.uint16) if unique.size <= 1 << 16 else inverse, kind="stable")
        bounds = np.searchsorted(inverse[order], np.arange(len(unique) + 1))
        for u, code in enumerate(unique.tolist()):
            members = order[bounds[u] : bounds[u + 1]]
            if known[members[0]].sum() >= 2:
                by_key[f"{groups[code >> bits]}|{code & ((1 << bits) - 1):x}"] = members
        return by_key

    def score(self, intervals: HostIntervals, keys: HostKeys | None = None) -> DetectorOutput:
        """HalfSpaceTrees score of each host within its group; findings for lasting outliers."""
        cfg = self.config
        seen = self._observe(intervals, keys)
        t = seen.visit.t
        values, scaled = seen.values, seen.scaled
        honest = honest_pollers(intervals)
        scores = np.full(len(intervals), np.nan)
        findings = []
        for key, members in seen.by_key.items():
            model = self.models.get(key)
            if model is None or model.learned < max(cfg.min_learned, cfg.window_size):  # a first window must pass
                continue
            cols = np.flatnonzero(~np.isnan(scaled[members[0]]))
            x = scaled[np.ix_(members, cols)]
            s = tree_scores(model.current(cfg.window_size), x, cfg.height, cfg.window_size)
            scores[members] = s
            # which features stand out, only for the hosts the forest scores as outliers (a few)
            suspect = np.flatnonzero(s >= cfg.threshold)
            if not suspect.size:
                continue
            top = model.percentile(cfg.quantile)
            typical = scaling.unlevel(top * self.top[cols])
            above = (x[suspect] - top) * self.top[cols]
            named = (above >= np.log2(cfg.ratio)) & (values[np.ix_(members[suspect], cols)] - typical >= self.floors[cols])
            named[:, [self.names[c] == "socket_rate" for c in cols]] &= ~honest[members[suspect], None]
            stands = named.any(axis=1)
            seen.outlier[members[suspect[stands]]] = True
            group = key.split("|")[0]
            for p in np.flatnonzero(stands).tolist():
                m = int(suspect[p])
                i = int(members[m])
                since = seen.since[i] if not np.isnan(seen.since[i]) else t - seen.visit.length
                if t - since < cfg.persist:
                    continue
                findings.append(
                    finding(
                        intervals,
                        i,
                        "model.population",
                        "critical" if s[m] >= cfg.critical else "warning",
                        float(s[m]),
                        f"the {cfg.quantile * 100:g}th percentile of group {group} ({model.learned} host-intervals "
                        f"learned; forest score {s[m]:.2f}; an outlier for {(t - since) / 3600:.1f} h)",
                        [
                            Deviation(
                                self.names[cols[j]], float(values[i, cols[j]]), float(typical[j]), float(above[p, j]), "log2 above"
                            )
                            for j in np.flatnonzero(named[p])
                        ],
                    )
                )
        return DetectorOutput(scores={"population": scores}, findings=findings)

    def learn(self, intervals: HostIntervals, normal: np.ndarray, keys: HostKeys | None = None) -> None:
        """Keep every host's windowed values and outlier run; learn a sample of each
        group's hosts that nobody flagged and that are no outliers here either."""
        cfg = self.config
        seen = self._observe(intervals, keys)
        self._seen = None
        t = seen.visit.t
        calm = normal & ~seen.outlier & (t - seen.visit.first >= cfg.persist)
        for key, members in seen.by_key.items():
            members = members[calm[members]]
            if members.size == 0:
                continue
            if members.size > cfg.sample:
                members = self.rng.choice(members, cfg.sample, replace=False)
            known = ~np.isnan(seen.scaled[members[0]])
            columns = [n for n, k in zip(self.names, known) if k]
            model = self._model(key, columns)
            x = seen.scaled[np.ix_(members, np.flatnonzero(known))]
            for row in x.tolist():
                model.hst.learn_one(dict(zip(columns, row)))
            kept = model.recent if model.recent.size else np.zeros((0, x.shape[1]), dtype=np.float32)
            model.recent = np.concatenate([kept, x[: cfg.remember].astype(np.float32)])[-cfg.recent :]
            model.learned += int(members.size)
        began = np.where(np.isnan(seen.since), t - seen.visit.length, seen.since)
        self.close(seen.visit, since=np.where(seen.outlier, began, np.nan))

    def state(self) -> dict[str, Any]:
        """Per model: river's forest as arrays (:mod:`netmon.detect.forests`; no pickle) and numpy arrays."""
        return {
            **super().state(),
            "models": {
                key: {
                    "forest": forests.export(m.hst, m.columns),
                    "columns": list(m.columns),
                    "learned": m.learned,
                    "recent": m.recent,
                }
                for key, m in self.models.items()
            },
            "sampler": sampler_state(self.rng),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state`; an unusable state leaves the model cold, with a log line."""
        if list(state.get("features", [])) != list(self.names):
            log.warning("population state is for other features; starting cold", saved=state.get("features"))
            return
        cfg = self.config
        try:
            models = {}
            for key, m in state["models"].items():
                saved = tuple(int(m["forest"][p]) for p in ("n_trees", "height", "window_size"))
                if saved != (cfg.n_trees, cfg.height, cfg.window_size):
                    # scores walk cfg.height levels and weigh by cfg.window_size: another forest would be misread
                    raise ValueError(f"model {key} has (n_trees, height, window_size) {saved}, the config "
                                     f"{(cfg.n_trees, cfg.height, cfg.window_size)}")
                columns = [str(c) for c in m["columns"]]
                models[key] = Model(
                    forests.rebuild(m["forest"], columns),
                    columns,
                    int(m["learned"]),
                    np.asarray(m["recent"], dtype=np.float32),
                )
            rng = load_sampler(state["sampler"]) if "sampler" in state else np.random.default_rng(self.config.seed)
        except (KeyError, TypeError, ValueError, AttributeError, ArithmeticError) as exc:
            log.warning("population state unusable; starting cold", error=f"{type(exc).__name__}: {exc}")
            return
        self.models, self.rng = models, rng
        super().load_state(state)

    def nbytes(self) -> int:
        """Per-host state plus each forest's exported arrays (its size in a checkpoint)."""
        forest_arrays = (forests.export(m.hst, m.columns) for m in self.models.values())
        return super().nbytes() + sum(v.nbytes for f in forest_arrays for v in f.values() if isinstance(v, np.ndarray))


def build(config: Config) -> Population:
    return Population(config)
