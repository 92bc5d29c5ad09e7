"""The simulated continuous-batching engine: vLLM v1's scheduler modelled
(``simulate/vllm_model.py``), driven by a stream plan, in modelled time. No torch here.

The plan's priority reaches the model as vLLM's ``priority`` (its rank in the plan's
order), exactly as the vLLM engine passes it, so the same plan runs on both. Output
lengths come from each request's ``target_len`` (a trace); prompt lengths from its
tokens, its recorded length, or an estimate from its text.
"""

from __future__ import annotations

from collections.abc import Sequence

from seqsched.engine.stream import StepOutput, StreamEngine, StreamRun
from seqsched.request import Request
from seqsched.schedule import StreamPlan
from seqsched.simulate.cost_model import StepCostModel
from seqsched.simulate.step_cost import ContinuousCost, load_step_cost
from seqsched.simulate.trace import SIMULATED_TOKEN, require_target_lengths
from seqsched.simulate.vllm_model import SchedulerLimits, SchedulerModel, SimRequest

DEFAULT_MAX_NUM_BATCHED_TOKENS = 8192  # vLLM's offline default on an A100-class GPU


class SimulatedContinuousEngine(StreamEngine):
    name = "simulate-continuous"
    modelled_time = True

    def __init__(
        self,
        cost_model: ContinuousCost | StepCostModel | None = None,
        max_num_seqs: int = 256,
        num_blocks: int | None = None,
        block_size: int = 16,
        max_num_batched_tokens: int | None = None,
    ) -> None:
        if isinstance(cost_model, StepCostModel):
            cost_model = ContinuousCost.from_static(cost_model)
        self.cost = cost_model if cost_model is not None else load_step_cost(None)
        self.limits = SchedulerLimits(
            max_num_seqs=max_num_seqs,
            max_num_batched_tokens=max_num_batched_tokens or max(DEFAULT_MAX_NUM_BATCHED_TOKENS, max_num_seqs),
            num_blocks=num_blocks,
            block_size=block_size,
        )
        self.block_size = block_size

    @property
    def max_num_seqs(self) -> int:
        return self.limits.max_num_seqs

    @property
    def kv_capacity(self) -> int | None:
        return self.limits.kv_capacity

    def prepare(self, requests: Sequence[Request]) -> None:
        require_target_lengths(requests)

    def start(self, plan: StreamPlan, requests: Sequence[Request]) -> None:
        self._model = SchedulerModel(self.limits, self.cost)
        self._track = plan.reserve is not None  # only an admission rule needs held tokens
        self._arrivals = 0

    def submit(self, request: Request, priority: int) -> None:
        assert request.target_len is not None
        kept = len(request.output_prefix)
        self._arrivals += 1
        self._model.add(
            SimRequest(
                request.index,
                prompt=request.num_prompt_tokens + kept,
                target=request.target_len - kept,
                priority=priority,
                arrival=self._arrivals,
            )
        )

    def has_unfinished(self) -> bool:
        return self._model.has_unfinished()

    def now(self) -> float:
        return self._model.clock

    def finish(self) -> StreamRun:
        return StreamRun(self._model.clock, self._model.num_preemptions)

    def step(self) -> StepOutput:
        """Steps until a request finishes (or, under an admission rule, one step)."""
        while True:
            record = self._model.step()
            if record.finished or self._track or not self._model.has_unfinished():
                break
        output = StepOutput(finished=[(r.rid, [SIMULATED_TOKEN] * r.generated, True) for r in record.finished])
        if self._track:
            output.held_tokens = {r.rid: r.num_tokens for r in self._model.running()}
        return output
