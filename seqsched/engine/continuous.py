"""The continuous-batching baseline: transformers' own continuous batching on the same model.

Static batching (every other strategy) runs a micro-batch until its longest row ends.
Continuous batching refills a row the step it frees, with a paged KV cache, so it pads
nothing and needs no length prediction. It is the baseline serving engines use today, so
the bench runs it next to the scheduled strategies, on the same ``HFEngine`` model and
requests.

NOTE on what is compared:
- The run is ``transformers``' ``ContinuousBatchingManager`` (what ``generate_batch``
  drives), each request with its own ``max_new_tokens`` and the engine's EOS ids, greedy.
  seqsched only submits, collects and times; it does not schedule.
- A request's *length* is its own output tokens: nothing pads it. Its effective token
  ratio is therefore 1 by construction, and what continuous batching pays instead
  (smaller batches as the queue drains, paged-attention overhead per step) shows in
  its throughput only.
- Per-row sampling and forced trace lengths are ``HFEngine`` logits processors that the
  manager does not run, so this baseline takes greedy live requests only, and says so.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from seqsched.pipeline import RunReport
from seqsched.request import Request, RequestStatus, Result

if TYPE_CHECKING:
    from seqsched.engine.hf import HFEngine

RESULT_POLL_SECONDS = 1.0


class ContinuousBatching:
    """Runs requests through the engine's model with transformers' continuous batching."""

    def __init__(self, engine: HFEngine, max_requests: int = 256, max_batch_tokens: int = 2048) -> None:
        """``max_requests``: sequences decoding at once (the bench passes the largest VBS
        batch, so both kinds of batching may hold as many). The paged KV cache is sized to
        hold that many requests at their full length, and each step processes at most
        ``max_batch_tokens`` tokens (decodes plus prefill chunks). Both are set here
        because transformers otherwise infers them from free device memory: on a 2-core
        CPU, a manager left to do that took about 20 s to start and stop, against under
        a second with these sizes."""
        if not hasattr(engine.model, "init_continuous_batching"):
            raise ValueError(
                f"continuous batching needs a transformers model with init_continuous_batching; "
                f"{type(engine.model).__name__} has none"
            )
        if max_requests < 1:
            raise ValueError(f"max_requests ({max_requests}) must be >= 1")
        if max_batch_tokens < 1:
            raise ValueError(f"max_batch_tokens ({max_batch_tokens}) must be >= 1")
        self.engine = engine
        self.max_requests = max_requests
        self.max_batch_tokens = max_batch_tokens

    def run(self, requests: Sequence[Request], progress: Callable[[int], None] | None = None) -> RunReport:
        """Generate every request; results come back in input order, errors included."""
        self.engine.prepare(requests)
        report = RunReport(results=[Result(request=r) for r in requests])
        runnable = [res for res in report.results if not res.request.status.is_finished]
        _check_supported([res.request for res in runnable])
        if progress is not None and len(runnable) < len(requests):
            progress(len(requests) - len(runnable))
        if not runnable:
            return report
        start = time.perf_counter()
        outputs, finished_at = self._generate([res.request for res in runnable], progress)
        report.wall_seconds = time.perf_counter() - start
        for res in runnable:
            self._record(res, outputs[res.request.request_id], finished_at[res.request.request_id] - start)
        return report

    def warmup(self, requests: Sequence[Request]) -> None:
        """Check that every request is supported (before any strategy of a bench runs), then
        one short untimed run on copies of the first requests (allocator, kernels)."""
        _check_supported(requests)
        copies = [dataclasses.replace(r, max_new_tokens=min(r.max_new_tokens, 4)) for r in requests[:2]]
        self.run(copies)

    def _generate(
        self, requests: list[Request], progress: Callable[[int], None] | None
    ) -> tuple[dict[str, Any], dict[str, float]]:
        """Each request's output, and when (``perf_counter``) it came back."""
        from transformers import GenerationConfig
        from transformers.generation import ContinuousBatchingConfig

        engine = self.engine
        generation_config = GenerationConfig(
            do_sample=False,
            max_new_tokens=max(r.max_new_tokens for r in requests),
            eos_token_id=engine.eos_token_ids or None,
            pad_token_id=engine.pad_token_id,
        )
        longest = max(r.num_prompt_tokens + r.max_new_tokens for r in requests)
        page_size = ContinuousBatchingConfig().page_size
        cb_config = ContinuousBatchingConfig(
            max_requests_per_batch=self.max_requests,
            max_batch_tokens=max(self.max_batch_tokens, longest),
            num_blocks=self.max_requests * -(-longest // page_size),
        )
        manager = engine.model.init_continuous_batching(
            generation_config=generation_config, continuous_batching_config=cb_config
        )
        manager.start()
        outputs: dict[str, Any] = {}
        finished_at: dict[str, float] = {}
        try:
            for r in requests:
                manager.add_request(
                    list(r.prompt_token_ids or []), request_id=r.request_id, max_new_tokens=r.max_new_tokens
                )
            while len(outputs) < len(requests):
                output = manager.get_result(timeout=RESULT_POLL_SECONDS)
                if output is not None and output.is_finished():
                    outputs[output.request_id] = output
                    finished_at[output.request_id] = time.perf_counter()
                    if progress is not None:
                        progress(1)
                elif output is None and not manager.is_running():
                    missing = [r.request_id for r in requests if r.request_id not in outputs]
                    raise RuntimeError(f"continuous batching stopped with {len(missing)} requests unanswered")
        finally:
            manager.stop(block=True)
        return outputs, finished_at

    def _record(self, result: Result, output: Any, finished_at: float) -> None:
        request = result.request
        if output.error is not None:
            request.fail(f"continuous batching: {output.error}")
            return
        tokens, ended = self.engine.cut([int(t) for t in output.generated_tokens], request.max_new_tokens)
        result.token_ids = tokens
        result.text = self.engine.decode(tokens)
        result.length = len(tokens)
        result.num_runs = 1
        result.completed_at = finished_at
        request.status = RequestStatus.FINISHED_STOPPED if ended else RequestStatus.FINISHED_LENGTH


def _check_supported(requests: Sequence[Request]) -> None:
    sampled = [r.request_id for r in requests if not r.sampling.greedy]
    if sampled:
        raise ValueError(f"the continuous-batching baseline runs greedy requests only; sampled: {sampled[:5]}")
    replayed = [r.request_id for r in requests if r.target_len is not None]
    if replayed:
        raise ValueError(
            f"the continuous-batching baseline cannot force trace lengths (replay); requests {replayed[:5]} have them"
        )
