"""Per-row sampling inside one greedy ``model.generate`` call.

``generate`` samples every row with one temperature, one top-p and the global RNG, so a
micro-batch could not mix sampling params, and a row's tokens would depend on which rows
share its batch. Instead, generate runs greedily and this processor, placed last, draws
each sampled row's token itself (its own temperature, top-p and ``torch.Generator``) and
leaves only that token finite, so the argmax picks it. Greedy rows are untouched.

The draw for a row's ``k``-th output token uses a generator seeded from the request's
seed and ``k`` alone (a counter-based stream), so a request draws the same tokens
whatever batch it lands in, an FCR restart repeats the tokens of the failed run, and an
FCR resume continues exactly as an uncapped run would have.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from transformers import LogitsProcessor

from seqsched.request import SamplingParams

_MASK64 = (1 << 64) - 1


class RowSampler(LogitsProcessor):
    """``prompt_len`` is the batch's padded input length; ``offsets[i]`` is how many output
    tokens row ``i`` generated before this call (kept by an FCR resume), so the first
    token of this run is its output token number ``offsets[i]``."""

    def __init__(
        self,
        params: Sequence[SamplingParams],
        seeds: Sequence[int],
        device: torch.device,
        prompt_len: int,
        offsets: Sequence[int] | None = None,
    ) -> None:
        assert len(params) == len(seeds), f"{len(params)} sampling params for {len(seeds)} seeds"
        self.rows = [i for i, p in enumerate(params) if not p.greedy]
        self.params = list(params)
        self.seeds = list(seeds)
        self.prompt_len = prompt_len
        self.offsets = list(offsets) if offsets is not None else [0] * len(params)
        self.generator = torch.Generator(device=device)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if not self.rows:
            return scores
        step = input_ids.shape[1] - self.prompt_len
        out = scores.clone()
        for i in self.rows:
            self.generator.manual_seed(_stream_seed(self.seeds[i], self.offsets[i] + step))
            token = self._draw(scores[i], self.params[i], self.generator)
            out[i] = -float("inf")
            out[i, token] = 0.0
        return cast(torch.FloatTensor, out)

    @staticmethod
    def _draw(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator) -> int:
        # Shifted by the max first: the top logit is 0, the rest <= 0, so no temperature
        # can overflow them to inf (and inf - inf to NaN).
        logits = logits.float()
        probs = torch.softmax((logits - logits.max()) / params.temperature, dim=-1)
        if params.top_p < 1.0:
            sorted_probs, order = probs.sort(descending=True)
            # Keep the smallest prefix whose mass reaches top_p, and always the top token: a
            # top_p that is 0 in float32 (1e-300) would otherwise drop every token.
            drop = sorted_probs.cumsum(-1) - sorted_probs >= params.top_p
            drop[0] = False
            sorted_probs[drop] = 0.0
            probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
        return int(torch.multinomial(probs, 1, generator=generator).item())


def _stream_seed(seed: int, position: int) -> int:
    """A well-mixed 63-bit seed for (seed, position): splitmix64's finalizer."""
    z = (seed * 0x9E3779B97F4A7C15 + position + 1) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (z ^ (z >> 31)) >> 1
