"""Per-row sampling inside one greedy ``model.generate`` call.

``generate`` samples every row with one temperature, one top-p and the global RNG, so a
micro-batch could not mix sampling params, and a row's tokens would depend on which rows
share its batch. Instead, generate runs greedily and this processor, placed last, draws
each sampled row's token itself (its own temperature, top-p and ``torch.Generator``) and
leaves only that token finite, so the argmax picks it. Greedy rows are untouched.

A row's generator is seeded from the request alone, so a request draws the same tokens
whatever batch it lands in, and an FCR re-run repeats the tokens of the failed run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from transformers import LogitsProcessor

from seqsched.request import SamplingParams


class RowSampler(LogitsProcessor):
    def __init__(self, params: Sequence[SamplingParams], seeds: Sequence[int], device: torch.device) -> None:
        assert len(params) == len(seeds), f"{len(params)} sampling params for {len(seeds)} seeds"
        self.rows = [i for i, p in enumerate(params) if not p.greedy]
        self.params = list(params)
        self.generators = {i: torch.Generator(device=device).manual_seed(seeds[i]) for i in self.rows}

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if not self.rows:
            return scores
        out = scores.clone()
        for i in self.rows:
            token = self._draw(scores[i], self.params[i], self.generators[i])
            out[i] = -float("inf")
            out[i, token] = 0.0
        return cast(torch.FloatTensor, out)

    @staticmethod
    def _draw(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator) -> int:
        probs = torch.softmax(logits.float() / params.temperature, dim=-1)
        if params.top_p < 1.0:
            sorted_probs, order = probs.sort(descending=True)
            # Keep the smallest prefix whose mass reaches top_p (at least one token).
            drop = sorted_probs.cumsum(-1) - sorted_probs >= params.top_p
            sorted_probs[drop] = 0.0
            probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
        return int(torch.multinomial(probs, 1, generator=generator).item())
