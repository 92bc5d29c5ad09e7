"""A safety margin on any predictor: ``ceil(scale * predicted + add)``.

Under-predictions cost the most under FCR (a failed row re-runs from scratch), so a
learned predictor usually schedules better with a margin above its point estimate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from seqsched.predict.base import LengthPredictor
from seqsched.request import Request


class MarginPredictor(LengthPredictor):
    kind = "margin"

    def __init__(self, inner: LengthPredictor, scale: float = 1.0, add: float = 0) -> None:
        if not scale > 0:
            raise ValueError(f"margin scale ({scale}) must be > 0")
        if not math.isfinite(add):
            raise ValueError(f"margin add ({add}) must be finite")
        self.inner = inner
        self.scale = scale
        self.add = add

    def _widen(self, predicted: Sequence[int]) -> list[int]:
        return [max(1, math.ceil(self.scale * p + self.add)) for p in predicted]

    def predict(self, texts: Sequence[str]) -> list[int]:
        return self._widen(self.inner.predict(texts))

    def predict_requests(self, requests: Sequence[Request]) -> list[int]:
        return self._widen(self.inner.predict_requests(requests))


def with_margin(predictor: LengthPredictor, scale: float = 1.0, add: float = 0) -> LengthPredictor:
    """``predictor`` itself when the margin is a no-op, else wrapped in a margin.

    The scheduler clamps every prediction to its request's limit, so a margin never
    asks for more than the limit."""
    if scale == 1.0 and add == 0:
        return predictor
    return MarginPredictor(predictor, scale, add)
