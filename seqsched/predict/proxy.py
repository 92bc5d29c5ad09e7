"""Proxy: a small stacked model that predicts response length from the prompt text alone,
in well under a millisecond per prompt on one CPU core (no LLM involved).

Two levels, as in classic stacking:
1. From TF-IDF n-grams of the prompt (``features.PromptVectorizer``):
   - one multi-output ridge regression of log(length) and of "length > t" for a few
     training-length quantiles t (what kind of answer: one word, a paragraph, an essay);
   - the log lengths of the k most similar training prompts (cosine, in a 64-dim SVD of
     the TF-IDF: an exact sparse search costs ~1 ms a prompt), whose answers look alike.
   For the training rows these are computed out of fold, so level 2 learns how much to
   trust them on prompts they have not seen.
2. Gradient-boosted trees on level 1 plus hand features (sizes, requested counts),
   fitted on log(length) for absolute error: their prediction is the conditional median,
   the point that minimizes the paper's Error. With ``quantile=q`` the trees fit the
   q-quantile instead (e.g. 0.8 for fewer under-predictions, hence fewer re-runs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from scipy import sparse
from sklearn.decomposition import TruncatedSVD
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import Ridge
from sklearn.model_selection import KFold
from threadpoolctl import threadpool_limits

from seqsched.predict.arrays import load_arrays, save_arrays
from seqsched.predict.base import LengthPredictor, read_manifest, write_manifest
from seqsched.predict.features import NUM_HAND_FEATURES, PromptVectorizer, hand_features
from seqsched.predict.trees import TreeEnsemble

FORMAT_VERSION = 2  # 1: a joblib pickle of scikit-learn objects; 2: arrays (arrays.py)
MODEL_FILE = "proxy.npz"


@dataclass(frozen=True)
class ProxyConfig:
    seed: int = 0
    quantile: float | None = None  # None: the median (least absolute error)
    num_folds: int = 5  # folds for the out-of-fold level-1 features
    ridge_alpha: float = 3.0
    class_quantiles: tuple[float, ...] = (0.2, 0.4, 0.65, 0.9)  # thresholds of "length > t"
    num_neighbors: int = 20
    num_components: int = 64  # SVD dimensions for the neighbor search
    max_iter: int = 300  # boosting rounds
    learning_rate: float = 0.05
    min_samples_leaf: int = 40
    num_bags: int = 5  # tree models averaged, each on level-1 features from other folds
    num_threads: int = 1  # one thread: more oversubscribes small fits on shared CPUs

    def __post_init__(self) -> None:
        if self.quantile is not None and not 0.0 < self.quantile < 1.0:
            raise ValueError(f"quantile ({self.quantile}) must be in (0, 1), or None for the median")
        if self.num_folds < 2:
            raise ValueError(f"num_folds ({self.num_folds}) must be >= 2")
        if self.ridge_alpha <= 0:
            raise ValueError(f"ridge_alpha ({self.ridge_alpha}) must be > 0")
        if not all(0.0 < q < 1.0 for q in self.class_quantiles):
            raise ValueError(f"class_quantiles ({self.class_quantiles}) must all be in (0, 1)")
        if self.num_neighbors < 1:
            raise ValueError(f"num_neighbors ({self.num_neighbors}) must be >= 1")
        if self.num_components < 1:
            raise ValueError(f"num_components ({self.num_components}) must be >= 1")
        if self.max_iter < 1:
            raise ValueError(f"max_iter ({self.max_iter}) must be >= 1")
        if not 0.0 < self.learning_rate <= 1.0:
            raise ValueError(f"learning_rate ({self.learning_rate}) must be in (0, 1]")
        if self.min_samples_leaf < 1:
            raise ValueError(f"min_samples_leaf ({self.min_samples_leaf}) must be >= 1")
        if self.num_bags < 1:
            raise ValueError(f"num_bags ({self.num_bags}) must be >= 1")
        if self.num_threads < 1:
            raise ValueError(f"num_threads ({self.num_threads}) must be >= 1")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProxyConfig:
        return cls(**{**data, "class_quantiles": tuple(data.get("class_quantiles", cls.class_quantiles))})


@dataclass
class _Level1:
    """The fitted level-1 models: what level 2 sees of a prompt besides hand features."""

    ridge_coef: np.ndarray  # (targets, features): a fitted Ridge's coef_ and intercept_
    ridge_intercept: np.ndarray
    neighbors: np.ndarray  # the training prompts' SVD embeddings, scaled to unit length
    neighbor_log_lengths: np.ndarray
    num_neighbors: int
    num_neighbor_features: ClassVar[int] = 6

    def __post_init__(self) -> None:
        # sparse @ dense copies a transposed (non-contiguous) operand on every call
        self._coef_t = np.ascontiguousarray(self.ridge_coef.T)

    def features(self, x: sparse.csr_matrix, embedding: np.ndarray) -> np.ndarray:
        ridge = np.asarray(x @ self._coef_t) + self.ridge_intercept
        return np.hstack([ridge, self._neighbor_features(embedding)])

    _ARRAYS: ClassVar[tuple[str, ...]] = ("ridge_coef", "ridge_intercept", "neighbors", "neighbor_log_lengths")

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {f"level1.{name}": getattr(self, name) for name in self._ARRAYS}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], num_neighbors: int) -> _Level1:
        ridge_coef, ridge_intercept, neighbors, logs = (arrays[f"level1.{name}"] for name in cls._ARRAYS)
        level1 = cls(ridge_coef, ridge_intercept, neighbors, logs, num_neighbors)
        if len(level1.neighbors) != len(level1.neighbor_log_lengths) or len(level1.neighbors) == 0:
            raise ValueError("level-1 neighbor arrays of different (or zero) lengths")
        return level1

    def _neighbor_features(self, embedding: np.ndarray) -> np.ndarray:
        similarity = embedding @ self.neighbors.T  # unit rows: cosine similarity
        k = min(self.num_neighbors, similarity.shape[1])
        top = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        sim = np.take_along_axis(similarity, top, axis=1)
        order = np.argsort(-sim, axis=1, kind="stable")
        top, sim = np.take_along_axis(top, order, axis=1), np.take_along_axis(sim, order, axis=1)
        logs = self.neighbor_log_lengths[top]
        weights = np.maximum(sim, 1e-3)
        return np.column_stack([
            logs[:, :5].mean(axis=1),
            np.median(logs, axis=1),
            (logs * weights).sum(axis=1) / weights.sum(axis=1),
            logs.std(axis=1),
            sim[:, 0],
            sim.mean(axis=1),
        ])  # fmt: skip


class ProxyPredictor(LengthPredictor):
    kind = "proxy"

    def __init__(self, config: ProxyConfig | None = None) -> None:
        self.config = config or ProxyConfig()
        self._vectorizer: PromptVectorizer | None = None
        self._svd_components: np.ndarray | None = None  # a fitted TruncatedSVD's components_
        self._projection: np.ndarray | None = None  # their transpose, contiguous (_set_svd)
        self._level1: _Level1 | None = None
        self._trees: TreeEnsemble | None = None

    def fit(self, texts: Sequence[str], lengths: Sequence[int]) -> None:
        """Learn from prompt texts and their target lengths (the max over samples)."""
        cfg = self.config
        if len(texts) != len(lengths):
            raise ValueError(f"need one length per text ({len(texts)} texts, {len(lengths)} lengths)")
        if len(texts) < 2 * cfg.num_folds:
            raise ValueError(f"need at least {2 * cfg.num_folds} texts to fit, got {len(texts)}")
        y = np.asarray(lengths, dtype=np.float64)
        if (y < 1).any():
            raise ValueError(f"lengths must be >= 1 (got {y.min():g})")
        log_y = np.log1p(y)
        thresholds = np.quantile(y, cfg.class_quantiles)
        targets = np.column_stack([log_y, *((y > t).astype(np.float64) for t in thresholds)])
        with threadpool_limits(cfg.num_threads):
            # The text representation is unsupervised, so it is fitted once, on every text.
            self._vectorizer = PromptVectorizer().fit(texts)
            x = self._vectorizer.transform(texts)
            num_components = min(cfg.num_components, x.shape[1] - 1)
            self._set_svd(TruncatedSVD(num_components, random_state=cfg.seed).fit(x).components_)
            embedding = self._embed(x)
            hand = hand_features(texts)
            bags = [
                self._new_trees(bag).fit(np.hstack([self._out_of_fold(x, embedding, targets, bag), hand]), log_y)
                for bag in range(cfg.num_bags)
            ]
            self._trees = TreeEnsemble.from_sklearn(bags)
            self._level1 = self._fit_level1(x, embedding, targets)

    def predict(self, texts: Sequence[str]) -> list[int]:
        if self._vectorizer is None or self._level1 is None or self._trees is None:
            raise ValueError("the proxy predictor is not fitted: call fit() or load() first")
        if len(texts) == 0:
            return []
        # No thread limit here: these products are too small for BLAS to thread, and
        # threadpoolctl's own call costs ~2.5 ms, ten times the prediction's.
        x = self._vectorizer.transform(texts)
        level1 = self._level1.features(x, self._embed(x))
        log_pred = self._trees.predict(np.hstack([level1, hand_features(texts)]))
        return [max(1, round(p)) for p in np.expm1(log_pred).tolist()]

    def save(self, path: str | Path) -> None:
        if self._vectorizer is None or self._level1 is None or self._trees is None or self._svd_components is None:
            raise ValueError("cannot save an unfitted proxy predictor")
        directory = write_manifest(path, self.kind, {**asdict(self.config), "format_version": FORMAT_VERSION})
        arrays = {
            **self._vectorizer.to_arrays(),
            "svd.components": self._svd_components,
            **self._level1.to_arrays(),
            **self._trees.to_arrays("trees"),
        }
        save_arrays(directory / MODEL_FILE, arrays)

    @classmethod
    def load(cls, path: str | Path) -> ProxyPredictor:
        config = dict(read_manifest(path, cls.kind)["config"])
        version = config.pop("format_version", None)
        arrays = load_arrays(Path(path) / MODEL_FILE)  # refuses a version-1 pickle, with a message
        if version != FORMAT_VERSION:
            raise ValueError(f"{path}: proxy format version {version!r}, this code reads {FORMAT_VERSION}")
        proxy_config = ProxyConfig.from_dict(config)
        try:
            parts = (
                PromptVectorizer.from_arrays(arrays),
                arrays["svd.components"],
                _Level1.from_arrays(arrays, proxy_config.num_neighbors),
                TreeEnsemble.from_arrays(arrays, "trees"),
            )
        except KeyError as e:
            raise ValueError(f"{path}: {MODEL_FILE} lacks the array {e}") from e
        except (ValueError, TypeError) as e:
            raise ValueError(f"{path}: {MODEL_FILE} is inconsistent ({e})") from e
        try:
            return cls.from_parts(proxy_config, *parts)
        except ValueError as e:
            raise ValueError(f"{path}: {MODEL_FILE} is inconsistent: {e}") from e

    @classmethod
    def from_parts(
        cls,
        config: ProxyConfig,
        vectorizer: PromptVectorizer,
        svd_components: np.ndarray,
        level1: _Level1,
        trees: TreeEnsemble,
    ) -> ProxyPredictor:
        """A fitted proxy from its parts (loaded, or converted from an old pickle), checked
        to fit together."""
        predictor = cls(config)
        predictor._vectorizer, predictor._level1, predictor._trees = vectorizer, level1, trees
        predictor._set_svd(svd_components)
        predictor._check_shapes()
        return predictor

    def _set_svd(self, components: np.ndarray) -> None:
        self._svd_components = components
        self._projection = np.ascontiguousarray(components.T)  # contiguous: see _Level1

    def _check_shapes(self) -> None:
        assert self._vectorizer is not None and self._level1 is not None and self._trees is not None
        assert self._svd_components is not None
        num_text = sum(len(b.idf) for b in self._vectorizer.blocks.values())
        coef, components = self._level1.ridge_coef, self._svd_components
        expected = coef.shape[0] + _Level1.num_neighbor_features + NUM_HAND_FEATURES
        checks = [
            (coef.shape[1] == num_text, f"ridge sees {coef.shape[1]} text features, the vectorizer makes {num_text}"),
            (components.shape[1] == num_text, f"SVD sees {components.shape[1]} text features, not {num_text}"),
            (
                self._level1.neighbors.shape[1] == components.shape[0],
                f"neighbors have {self._level1.neighbors.shape[1]} dimensions, the SVD {components.shape[0]}",
            ),
            (self._trees.num_features == expected, f"trees see {self._trees.num_features} features, not {expected}"),
        ]
        problems = [message for ok, message in checks if not ok]
        if problems:
            raise ValueError("; ".join(problems))

    def _embed(self, x: sparse.csr_matrix) -> np.ndarray:
        assert self._projection is not None
        embedding = np.asarray(x @ self._projection, dtype=np.float32)
        unit: np.ndarray = embedding / np.maximum(np.linalg.norm(embedding, axis=1, keepdims=True), 1e-12)
        return unit

    def _out_of_fold(self, x: sparse.csr_matrix, embedding: np.ndarray, targets: np.ndarray, bag: int) -> np.ndarray:
        """Level-1 features of every training prompt from models that did not see it."""
        level1 = np.zeros((x.shape[0], targets.shape[1] + _Level1.num_neighbor_features))
        folds = KFold(self.config.num_folds, shuffle=True, random_state=self.config.seed + bag)
        for train, held_out in folds.split(x):
            fold = self._fit_level1(x[train], embedding[train], targets[train])
            level1[held_out] = fold.features(x[held_out], embedding[held_out])
        return level1

    def _fit_level1(self, x: sparse.csr_matrix, embedding: np.ndarray, targets: np.ndarray) -> _Level1:
        ridge = Ridge(alpha=self.config.ridge_alpha).fit(x, targets)
        return _Level1(ridge.coef_, ridge.intercept_, embedding, targets[:, 0], self.config.num_neighbors)

    def _new_trees(self, bag: int) -> HistGradientBoostingRegressor:
        cfg = self.config
        return HistGradientBoostingRegressor(
            loss="absolute_error" if cfg.quantile is None else "quantile",
            quantile=cfg.quantile,
            max_iter=cfg.max_iter,
            learning_rate=cfg.learning_rate,
            min_samples_leaf=cfg.min_samples_leaf,
            early_stopping=False,
            random_state=cfg.seed + bag,
        )
