"""transformers' own continuous batching, on the HF engine's model, driven by stream plans.

Static batching runs a micro-batch until its longest row ends. Continuous batching
refills a row the step it frees, with a paged KV cache, so it pads nothing. This engine
runs ``transformers``' ``ContinuousBatchingManager`` (what ``generate_batch`` drives)
on the same model object as an ``HFEngine``; seqsched only submits, collects and times.

NOTE on how a plan reaches it:
- The manager's scheduler is first-come first-served over what it has been given, and
  has no priorities. The plan's order is therefore the submission order, and ``kv``
  admission holds requests back until the admission rule lets them in.
- Each request has its own ``max_new_tokens`` and the engine's EOS ids, greedy. A
  request's *length* is its own output tokens: nothing pads it, so its effective token
  ratio is 1, and what continuous batching pays instead (smaller batches as the queue
  drains, paged-attention overhead per step) shows in its throughput only.
- Per-row sampling and forced trace lengths are ``HFEngine`` logits processors that the
  manager does not run, so this engine takes greedy live requests only, and says so.
  Stop strings are applied to its output (the tokens after one are generated, then cut).
- The paged cache and the tokens per step are sized here, because transformers
  otherwise infers them from free device memory: on a 2-core CPU a manager left to do
  that took about 20 s to start and stop, against under a second with explicit sizes.
- A run's clock starts once the manager is serving: its background thread has built the
  paged cache and its input buffers. On the built-in model on a 2-core CPU that start took
  0.8 s alone and 3.4-4.1 s after static batching had run in the process, the same in
  every order (``benchmarks/continuous_startup.py``). Inside the timed run it varied
  enough to read as a policy effect (sjf at 1.44x fcfs's throughput once, with the
  generation loop itself no faster). vLLM's engine, likewise, is built before its runs
  are timed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from seqsched.engine.stream import StepOutput, StreamEngine, StreamRun
from seqsched.request import Request
from seqsched.schedule import StreamPlan

if TYPE_CHECKING:
    from seqsched.engine.hf import HFEngine

RESULT_POLL_SECONDS = 1.0
STARTUP_POLL_SECONDS = 0.005
STARTUP_TIMEOUT_SECONDS = 600.0


class HFContinuousEngine(StreamEngine):
    """Continuous batching with transformers' ``ContinuousBatchingManager``."""

    name = "hf-continuous"

    def __init__(
        self, engine: HFEngine, max_num_seqs: int = 256, max_batch_tokens: int = 2048, num_blocks: int | None = None
    ) -> None:
        """``max_num_seqs``: sequences decoding at once. The paged KV cache holds
        ``num_blocks`` pages (default: enough for ``max_num_seqs`` requests at their full
        length), and each step processes at most ``max_batch_tokens`` tokens (decodes
        plus prefill chunks)."""
        if not hasattr(engine.model, "init_continuous_batching"):
            raise ValueError(
                f"continuous batching needs a transformers model with init_continuous_batching; "
                f"{type(engine.model).__name__} has none"
            )
        if max_num_seqs < 1:
            raise ValueError(f"max_num_seqs ({max_num_seqs}) must be >= 1")
        if max_batch_tokens < 1:
            raise ValueError(f"max_batch_tokens ({max_batch_tokens}) must be >= 1")
        if num_blocks is not None and num_blocks < 1:
            raise ValueError(f"num_blocks ({num_blocks}) must be >= 1")
        from transformers.generation.configuration_utils import ContinuousBatchingConfig

        self.engine = engine
        self.max_num_seqs = max_num_seqs
        self.max_batch_tokens = max_batch_tokens
        self.num_blocks = num_blocks
        self.block_size = int(ContinuousBatchingConfig().page_size)
        self._manager: Any = None
        self.startup_seconds = 0.0  # the last run's wait for the manager to serve (not in its time)

    @property
    def model(self) -> Any:
        """The serving model, for predictors that share it."""
        return self.engine.model

    @property
    def tokenizer(self) -> Any:
        return self.engine.tokenizer

    @property
    def kv_capacity(self) -> int | None:
        return None if self.num_blocks is None else self.num_blocks * self.block_size

    def prepare(self, requests: Sequence[Request]) -> None:
        """Tokenize as the HF engine does; a sampled request fails alone (this engine's
        transformers path decodes greedily), the others run."""
        for r in requests:
            if not r.status.is_finished and not r.sampling.greedy:
                r.fail(
                    f"transformers' continuous batching runs greedy requests only here (temperature "
                    f"{r.sampling.temperature:g} given): use --engine hf or --engine vllm for sampled lines"
                )
        self.engine.prepare(requests)

    def decode(self, token_ids: Sequence[int]) -> str:
        return self.engine.decode(token_ids)

    def warmup(self, requests: Sequence[Request]) -> None:
        """Check that every request is supported (before any strategy of a bench runs),
        then a short untimed run."""
        _check_supported(requests)
        super().warmup(requests)

    def start(self, plan: StreamPlan, requests: Sequence[Request]) -> None:
        from transformers import GenerationConfig
        from transformers.generation.configuration_utils import ContinuousBatchingConfig

        _check_supported(requests)
        longest = max(r.num_prompt_tokens + r.max_new_tokens for r in requests)
        engine = self.engine
        generation_config = GenerationConfig(  # type: ignore[no-untyped-call]
            do_sample=False,
            max_new_tokens=max(r.remaining_tokens for r in requests),
            eos_token_id=engine.eos_token_ids or None,
            pad_token_id=engine.pad_token_id,
        )
        cb_config = ContinuousBatchingConfig(
            max_requests_per_batch=self.max_num_seqs,
            max_batch_tokens=max(self.max_batch_tokens, longest),
            num_blocks=self.num_blocks or self.max_num_seqs * -(-longest // self.block_size),
        )
        self._manager = engine.model.init_continuous_batching(
            generation_config=generation_config, continuous_batching_config=cb_config
        )
        self._manager.start()
        self.startup_seconds = _wait_until_serving(self._manager)
        self._start = time.perf_counter()
        self._requests: dict[str, Request] = {}

    def submit(self, request: Request, priority: int) -> None:
        key = str(request.index)
        self._requests[key] = request
        prompt = [*(request.prompt_token_ids or []), *request.output_prefix]
        self._manager.add_request(prompt, request_id=key, max_new_tokens=request.remaining_tokens)

    def step(self) -> StepOutput:
        result = StepOutput()
        output = self._manager.get_result(timeout=RESULT_POLL_SECONDS)
        if output is None:
            if not self._manager.is_running():
                raise RuntimeError(f"continuous batching stopped with {len(self._requests)} requests unanswered")
            return result
        if not output.is_finished():
            return result
        request = self._requests.pop(output.request_id)
        if output.error is not None:
            result.errors.append((request.index, f"continuous batching: {output.error}"))
            return result
        generated = [int(t) for t in output.generated_tokens]
        tokens, ended = self.engine.cut(generated, request.remaining_tokens, request.stop)
        result.finished.append((request.index, tokens, ended))
        return result

    def has_unfinished(self) -> bool:
        return bool(self._requests)

    def now(self) -> float:
        return time.perf_counter() - self._start

    def finish(self) -> StreamRun:
        seconds = self.now()
        self._manager.stop(block=True)
        self._manager = None
        return StreamRun(seconds)


def _wait_until_serving(manager: Any) -> float:
    """Block until ``manager``'s background thread has built its batch processor (the
    paged cache and the input buffers); return the seconds waited. A transformers whose
    manager has no ``batch_processor`` attribute is not waited for."""
    start = time.perf_counter()
    while getattr(manager, "batch_processor", True) is None:
        if not manager.is_running():
            raise RuntimeError("continuous batching stopped while it was starting (see the log above)")
        if time.perf_counter() - start > STARTUP_TIMEOUT_SECONDS:
            raise RuntimeError(f"continuous batching did not start in {STARTUP_TIMEOUT_SECONDS:.0f} s")
        time.sleep(STARTUP_POLL_SECONDS)
    return time.perf_counter() - start


def _check_supported(requests: Sequence[Request]) -> None:
    replayed = [r.request_id for r in requests if r.target_len is not None]
    if replayed:
        raise ValueError(
            f"transformers' continuous batching cannot force trace lengths (replay); requests {replayed[:5]} have them"
        )
