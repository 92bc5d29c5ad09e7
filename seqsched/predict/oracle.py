"""The ground-truth oracle: lengths known in advance, keyed by request id."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from seqsched.predict.base import LengthPredictor, read_manifest, write_manifest
from seqsched.request import Request


class OraclePredictor(LengthPredictor):
    kind = "oracle"

    def __init__(self, lengths: Mapping[str, int]) -> None:
        bad = {k: v for k, v in lengths.items() if int(v) < 0}
        if bad:
            key, value = next(iter(bad.items()))
            raise ValueError(f"oracle length for {key!r} ({value}) must be >= 0")
        self.lengths = {str(k): max(1, int(v)) for k, v in lengths.items()}

    def predict(self, texts: Sequence[str]) -> list[int]:
        raise TypeError("the oracle knows lengths by request id: use predict_requests")

    def predict_requests(self, requests: Sequence[Request]) -> list[int]:
        missing = [r.request_id for r in requests if r.request_id not in self.lengths]
        if missing:
            shown = ", ".join(repr(m) for m in missing[:5])
            raise KeyError(f"the oracle has no length for {len(missing)} request(s): {shown}")
        return [self.lengths[r.request_id] for r in requests]

    def save(self, path: str | Path) -> None:
        write_manifest(path, self.kind, {"lengths": self.lengths})

    @classmethod
    def load(cls, path: str | Path) -> OraclePredictor:
        return cls(read_manifest(path, cls.kind)["config"]["lengths"])
