"""Static batching on any Hugging Face causal LM: one ``model.generate`` per micro-batch.

NOTE on what a run of a micro-batch means here:
- Prompts are left-padded into one batch; ``generate`` derives each row's position ids
  from the attention mask, so a row's tokens do not depend on its batch mates (in float32,
  up to kernel rounding).
- Each row stops at ``min(batch.max_new_tokens, request.max_new_tokens)`` or on its EOS;
  ``generate`` fills a stopped row with padding and ends the batch once every row has
  stopped. ``num_steps`` (the batch's generated length) is the same for every row.
- A row's tokens are cut at its own limit and just after its first EOS, so padding never
  leaks into an outcome, even when pad and EOS share an id.
- Rows with ``target_len`` set are replayed: ``ReplayLengths`` forces their length. That
  is automatic, per row, because ``target_len`` only exists for replay and simulation.
- Sampled rows are drawn per row by ``RowSampler`` inside a greedy ``generate`` call, so
  a micro-batch may mix greedy and sampled rows with different params and seeds.
- A row resumed by FCR (``Request.output_prefix``) is prompted with its prompt plus the
  tokens it kept and generates only the rest. The prefill recomputes the kept tokens'
  cache in one pass where decoding computed it a token at a time: the same values up to
  kernel rounding, as with a change of batch mates.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any, cast

import torch
from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from seqsched.engine.base import WARMUP_TOKENS, BatchRun, Engine, OutOfMemory
from seqsched.engine.config import EngineConfig
from seqsched.engine.loading import load_model
from seqsched.engine.prompts import cut, eos_token_ids, stop_at, tokenize_all
from seqsched.engine.replay import ReplayLengths
from seqsched.engine.sampling import RowSampler
from seqsched.request import GREEDY, Outcome, Request
from seqsched.schedule import MicroBatch


class HFEngine(Engine):
    name = "hf"

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        model, self.tokenizer = load_model(config)
        self.model: Any = model  # generate() comes from a mixin the stubs do not see
        self.device = self.model.device
        self.eos_token_ids = eos_token_ids(getattr(self.model, "generation_config", None), self.tokenizer)
        self.pad_token_id = _pad_token_id(self.tokenizer, self.eos_token_ids)
        self.max_context = _max_context(self.model)

    def prepare(self, requests: Sequence[Request]) -> None:
        """Tokenize each request (``EngineConfig.chat_template`` says how) and fail the ones
        that are empty or do not fit the model's context with their ``max_new_tokens``."""
        tokenize_all(self.tokenizer, requests, self.config.chat_template, self.max_context)

    def run(self, batch: MicroBatch, requests: Sequence[Request]) -> BatchRun:
        rows = list(requests)
        assert [r.index for r in rows] == list(batch.indices), "rows must come in the batch's order"
        missing = [r.request_id for r in rows if not r.prompt_token_ids]
        if missing:
            raise ValueError(f"requests {missing[:5]} have no prompt tokens: call prepare() first")
        limits = [min(batch.max_new_tokens, r.remaining_tokens) for r in rows]
        start = self._now()
        try:
            generated = self._generate(rows, limits)
        except (torch.OutOfMemoryError, MemoryError) as e:
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            raise OutOfMemory(f"{len(rows)} rows: {type(e).__name__}: {str(e)[:200]}") from e
        seconds = self._now() - start
        num_steps = len(generated[0])
        outcomes = [
            Outcome(r.index, tokens, finished, num_steps)
            for r, (tokens, finished) in zip(
                rows, (self.cut(g, n, r.stop) for g, n, r in zip(generated, limits, rows, strict=True)), strict=True
            )
        ]
        return BatchRun(outcomes, seconds)

    def decode(self, token_ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(token_ids), skip_special_tokens=True))

    def warmup(self, requests: Sequence[Request]) -> None:
        """Two short greedy generates (one row, then two) on copies of the first requests: a
        warm-up times kernels, so no row's own sampling can fail it (and the job with it)."""
        copies = [
            dataclasses.replace(r, index=i, target_len=None, sampling=GREEDY) for i, r in enumerate(requests[:2])
        ]
        self.prepare(copies)
        ready = [r for r in copies if not r.status.is_finished]
        for rows in (ready[:1], ready):
            if rows:
                self.run(MicroBatch(tuple(r.index for r in rows), WARMUP_TOKENS), rows)

    @torch.inference_mode()
    def _generate(self, rows: list[Request], limits: list[int]) -> list[list[int]]:
        """Each row's generated tokens, padding included, all of the batch's length."""
        # A resumed row continues after its kept tokens: the prefill recomputes their cache.
        prompts = [[*(r.prompt_token_ids or []), *r.output_prefix] for r in rows]
        prompt_len = max(len(p) for p in prompts)
        input_ids = torch.tensor([[self.pad_token_id] * (prompt_len - len(p)) + p for p in prompts])
        attention_mask = torch.tensor([[0] * (prompt_len - len(p)) + [1] * len(p) for p in prompts])
        processors = LogitsProcessorList()
        if any(r.target_len is not None for r in rows):
            targets = [None if r.target_len is None else r.target_len - len(r.output_prefix) for r in rows]
            processors.append(ReplayLengths(prompt_len, targets, self.eos_token_ids))
        if any(not r.sampling.greedy for r in rows):
            seeds = [self.config.seed + r.index if r.sampling.seed is None else r.sampling.seed for r in rows]
            offsets = [len(r.output_prefix) for r in rows]
            processors.append(RowSampler([r.sampling for r in rows], seeds, self.device, prompt_len, offsets))
        output = self.model.generate(
            input_ids=input_ids.to(self.device),
            attention_mask=attention_mask.to(self.device),
            max_new_tokens=max(limits),
            do_sample=False,
            # Neutral values, so a checkpoint's sampling defaults neither apply nor warn.
            temperature=None,
            top_p=None,
            top_k=None,
            eos_token_id=self.eos_token_ids,
            pad_token_id=self.pad_token_id,
            logits_processor=processors,
            stopping_criteria=StoppingCriteriaList(
                [_RowLimits(prompt_len, limits), _StopStrings(prompt_len, [r.stop for r in rows], self.decode)]
            ),
        )
        return [list(map(int, row)) for row in output[:, prompt_len:].tolist()]

    def cut(self, generated: list[int], limit: int, stop: Sequence[str] = ()) -> tuple[list[int], bool]:
        """A row's own tokens: up to its limit, up to and including its first EOS, and up to
        the token that completes one of its stop strings."""
        tokens, ended = cut(generated, limit, self.eos_token_ids)
        end = stop_at(tokens, stop, self.decode)
        return (tokens[:end], True) if end is not None else (tokens, ended)

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()


