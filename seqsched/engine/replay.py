"""Trace replay on a real model: force each row's output length, EOS included.

A row with ``target_len = n`` may not emit EOS at steps 1..n-1 and must emit it at step
n, so even a random-weights model produces exactly ``n`` tokens and a replayed batch
decodes for exactly as many steps as the trace says (see ``simulate/trace.py``). Rows
without a target are left alone. Works inside ``model.generate`` as a logits processor.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from transformers import LogitsProcessor


class ReplayLengths(LogitsProcessor):
    def __init__(self, prompt_len: int, target_lens: Sequence[int | None], eos_token_ids: Sequence[int]) -> None:
        bad = [n for n in target_lens if n is not None and n < 1]
        if bad:
            raise ValueError(f"target_len ({bad[0]}) must be >= 1: a replayed row emits at least its EOS")
        if not eos_token_ids:
            raise ValueError("replay needs an EOS token id, and the model has none")
        self.prompt_len = prompt_len
        self.eos_token_ids = list(eos_token_ids)
        self.has_target = torch.tensor([n is not None for n in target_lens])
        self.target = torch.tensor([n if n is not None else 0 for n in target_lens])

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        step = input_ids.shape[1] - self.prompt_len + 1  # the step whose token is being chosen
        has_target, target = self.has_target.to(scores.device), self.target.to(scores.device)
        out = scores.clone()
        early = has_target & (step < target)
        out[early.nonzero(as_tuple=True)[0][:, None], self.eos_token_ids] = -float("inf")
        due = has_target & (step == target)
        out[due] = -float("inf")
        out[due, self.eos_token_ids[0]] = 0.0
        return cast(torch.FloatTensor, out)
