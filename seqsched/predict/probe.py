"""A length probe: one prefill of the serving model per prompt, and a small regressor on
the last prompt token's final hidden state. No generation, so it costs about one prefill
(which a serving engine could even share), far less than PiA or LoRA's generation.

Regressors: ``ridge`` (standardized features, Ridge on log length, the geometric mean
estimate) or ``quantile`` (HistGradientBoosting with the quantile loss at ``quantile``:
a high quantile under-predicts less, which FCR turns into fewer re-runs).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from seqsched.predict import _llm
from seqsched.predict.arrays import load_arrays, save_arrays
from seqsched.predict.base import LengthPredictor, read_manifest, write_manifest
from seqsched.predict.linear import LinearModel
from seqsched.predict.trees import TreeEnsemble
from seqsched.request import Request

Regressor = Literal["ridge", "quantile"]
REGRESSOR_FILE = "regressor.npz"  # arrays (arrays.py); older versions pickled it as regressor.joblib


@dataclass(frozen=True)
class ProbeConfig:
    regressor: Regressor = "ridge"
    alpha: float = 1.0  # ridge strength
    quantile: float = 0.7  # quantile regressor's target quantile
    num_layers: int = 1  # average the last token's state over the last k layers
    batch_size: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        if self.regressor not in ("ridge", "quantile"):
            raise ValueError(f"regressor ({self.regressor!r}) must be 'ridge' or 'quantile'")
        if not self.alpha > 0:
            raise ValueError(f"alpha ({self.alpha}) must be > 0")
        if not 0 < self.quantile < 1:
            raise ValueError(f"quantile ({self.quantile}) must be in (0, 1)")
        if self.num_layers < 1 or self.batch_size < 1:
            raise ValueError(f"num_layers ({self.num_layers}) and batch_size ({self.batch_size}) must be >= 1")


class ProbePredictor(LengthPredictor):
    kind = "probe"

    def __init__(self, model: Any, tokenizer: Any, limit: int = 512, config: ProbeConfig | None = None) -> None:
        if limit < 1:
            raise ValueError(f"limit ({limit}) must be >= 1")
        self.model = model
        self.tokenizer = tokenizer
        self.limit = limit
        self.config = config or ProbeConfig()
        self.regressor: LinearModel | TreeEnsemble | None = None

    def features(self, conversations: Sequence[_llm.Messages]) -> np.ndarray:
        """Each conversation encoded as the engine serves it, prefilled once."""
        prompts = [_llm.encode(self.tokenizer, c) for c in conversations]
        return _llm.last_token_states(
            self.model, self.tokenizer, prompts, self.config.batch_size, self.config.num_layers
        )

    def fit(self, texts: Sequence[str], lengths: Sequence[int]) -> None:
        if len(texts) != len(lengths) or len(texts) < 2:
            raise ValueError(f"need as many texts as lengths, at least 2 ({len(texts)} vs {len(lengths)})")
        x = self.features([_llm.user_turn(t) for t in texts])
        y = np.asarray(lengths, dtype=np.float64)
        self.regressor = fit_regressor(self.config, x, y)

    def predict(self, texts: Sequence[str]) -> list[int]:
        return self._predict([_llm.user_turn(t) for t in texts], [self.limit] * len(texts))

    def predict_requests(self, requests: Sequence[Request]) -> list[int]:
        limits = [min(self.limit, r.max_new_tokens) for r in requests]
        return self._predict([_llm.with_suffix(r, "") for r in requests], limits)

    def _predict(self, conversations: Sequence[_llm.Messages], limits: Sequence[int]) -> list[int]:
        if self.regressor is None:
            raise ValueError("the probe predictor is not trained: fit or load it first")
        if not conversations:
            return []
        raw = self.regressor.predict(self.features(conversations))
        if self.config.regressor == "ridge":
            raw = np.exp(raw)
        return [int(min(max(1.0, np.ceil(v)), limit)) for v, limit in zip(raw, limits, strict=True)]

    def save(self, path: str | Path) -> None:
        if self.regressor is None:
            raise ValueError("the probe predictor is not trained: fit it first")
        config = {
            "model_path": _llm.model_path(self.model, path),
            "limit": self.limit,
            "probe": dataclasses.asdict(self.config),
        }
        save_regressor(write_manifest(path, self.kind, config), self.config, self.regressor)

    @classmethod
    def load(cls, path: str | Path, model: Any = None, tokenizer: Any = None) -> ProbePredictor:
        config = read_manifest(path, cls.kind)["config"]
        probe = ProbeConfig(**config["probe"])
        arrays = load_arrays(Path(path) / REGRESSOR_FILE)  # before the model: a refusal is quick
        try:
            if probe.regressor == "ridge":
                regressor: LinearModel | TreeEnsemble = LinearModel.from_arrays(arrays, "ridge")
            else:
                regressor = TreeEnsemble.from_arrays(arrays, "quantile")
        except KeyError as e:
            raise ValueError(f"{path}: {REGRESSOR_FILE} lacks the array {e}") from e
        model, tokenizer = _llm.load_base(_llm.resolve_model_path(config["model_path"], path), model, tokenizer)
        predictor = cls(model, tokenizer, config["limit"], probe)
        predictor.regressor = regressor
        return predictor


def fit_regressor(config: ProbeConfig, x: np.ndarray, y: np.ndarray) -> LinearModel | TreeEnsemble:
    """Fit the configured scikit-learn regressor, kept as arrays. Ridge learns log length."""
    model = make_regressor(config)
    return regressor_from_sklearn(
        config, model.fit(x, np.log(np.maximum(y, 1.0)) if config.regressor == "ridge" else y)
    )


def regressor_from_sklearn(config: ProbeConfig, model: Any) -> LinearModel | TreeEnsemble:
    """A fitted regressor of ``config``'s kind as arrays."""
    return LinearModel.from_sklearn(model) if config.regressor == "ridge" else TreeEnsemble.from_sklearn([model])


def save_regressor(directory: Path, config: ProbeConfig, regressor: LinearModel | TreeEnsemble) -> None:
    save_arrays(directory / REGRESSOR_FILE, regressor.to_arrays(config.regressor))


def make_regressor(config: ProbeConfig) -> Any:
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if config.regressor == "ridge":
        return make_pipeline(StandardScaler(), Ridge(alpha=config.alpha))
    return HistGradientBoostingRegressor(
        loss="quantile", quantile=config.quantile, max_iter=200, random_state=config.seed
    )
