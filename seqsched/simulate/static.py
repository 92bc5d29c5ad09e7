"""The simulator: no model. Output lengths come from each request's ``target_len`` (a
trace), and seconds from a per-step cost model. No torch here."""

from __future__ import annotations

from collections.abc import Sequence

from seqsched.engine.base import BatchRun, Engine
from seqsched.request import Request
from seqsched.schedule import MicroBatch
from seqsched.simulate.cost_model import StepCostModel, load_cost_model
from seqsched.simulate.trace import require_target_lengths, trace_outcomes


class SimulatedEngine(Engine):
    """Runs micro-batches exactly as trace replay would, step for step, in modelled time.

    Rows are left-padded to the batch's longest prompt, as a static-batch engine does; a
    resumed row's prompt includes the tokens it kept, which the prefill recomputes.
    """

    name = "simulate"
    modelled_time = True

    def __init__(self, cost_model: StepCostModel | None = None) -> None:
        self.cost_model = cost_model if cost_model is not None else load_cost_model(None)

    def prepare(self, requests: Sequence[Request]) -> None:
        require_target_lengths(requests)

    def run(self, batch: MicroBatch, requests: Sequence[Request]) -> BatchRun:
        outcomes = trace_outcomes(batch, requests)
        prompt_len = max(r.num_prompt_tokens + len(r.output_prefix) for r in requests)
        seconds = self.cost_model.batch_seconds(len(requests), prompt_len, outcomes[0].num_steps)
        return BatchRun(outcomes, seconds)
