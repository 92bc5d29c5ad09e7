"""The server's length prediction: a saved predictor read once, then one prompt at a time."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from seqsched.build import DEFAULT_PROXY, load_saved_predictor
from seqsched.request import Request

UNBOUNDED = 1 << 20  # a request without max_tokens: the prediction is not clamped


def load_predict(path: Path | None = None) -> Callable[[str, int | None], int]:
    """``predict(text, max_tokens) -> predicted output tokens`` from a saved predictor
    (default: the shipped text proxy, a fraction of a millisecond a prompt)."""
    predictor = load_saved_predictor(path if path is not None else DEFAULT_PROXY)

    def predict(text: str, max_tokens: int | None) -> int:
        limit = max_tokens if max_tokens is not None else UNBOUNDED
        request = Request(0, "served", prompt=text, max_new_tokens=limit)
        return max(1, min(limit, int(predictor.predict_requests([request])[0])))

    return predict
