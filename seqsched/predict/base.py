"""The length-predictor interface, and saving/loading any predictor by its kind."""

from __future__ import annotations

import abc
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from seqsched.request import Request

MANIFEST = "predictor.json"


class LengthPredictor(abc.ABC):
    """Predicts each request's response length, in decode steps (EOS included)."""

    kind: ClassVar[str]

    def fit(self, texts: Sequence[str], lengths: Sequence[int]) -> None:
        """Learn from prompt texts and their (max over samples) response lengths."""
        raise NotImplementedError(f"the {self.kind!r} predictor is not trained")

    @abc.abstractmethod
    def predict(self, texts: Sequence[str]) -> list[int]:
        """Predicted lengths (positive ints), one per text."""

    def predict_requests(self, requests: Sequence[Request]) -> list[int]:
        """Predict for requests; predictors that need more than the text override this."""
        return self.predict([r.text for r in requests])

    def save(self, path: str | Path) -> None:
        raise NotImplementedError(f"the {self.kind!r} predictor cannot be saved")

    @classmethod
    def load(cls, path: str | Path) -> LengthPredictor:
        raise NotImplementedError(f"the {cls.kind!r} predictor cannot be loaded")


def write_manifest(path: str | Path, kind: str, config: dict[str, Any]) -> Path:
    """Create the predictor directory and its manifest; return the directory."""
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MANIFEST).write_text(json.dumps({"kind": kind, "config": config}, indent=2))
    return directory


def read_manifest(path: str | Path, expected_kind: str | None = None) -> dict[str, Any]:
    """Read a predictor directory's manifest, with errors that say what is wrong."""
    manifest = Path(path) / MANIFEST
    if not manifest.is_file():
        raise FileNotFoundError(f"{path}: not a saved predictor (no {MANIFEST} in it)")
    try:
        data = json.loads(manifest.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{manifest}: invalid JSON ({e})") from e
    if not isinstance(data, dict) or "kind" not in data:
        raise ValueError(f"{manifest}: missing field 'kind'")
    if expected_kind is not None and data["kind"] != expected_kind:
        raise ValueError(f"{path}: a {data['kind']!r} predictor, not a {expected_kind!r} one")
    return data