class _RowLimits(StoppingCriteria):
    """Stops each row at its own decode-step limit (``generate`` only knows the batch's)."""

    def __init__(self, prompt_len: int, limits: Sequence[int]) -> None:
        self.prompt_len = prompt_len
        self.limits = torch.tensor(list(limits))

    def __call__(self, input_ids: torch.LongTensor, scores: object, **kwargs: object) -> torch.BoolTensor:
        num_generated = input_ids.shape[1] - self.prompt_len
        return cast(torch.BoolTensor, self.limits.to(input_ids.device) <= num_generated)


class _StopStrings(StoppingCriteria):
    """Stops a row once its text holds one of its stop strings. Only the last few tokens
    are decoded each step: enough to hold any stop string that the newest token completes."""

    def __init__(self, prompt_len: int, stops: Sequence[Sequence[str]], decode: Any) -> None:
        self.prompt_len = prompt_len
        self.stops = [tuple(s) for s in stops]
        self.window = 2 * max((len(s) for row in stops for s in row), default=0) + 8
        self.decode = decode

    def __call__(self, input_ids: torch.LongTensor, scores: object, **kwargs: object) -> torch.BoolTensor:
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        start = max(self.prompt_len, input_ids.shape[1] - self.window)
        for row, stop in enumerate(self.stops):
            if stop:
                tail = self.decode(input_ids[row, start:].tolist())
                done[row] = any(s in tail for s in stop)
        return cast(torch.BoolTensor, done)


def _pad_token_id(tokenizer: object, eos_token_ids: list[int]) -> int:
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is not None:
        return int(pad)
    # Padding never reaches an outcome (rows are cut at EOS), so EOS is a safe stand-in.
    return eos_token_ids[0] if eos_token_ids else 0


def _max_context(model: Any) -> int | None:
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    value = getattr(config, "max_position_embeddings", None)
    return int(value) if value else None
