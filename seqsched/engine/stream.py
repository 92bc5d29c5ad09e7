"""The interface every continuous-batching engine offers, and the one loop that drives a
:class:`StreamPlan` through any of them.

A continuous engine (vLLM, transformers' continuous batching, the simulated one) only
has to ``submit`` a request with a priority and ``step``: advance, and say which
requests finished (and, when it can, how many tokens the running ones hold). The loop
below submits in the plan's order, holds requests back while the plan's admission rule
says the KV cache is full, and hands each finished request to the caller at once.
"""

from __future__ import annotations

import abc
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from seqsched.engine.base import WARMUP_TOKENS
from seqsched.request import Outcome, Request
from seqsched.schedule import StreamPlan

WARMUP_REQUESTS = 4


@dataclass
class StepOutput:
    """What one ``step`` reports: requests that finished, each with all its tokens
    (``stopped``: on EOS or a stop string); requests the engine failed, with why; and the
    tokens running requests hold now (prompt + output, for the admission rule; engines
    that cannot tell leave it empty)."""

    finished: list[tuple[int, list[int], bool]] = field(default_factory=list)
    errors: list[tuple[int, str]] = field(default_factory=list)
    held_tokens: dict[int, int] = field(default_factory=dict)


@dataclass
class StreamRun:
    seconds: float  # measured wall seconds (real engines) or modelled seconds (simulator)
    num_preemptions: int | None = None  # None: the engine does not say


class StreamEngine(abc.ABC):
    """Runs a stream of requests with continuous batching. It never decides order or
    admission: the plan does."""

    name: str = "stream"
    # True when seconds come from a cost model, not a clock: the pipeline then keeps the
    # predictor's real time apart instead of adding it to modelled time.
    modelled_time: bool = False
    block_size: int = 1  # KV-cache granularity, in tokens

    def prepare(self, requests: Sequence[Request]) -> None:  # noqa: B027 - optional hook
        """Tokenize and validate; a bad request is marked failed and never stops the others."""

    def warmup(self, requests: Sequence[Request]) -> None:
        """A short untimed run on copies of the first requests (allocator, kernels)."""
        copies = [
            Request(i, f"warmup-{i}", prompt=r.prompt, messages=r.messages, max_new_tokens=WARMUP_TOKENS)
            for i, r in enumerate(requests[:WARMUP_REQUESTS])
        ]
        self.prepare(copies)
        ready = [r for r in copies if not r.status.is_finished]
        if ready:
            order = tuple(r.index for r in ready)
            self.run_stream(StreamPlan(order, {i: i for i in order}), ready, lambda outcome: None)

    def decode(self, token_ids: Sequence[int]) -> str:
        return ""

    @property
    def kv_capacity(self) -> int | None:
        """Tokens the KV cache holds, for ``kv`` admission; None when unknown."""
        return None

    @abc.abstractmethod
    def start(self, plan: StreamPlan, requests: Sequence[Request]) -> None:
        """Begin a run of ``plan`` over ``requests``: reset the clock and counters, size what
        the run needs; refuse requests the engine cannot run."""

    @abc.abstractmethod
    def submit(self, request: Request, priority: int) -> None:
        """Queue a request (lower priority runs first, where the engine has priorities)."""

    @abc.abstractmethod
    def step(self) -> StepOutput:
        """Advance until at least one thing happens; never blocks forever."""

    @abc.abstractmethod
    def has_unfinished(self) -> bool: ...

    @abc.abstractmethod
    def now(self) -> float:
        """Seconds since ``start``: wall clock, or the simulator's modelled clock."""

    def finish(self) -> StreamRun:
        """End a run; the default reports the clock and no preemption count."""
        return StreamRun(self.now())

    def run_stream(
        self,
        plan: StreamPlan,
        requests: Sequence[Request],
        on_outcome: Callable[[Outcome], None],
        on_error: Callable[[int, str], None] | None = None,
    ) -> StreamRun:
        """Run ``requests`` (every index in ``plan.order``) in the plan's order under its
        admission rule. ``on_outcome`` gets each request's outcome as it finishes, with
        ``scheduled_at`` (submitted) and ``completed_at`` on this engine's clock;
        ``on_error`` gets a request the engine failed (index, message)."""
        by_index = {r.index: r for r in requests}
        assert set(by_index) == set(plan.order), "the plan and the requests disagree"
        admission = plan.admission()
        pending = deque(plan.order)
        submitted_at: dict[int, float] = {}
        self.start(plan, requests)
        try:
            while pending or self.has_unfinished():
                while pending and (admission is None or admission.try_admit(pending[0])):
                    index = pending.popleft()
                    submitted_at[index] = self.now()
                    self.submit(by_index[index], plan.priority[index])
                output = self.step()
                for index, num_tokens in output.held_tokens.items():
                    if admission is not None:
                        admission.grow(index, num_tokens)
                for index, message in output.errors:
                    if admission is not None:
                        admission.release(index)
                    if on_error is None:
                        raise RuntimeError(f"{self.name}: request {index} failed: {message}")
                    on_error(index, message)
                for index, tokens, stopped in output.finished:
                    if admission is not None:
                        admission.release(index)
                    outcome = Outcome(index, tokens, stopped, len(tokens), submitted_at[index], self.now())
                    on_outcome(outcome)
        finally:
            run = self.finish()
        return run
