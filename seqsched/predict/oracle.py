"""The ground-truth oracle: lengths known in advance, keyed by request id, or by the prompt's
text (``by="text"``: a server's requests have no ids of the trace's; a benchmark that knows
each prompt's forced length serves with this one, as the ceiling any predictor can reach)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path

from seqsched.predict.base import LengthPredictor, read_manifest, write_manifest
from seqsched.request import Request


class OraclePredictor(LengthPredictor):
    kind = "oracle"

    def __init__(self, lengths: Mapping[str, int], by: str = "id") -> None:
        if by not in ("id", "text"):
            raise ValueError(f"by ({by!r}) must be 'id' or 'text'")
        self.by = by
        bad = {k: v for k, v in lengths.items() if int(v) < 0}
        if bad:
            key, value = next(iter(bad.items()))
            raise ValueError(f"oracle length for {key!r} ({value}) must be >= 0")
        self.lengths = {str(k): max(1, int(v)) for k, v in lengths.items()}

    def predict(self, texts: Sequence[str]) -> list[int]:
        raise TypeError("the oracle knows lengths by request id: use predict_requests")

    def predict_requests(self, requests: Sequence[Request]) -> list[int]:
        keys = [self.key(r.text) if self.by == "text" else r.request_id for r in requests]
        missing = [r.request_id for r, k in zip(requests, keys, strict=True) if k not in self.lengths]
        if missing:
            shown = ", ".join(repr(m) for m in missing[:5])
            raise KeyError(f"the oracle has no length for {len(missing)} request(s): {shown}")
        return [self.lengths[k] for k in keys]

    @staticmethod
    def key(text: str) -> str:
        """A prompt's key when known by its text: a digest, so the manifest holds no prompt."""
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]

    def save(self, path: str | Path) -> None:
        write_manifest(path, self.kind, {"lengths": self.lengths, "by": self.by})

    @classmethod
    def load(cls, path: str | Path) -> OraclePredictor:
        config = read_manifest(path, cls.kind)["config"]
        return cls(config["lengths"], config.get("by", "id"))
