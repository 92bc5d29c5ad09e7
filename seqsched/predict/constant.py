"""Vanilla: every request is predicted at its limit (or at one fixed value)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from seqsched.predict.base import LengthPredictor, read_manifest, write_manifest
from seqsched.request import Request


class ConstantPredictor(LengthPredictor):
    kind = "constant"

    def __init__(self, value: int | None = None) -> None:
        if value is not None and value < 1:
            raise ValueError(f"constant value ({value}) must be >= 1")
        self.value = value

    def fit(self, texts: Sequence[str], lengths: Sequence[int]) -> None:
        """The best constant for absolute error: the median length."""
        if not lengths:
            raise ValueError("cannot fit a constant on no lengths")
        ordered = sorted(lengths)
        self.value = max(1, int(ordered[len(ordered) // 2]))

    def predict(self, texts: Sequence[str]) -> list[int]:
        if self.value is None:
            raise ValueError("a constant predictor without a value predicts limits: use predict_requests")
        return [self.value] * len(texts)

    def predict_requests(self, requests: Sequence[Request]) -> list[int]:
        return [self.value if self.value is not None else r.max_new_tokens for r in requests]

    def save(self, path: str | Path) -> None:
        write_manifest(path, self.kind, {"value": self.value})

    @classmethod
    def load(cls, path: str | Path) -> ConstantPredictor:
        return cls(read_manifest(path, cls.kind)["config"]["value"])
