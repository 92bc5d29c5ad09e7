"""Fit a step cost model to a real model's measured step times. Uses torch.

NOTE on what is timed. Each grid point runs ``model.generate`` on a (batch_size x
prompt_len) batch of random tokens with EOS banned, so it decodes exactly ``num_steps``
steps, and a logits processor stamps the clock at every step. The prefill is the time
from the call to the first stamp (``generate``'s setup included), a decode step the
time between two stamps. These are the seconds the HF engine pays per step, Python
overhead included, which on a CPU or with a small model is most of the cost.
"""

from __future__ import annotations

import datetime
import itertools
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from seqsched.engine.config import EngineConfig
from seqsched.engine.loading import load_model
from seqsched.simulate.cost_model import StepCostModel, StepSample

DEFAULT_BATCH_SIZES = (1, 4, 16, 64)
DEFAULT_CONTEXT_LENS = (16, 64, 128)


def calibrate(
    engine_config: EngineConfig,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    context_lens: Sequence[int] = DEFAULT_CONTEXT_LENS,
    num_steps: int = 16,
    repeats: int = 3,
    seed: int = 0,
    progress: Callable[[StepSample], None] | None = None,
) -> StepCostModel:
    """Measure prefill and decode steps over the grid (after a warm-up; the median of
    ``repeats``), fit a :class:`StepCostModel`, and return it with its provenance."""
    model, _ = load_model(engine_config)
    samples = measure(model, batch_sizes, context_lens, num_steps, repeats, seed, progress)
    fitted = StepCostModel.fit(samples, provenance=provenance(engine_config, model))
    errors = [abs(e) for e in fitted.relative_errors(samples)]
    grid = {
        "batch_sizes": list(batch_sizes),
        "context_lens": list(context_lens),
        "num_steps": num_steps,
        "repeats": repeats,
    }
    fitted.provenance.update(
        grid=grid,
        fit_max_rel_error=max(errors),
        fit_median_rel_error=statistics.median(errors),
        samples=[[s.kind, s.batch_size, s.context_len, s.seconds] for s in samples],
    )
    return fitted


def measure(
    model: Any,
    batch_sizes: Sequence[int],
    context_lens: Sequence[int],
    num_steps: int = 16,
    repeats: int = 3,
    seed: int = 0,
    progress: Callable[[StepSample], None] | None = None,
) -> list[StepSample]:
    """One prefill and one decode sample per (batch_size, prompt_len) point."""
    _check_grid(model, batch_sizes, context_lens, num_steps, repeats)
    generator = torch.Generator().manual_seed(seed)
    _time_generate(model, min(batch_sizes), min(context_lens), num_steps, generator)  # warm-up
    samples = []
    for batch_size in batch_sizes:
        for prompt_len in context_lens:
            runs = [_time_generate(model, batch_size, prompt_len, num_steps, generator) for _ in range(repeats)]
            prefill = statistics.median(r[0] for r in runs)
            decode = statistics.median(step for r in runs for step in r[1:])
            # Decode step k attends to prompt_len + k tokens; the median step is the middle one.
            for sample in (
                StepSample("prefill", batch_size, prompt_len, prefill),
                StepSample("decode", batch_size, prompt_len + num_steps // 2, decode),
            ):
                samples.append(sample)
                if progress is not None:
                    progress(sample)
    return samples


def provenance(engine_config: EngineConfig, model: Any) -> dict[str, Any]:
    device = model.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    return {
        "device": f"{device} ({name}, {torch.get_num_threads()} thread{'s' if torch.get_num_threads() != 1 else ''})",
        "model": engine_config.model,
        "dtype": str(model.dtype).removeprefix("torch."),
        "date": datetime.date.today().isoformat(),
        "torch": torch.__version__,
        "source": "seqsched calibrate",
    }


class _StepClock(LogitsProcessor):
    """Stamps the clock at every decode step and bans EOS, so every run has full length."""

    def __init__(self, banned: Sequence[int], device: torch.device) -> None:
        self.banned = list(banned)
        self.device = device
        self.stamps: list[float] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.stamps.append(time.perf_counter())
        if not self.banned:
            return scores
        banned = scores.clone()
        banned[:, self.banned] = -float("inf")
        return banned  # type: ignore[return-value]


@torch.inference_mode()
def _time_generate(
    model: Any, batch_size: int, prompt_len: int, num_steps: int, generator: torch.Generator
) -> list[float]:
    """[prefill seconds, decode step 1 seconds, ...] of one run."""
    eos = _eos_ids(model)
    vocab = model.config.get_text_config().vocab_size
    low = max(eos, default=-1) + 1  # special tokens sit at the start of most vocabularies
    low = low if low < vocab else 0
    input_ids = torch.randint(low, vocab, (batch_size, prompt_len), generator=generator)
    clock = _StepClock(eos, model.device)
    if model.device.type == "cuda":
        torch.cuda.synchronize(model.device)
    start = time.perf_counter()
    model.generate(
        input_ids=input_ids.to(model.device),
        attention_mask=torch.ones_like(input_ids).to(model.device),
        max_new_tokens=num_steps,
        do_sample=False,
        temperature=None,
        top_p=None,
        top_k=None,
        eos_token_id=eos or None,
        pad_token_id=eos[0] if eos else 0,
        logits_processor=LogitsProcessorList([clock]),
    )
    stamps = [start, *clock.stamps]
    assert len(stamps) == num_steps + 1, f"expected {num_steps} steps, timed {len(stamps) - 1}"
    return [b - a for a, b in itertools.pairwise(stamps)]


def _eos_ids(model: Any) -> list[int]:
    eos = getattr(model.generation_config, "eos_token_id", None)
    if eos is None:
        return []
    return [int(e) for e in eos] if isinstance(eos, (list, tuple)) else [int(eos)]


def _check_grid(
    model: Any, batch_sizes: Sequence[int], context_lens: Sequence[int], num_steps: int, repeats: int
) -> None:
    if not batch_sizes or min(batch_sizes) < 1:
        raise ValueError(f"batch_sizes ({list(batch_sizes)}) must be non-empty and >= 1")
    if not context_lens or min(context_lens) < 1:
        raise ValueError(f"context_lens ({list(context_lens)}) must be non-empty and >= 1")
    if len(set(batch_sizes)) * len(set(context_lens)) < 3:
        raise ValueError("the grid needs at least 3 (batch_size, context_len) points to fit 3 parameters")
    if num_steps < 2 or repeats < 1:
        raise ValueError(f"num_steps ({num_steps}) must be >= 2 and repeats ({repeats}) >= 1")
    limit = getattr(model.config.get_text_config(), "max_position_embeddings", None)
    if limit is not None and max(context_lens) + num_steps > limit:
        raise ValueError(
            f"context_lens up to {max(context_lens)} + num_steps {num_steps} exceed the model's context of {limit}"
        )
