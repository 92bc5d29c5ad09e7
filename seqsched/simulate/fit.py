"""Fitting a cost's terms to measured seconds: least squares with every term >= 0. Shared
by the static cost model and the continuous step cost. No torch here."""

from __future__ import annotations

import itertools

import numpy as np


def nnls_relative(x: np.ndarray, y: np.ndarray, relative: bool = True) -> tuple[float, ...]:
    """Minimise sum(((x @ p - y) / y) ** 2) over p >= 0 (``relative=False``: plain
    squared seconds). Exact for a handful of columns: try every support set and keep
    the best feasible one."""
    xw, yw = (x / y[:, None], np.ones_like(y)) if relative else (x, y)
    best: tuple[float, np.ndarray] | None = None
    ncols = x.shape[1]
    for size in range(1, ncols + 1):
        for support in itertools.combinations(range(ncols), size):
            p = np.zeros(ncols)
            p[list(support)] = np.linalg.lstsq(xw[:, support], yw, rcond=None)[0]
            if (p < 0).any():
                continue
            loss = float(np.sum((xw @ p - yw) ** 2))
            if best is None or loss < best[0] - 1e-15:
                best = (loss, p)
    assert best is not None, "a single non-negative column always has a feasible fit"
    return tuple(float(v) for v in best[1])
