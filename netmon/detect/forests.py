"""river's ``HalfSpaceTrees`` as plain arrays and back, so a checkpoint holds data, never code.

river offers pickle as its only serialisation, and unpickling runs whatever the
bytes name. A forest is fully described by numbers: per tree, in heap order
(node i has children 2i+1 and 2i+2; every tree is complete, ``height`` levels of
branches above one level of leaves), the split feature (an index into the
model's feature names), the split threshold and the two masses; plus the
model's parameters, its learn counter inside the current window and its random
generator's state (it still matters while the trees are not yet built).
:func:`rebuild` makes the same river objects again from those arrays:
a rebuilt model scores and learns exactly as the one exported.

river is imported by the functions that use it, not with this module: the population
detector's module (and so every config load) imports this one, and river imports scipy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from river.anomaly import HalfSpaceTrees

#: random.Random.getstate() for the Mersenne Twister: version 3, 625 words.
_RNG_VERSION = 3
_RNG_WORDS = 625


def export(model: HalfSpaceTrees, columns: list[str]) -> dict[str, Any]:
    """The model as JSON numbers and numpy arrays; ``columns`` names its features in index order."""
    from river.tree.padded import PaddedBranch

    where = {name: i for i, name in enumerate(columns)}
    size = 2 ** (model.height + 1) - 1
    trees = len(model.trees)
    feature = np.full((trees, size), -1, dtype=np.int32)
    threshold = np.zeros((trees, size))
    l_mass = np.zeros((trees, size), dtype=np.int64)
    r_mass = np.zeros((trees, size), dtype=np.int64)
    for t, root in enumerate(model.trees):
        level, i = [root], 0
        while level:
            below = []
            for node in level:
                l_mass[t, i], r_mass[t, i] = node.l_mass, node.r_mass
                if isinstance(node, PaddedBranch):
                    feature[t, i] = where[node.feature]
                    threshold[t, i] = node.threshold
                    below.extend(node.children)
                i += 1
            level = below
    version, words, gauss = model.rng.getstate()
    return {
        "n_trees": int(model.n_trees),
        "height": int(model.height),
        "window_size": int(model.window_size),
        "seed": model.seed,
        "counter": int(model.counter),
        "first_window": bool(model._first_window),
        "rng": np.asarray(words, dtype=np.uint32),
        "rng_gauss": gauss,
        "feature": feature,
        "threshold": threshold,
        "l_mass": l_mass,
        "r_mass": r_mass,
    }


def _tree(arrays: dict[str, np.ndarray], t: int, height: int, columns: list[str]) -> Any:
    """Tree ``t`` of ``arrays`` (heap order: node i's children at 2i+1, 2i+2) as river's nodes."""
    from river.tree.padded import PaddedBranch, PaddedLeaf  # once per tree, not per node

    def node(i: int, depth: int) -> Any:
        l_mass, r_mass = int(arrays["l_mass"][t, i]), int(arrays["r_mass"][t, i])
        if depth == 0:
            return PaddedLeaf(l_mass=l_mass, r_mass=r_mass)
        index = int(arrays["feature"][t, i])
        if not 0 <= index < len(columns):
            raise ValueError(f"tree {t} node {i} splits on feature {index}, the model has {len(columns)}")
        left, right = node(2 * i + 1, depth - 1), node(2 * i + 2, depth - 1)
        return PaddedBranch(left, right, columns[index], float(arrays["threshold"][t, i]), l_mass, r_mass)

    return node(0, height)


def rebuild(state: dict[str, Any], columns: list[str]) -> HalfSpaceTrees:
    """The model :func:`export` described; ValueError (or KeyError/TypeError) when the arrays do not fit."""
    n_trees, height, window_size = int(state["n_trees"]), int(state["height"]), int(state["window_size"])
    if not (1 <= n_trees <= 1000 and 1 <= height <= 20 and window_size >= 1):
        raise ValueError(f"forest parameters out of range: {n_trees} trees, height {height}, window {window_size}")
    from river.anomaly import HalfSpaceTrees

    seed = state["seed"]
    model = HalfSpaceTrees(n_trees=n_trees, height=height, window_size=window_size, seed=None if seed is None else int(seed))
    words = np.asarray(state["rng"])
    if words.shape != (_RNG_WORDS,):
        raise ValueError(f"random generator state has shape {words.shape}, expected ({_RNG_WORDS},)")
    gauss = state["rng_gauss"]
    model.rng.setstate((_RNG_VERSION, tuple(int(w) for w in words), None if gauss is None else float(gauss)))
    arrays = {name: np.asarray(state[name]) for name in ("feature", "threshold", "l_mass", "r_mass")}
    trees = arrays["feature"].shape[0] if arrays["feature"].ndim == 2 else -1
    want = (trees, 2 ** (height + 1) - 1)
    if trees not in (0, n_trees) or any(a.shape != want for a in arrays.values()):
        raise ValueError(f"tree arrays of shapes {[a.shape for a in arrays.values()]}, expected {want}")
    model.trees = [_tree(arrays, t, height, columns) for t in range(trees)]
    model._tree_nodes = [list(tree.iter_dfs()) for tree in model.trees]
    model.counter = int(state["counter"])
    model._first_window = bool(state["first_window"])
    return model

