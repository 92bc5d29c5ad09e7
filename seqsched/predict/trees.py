"""Gradient-boosted trees as plain arrays: scikit-learn's fitted ensembles, averaged,
evaluated with a few vectorized numpy steps per tree level.

Why not keep the fitted ``HistGradientBoostingRegressor``s: they can only be saved by
pickling (which runs code when loaded), and their ``predict`` costs ~10 µs of Python per
tree, 15 ms for the proxy's 1,500 trees on one prompt; here all trees descend at once, in
as many steps as the deepest tree has levels (~0.2 ms).

A node goes left when its feature is <= its threshold, or is NaN and the node sends
missing values left: the rule of scikit-learn's own predictor, so predictions match it
to rounding (a test checks it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

_CHUNK = 64  # rows evaluated together: memory of rows x nodes decisions stays a few MB
_FIELDS = ("feature", "threshold", "left", "right", "missing_left", "is_leaf", "value", "roots")


@dataclass(frozen=True)
class TreeEnsemble:
    """``baseline + sum of one leaf value per tree``; the nodes of every tree in one array,
    children as absolute indices (a leaf points at itself)."""

    feature: np.ndarray  # int64: the feature a node splits on
    threshold: np.ndarray  # float64
    left: np.ndarray  # int64
    right: np.ndarray  # int64
    missing_left: np.ndarray  # bool: NaN goes left
    is_leaf: np.ndarray  # bool
    value: np.ndarray  # float64: a leaf's contribution (already weighted)
    roots: np.ndarray  # int64: each tree's root node
    baseline: float
    num_features: int
    depth: int  # the deepest leaf's level: the number of descent steps

    def __post_init__(self) -> None:
        # children[node * 2 + go_right]: one lookup a level
        object.__setattr__(self, "_children", np.column_stack([self.left, self.right]).ravel())

    @classmethod
    def from_sklearn(cls, models: Sequence[Any]) -> TreeEnsemble:
        """The average of fitted ``HistGradientBoostingRegressor``s (identity link: the
        squared, absolute-error and quantile losses) as one ensemble."""
        if not models:
            raise ValueError("no fitted models to convert")
        num_features = int(models[0].n_features_in_)
        parts: list[np.ndarray] = []
        roots: list[int] = []
        offset = 0
        for model in models:
            if int(model.n_features_in_) != num_features:
                raise ValueError(f"models see different numbers of features ({model.n_features_in_}, {num_features})")
            if model.is_categorical_ is not None and np.any(model.is_categorical_):
                raise ValueError("categorical splits are not supported")
            for (tree,) in model._predictors:
                nodes = tree.nodes
                roots.append(offset)
                shifted = nodes.copy()
                leaf = nodes["is_leaf"].astype(bool)
                index = np.arange(offset, offset + len(nodes))
                shifted["left"] = np.where(leaf, index, nodes["left"].astype(np.int64) + offset)
                shifted["right"] = np.where(leaf, index, nodes["right"].astype(np.int64) + offset)
                parts.append(shifted)
                offset += len(nodes)
        nodes = np.concatenate(parts)
        leaf = nodes["is_leaf"].astype(bool)
        return cls(
            feature=np.where(leaf, 0, nodes["feature_idx"]).astype(np.int64),
            threshold=nodes["num_threshold"].astype(np.float64),
            left=nodes["left"].astype(np.int64),
            right=nodes["right"].astype(np.int64),
            missing_left=nodes["missing_go_to_left"].astype(bool),
            is_leaf=leaf,
            value=np.where(leaf, nodes["value"], 0.0) / len(models),
            roots=np.asarray(roots, dtype=np.int64),
            baseline=float(np.mean([float(np.ravel(m._baseline_prediction)[0]) for m in models])),
            num_features=num_features,
            depth=int(nodes["depth"].max()),
        )

    def predict(self, x: np.ndarray) -> np.ndarray:
        """One value per row of ``x`` (rows, num_features)."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.num_features:
            raise ValueError(f"expected rows of {self.num_features} features, got shape {x.shape}")
        if len(x) > _CHUNK:
            return np.concatenate([self.predict(x[i : i + _CHUNK]) for i in range(0, len(x), _CHUNK)])
        # Every node's decision for every row at once (rows x nodes), then the descent
        # only looks them up: two gathers a level instead of four.
        values = x[:, self.feature]
        go_right = values > self.threshold
        if np.isnan(values).any():
            go_right |= np.isnan(values) & ~self.missing_left
        children: np.ndarray = self._children  # type: ignore[attr-defined]
        offset = (np.arange(len(x)) * len(self.feature))[:, None]
        flat = go_right.ravel()
        node = np.broadcast_to(self.roots, (len(x), len(self.roots)))
        for _ in range(self.depth):
            node = children.take(node * 2 + flat.take(node + offset))
        result: np.ndarray = self.baseline + self.value[node].sum(axis=1)
        return result

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        arrays = {f"{prefix}.{name}": getattr(self, name) for name in _FIELDS}
        arrays[f"{prefix}.shape"] = np.array([self.num_features, self.depth], dtype=np.int64)
        arrays[f"{prefix}.baseline"] = np.array([self.baseline])
        return arrays

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], prefix: str) -> TreeEnsemble:
        num_features, depth = (int(v) for v in arrays[f"{prefix}.shape"])
        fields = {name: arrays[f"{prefix}.{name}"] for name in _FIELDS}
        baseline = float(arrays[f"{prefix}.baseline"][0])
        ensemble = cls(**fields, baseline=baseline, num_features=num_features, depth=depth)
        ensemble.check()
        return ensemble

    def check(self) -> None:
        """Refuse arrays that would index out of bounds or never reach a leaf."""
        n = len(self.feature)
        if any(len(getattr(self, f)) != n for f in _FIELDS if f != "roots"):
            raise ValueError("tree arrays of different lengths")
        for name in ("left", "right", "roots"):
            a = getattr(self, name)
            if len(a) and (a.min() < 0 or a.max() >= n):
                raise ValueError(f"tree array {name!r} points outside the {n} nodes")
        if n and (self.feature.min() < 0 or self.feature.max() >= self.num_features):
            raise ValueError(f"a tree splits on a feature outside 0..{self.num_features - 1}")
        node = np.unique(self.roots)
        for _ in range(self.depth):  # every path, level by level (a leaf points at itself)
            node = np.unique(np.concatenate([self.left[node], self.right[node]]))
        if not self.is_leaf[node].all():
            raise ValueError(f"a tree is deeper than its stated depth {self.depth}")
