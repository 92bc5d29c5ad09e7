"""Perception in advance (PiA), prompting only: ask the serving model to state its
response length in the first line, and read the number off a short greedy generation.

Nothing is trained, so this predictor has no fit; saving it keeps the model path and
the limit, and loading it loads the model again unless one is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from seqsched.predict import _llm
from seqsched.predict.base import LengthPredictor, read_manifest, write_manifest
from seqsched.request import Request

PIA_PROMPT = (
    "\nBefore responding to the above instruction, you have to predict the length of your response. "
    "Print the estimated number of tokens in your response in the first line. "
    "Then change to a new line to respond to the instruction."
)


class PiAPredictor(LengthPredictor):
    """Prompted length perception.

    A completion without a number falls back to ``limit`` (the conservative choice:
    the request then runs as under vanilla batching); ``num_fallbacks`` counts them.
    """

    kind = "pia"

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        limit: int = 512,
        max_new_tokens: int = 8,
        batch_size: int = 16,
    ) -> None:
        if limit < 1:
            raise ValueError(f"limit ({limit}) must be >= 1")
        if max_new_tokens < 1 or batch_size < 1:
            raise ValueError(f"max_new_tokens ({max_new_tokens}) and batch_size ({batch_size}) must be >= 1")
        self.model = model
        self.tokenizer = tokenizer
        self.limit = limit
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.num_fallbacks = 0
        self.last_completions: list[str] = []

    def predict(self, texts: Sequence[str]) -> list[int]:
        return self._predict([_llm.user_turn(t + PIA_PROMPT) for t in texts], [self.limit] * len(texts))

    def predict_requests(self, requests: Sequence[Request]) -> list[int]:
        limits = [min(self.limit, r.max_new_tokens) for r in requests]
        return self._predict([_llm.with_suffix(r, PIA_PROMPT) for r in requests], limits)

    def _predict(self, conversations: Sequence[_llm.Messages], limits: Sequence[int]) -> list[int]:
        prompts = [_llm.encode(self.tokenizer, c) for c in conversations]
        self.last_completions = _llm.greedy_completions(
            self.model, self.tokenizer, prompts, self.max_new_tokens, self.batch_size
        )
        predicted, self.num_fallbacks = to_lengths(self.last_completions, limits, self.num_fallbacks)
        return predicted

    def save(self, path: str | Path) -> None:
        config = {
            "model_path": _llm.model_path(self.model, path),
            "limit": self.limit,
            "max_new_tokens": self.max_new_tokens,
            "batch_size": self.batch_size,
        }
        write_manifest(path, self.kind, config)

    @classmethod
    def load(cls, path: str | Path, model: Any = None, tokenizer: Any = None) -> PiAPredictor:
        config = dict(read_manifest(path, cls.kind)["config"])
        model, tokenizer = _llm.load_base(_llm.resolve_model_path(config.pop("model_path"), path), model, tokenizer)
        return cls(model, tokenizer, **config)


def to_lengths(completions: Sequence[str], limits: Sequence[int], num_fallbacks: int) -> tuple[list[int], int]:
    """Parse each completion into a length clamped to [1, its limit]; a completion with
    no number gets its limit. Returns the lengths and the updated fallback count."""
    lengths = []
    for text, limit in zip(completions, limits, strict=True):
        parsed = _llm.parse_length(text)
        if parsed is None:
            num_fallbacks += 1
            parsed = limit
        lengths.append(min(max(1, parsed), limit))
    return lengths, num_fallbacks
