"""What a run would do, without generating: the predicted lengths, the plan made from
them, and how long a cost model says it takes.

The plan runs through the same Pipeline as a real job, on the simulated engine of its
kind (static micro-batches, or a continuous engine's order), with every response taken
to be exactly as long as predicted. So the time is the plan's time *if the predictions
are right*, on the hardware the cost model describes; ``seqsched calibrate`` measures
one for your model and machine.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from seqsched.pipeline import Pipeline, RunReport
from seqsched.predict.base import LengthPredictor
from seqsched.request import Request
from seqsched.schedule import ScheduleConfig
from seqsched.simulate.cost_model import StepCostModel
from seqsched.simulate.static import SimulatedEngine
from seqsched.simulate.stream import SimulatedContinuousEngine

SHOWN = 12  # micro-batches (or requests of an order) listed
PREDICT_CHUNK = 1024  # requests predicted in one call: a predictor's working memory grows with a call


@dataclass
class DryRun:
    requests: list[Request]
    predicted: list[int]  # input order, clamped to each request's limit
    report: RunReport  # the plan, run in modelled time
    cost_model: str
    stream: bool

    def describe(self) -> str:
        n = len(self.predicted)
        ordered = sorted(self.predicted)
        at_limit = sum(p >= r.max_new_tokens for p, r in zip(self.predicted, self.requests, strict=True))
        lines = [
            f"predicted lengths of {n} requests: mean {statistics.fmean(ordered):.1f}, median "
            f"{ordered[n // 2]}, p90 {ordered[min(n - 1, int(0.9 * n))]}, {at_limit} at their limit",
        ]
        if self.stream:
            order = self.report.stream_order or ()
            first = ", ".join(f"{self.requests[i].request_id} ({self.predicted[i]})" for i in order[:SHOWN])
            lines.append(f"admission order (predicted length): {first}" + (", ..." if len(order) > SHOWN else ""))
        else:
            batches = self.report.batches
            lines.append(f"plan: {len(batches)} micro-batch{'es' if len(batches) != 1 else ''}")
            lines.append(f"  {'#':>4} {'rows':>5} {'cap':>5} {'steps':>6} {'seconds':>8}")
            for k, b in enumerate(batches[:SHOWN]):
                lines.append(f"  {k + 1:>4} {b.batch_size:>5} {b.max_new_tokens:>5} {b.num_steps:>6} {b.seconds:>8.3f}")
            if len(batches) > SHOWN:
                lines.append(f"  ... {len(batches) - SHOWN} more")
        seconds = self.report.wall_seconds
        latency = statistics.fmean(r.completed_at for r in self.report.results) if self.report.results else 0.0
        lines.append(
            f"predicted time: {seconds:.1f} s ({n / seconds if seconds else 0:.2f} req/s, mean completion "
            f"{latency:.1f} s) by the cost model {self.cost_model}, if every prediction is right; nothing generated"
        )
        return "\n".join(lines)


def dry_run(
    requests: Sequence[Request],
    predictor: LengthPredictor,
    schedule: ScheduleConfig,
    cost_model: StepCostModel,
    cost_model_name: str,
    stream: bool = False,
    max_num_seqs: int = 256,
) -> DryRun:
    predicted = []
    for start in range(0, len(requests), PREDICT_CHUNK):  # group by group, as a real run predicts
        chunk = requests[start : start + PREDICT_CHUNK]
        guesses = predictor.predict_requests(chunk)
        predicted += [max(1, min(int(p), r.max_new_tokens)) for p, r in zip(guesses, chunk, strict=True)]
    # The requests themselves take their predicted lengths as the lengths to simulate (no
    # copies: a dry run of a million lines holds one set); a dry run uses them up.
    for r, p in zip(requests, predicted, strict=True):
        r.target_len, r.predicted_len = p, None
    engine = SimulatedContinuousEngine(cost_model, max_num_seqs) if stream else SimulatedEngine(cost_model)
    report = Pipeline(engine, _TargetLengths(), schedule).run(requests)
    return DryRun(list(requests), predicted, report, cost_model_name, stream)


class _TargetLengths(LengthPredictor):
    """Predicts each request's simulated length: the plan a correct predictor would make."""

    kind = "dry-run"

    def predict(self, texts: Sequence[str]) -> list[int]:
        raise NotImplementedError("the dry run predicts requests, not texts")

    def predict_requests(self, requests: Sequence[Request]) -> list[int]:
        return [int(r.target_len or 1) for r in requests]


def model_holder(predictor_path: str | Path | None, engine_config: Any, needs_model: bool = False) -> Any:
    """Something with ``model`` and ``tokenizer`` for predictors that read the serving model
    (probe, lora, pia), loaded only for them; an empty holder otherwise."""
    from seqsched.predict.base import read_manifest

    reads_model = predictor_path is not None and read_manifest(predictor_path)["kind"] in ("probe", "lora", "pia")
    if not needs_model and not reads_model:
        return SimpleNamespace()
    from seqsched.engine.loading import load_model  # imports torch

    model, tokenizer = load_model(engine_config)
    return SimpleNamespace(model=model, tokenizer=tokenizer)
