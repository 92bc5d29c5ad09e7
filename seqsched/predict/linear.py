"""A fitted linear regressor as two arrays: ``x @ coef + intercept``.

A scikit-learn ``StandardScaler`` -> ``Ridge`` pipeline folds into one such map (the
scaling moves into the weights), so it saves and loads without pickle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class LinearModel:
    coef: np.ndarray  # (features,)
    intercept: float

    @classmethod
    def from_sklearn(cls, model: Any) -> LinearModel:
        """From a fitted ``Ridge`` (or any single-output linear model), or a pipeline of a
        ``StandardScaler`` and one."""
        steps = [s for _, s in model.steps] if hasattr(model, "steps") else [model]
        *scalers, linear = steps
        coef = np.asarray(linear.coef_, dtype=np.float64).ravel()
        intercept = float(np.ravel(linear.intercept_)[0])
        for scaler in reversed(scalers):
            if type(scaler).__name__ != "StandardScaler":
                raise ValueError(f"cannot fold a {type(scaler).__name__} into a linear model")
            scale = scaler.scale_ if scaler.scale_ is not None else np.ones_like(coef)
            mean = scaler.mean_ if scaler.mean_ is not None else np.zeros_like(coef)
            coef = coef / scale
            intercept -= float(coef @ mean)
        return cls(coef, intercept)

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.coef):
            raise ValueError(f"expected rows of {len(self.coef)} features, got shape {x.shape}")
        result: np.ndarray = x @ self.coef + self.intercept
        return result

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}.coef": self.coef, f"{prefix}.intercept": np.array([self.intercept])}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], prefix: str) -> LinearModel:
        coef = np.asarray(arrays[f"{prefix}.coef"], dtype=np.float64)
        if coef.ndim != 1:
            raise ValueError(f"{prefix}.coef must be one row of weights, got shape {coef.shape}")
        return cls(coef, float(arrays[f"{prefix}.intercept"][0]))
