"""Measured against modelled: replay a bench's strategies in the simulator.

The simulator and trace replay share the scheduler and ``trace_outcomes``, so average
length, effective token ratio and failure ratio must agree exactly; only seconds differ,
by as much as the cost model is off. This is how a cost model is validated.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from seqsched.bench.runner import BenchResult, Strategy, fresh_copies, run_strategies
from seqsched.engine.base import Engine
from seqsched.request import Request
from seqsched.simulate.cost_model import StepCostModel
from seqsched.simulate.static import SimulatedEngine


@dataclass(frozen=True)
class Comparison:
    name: str
    measured_seconds: float
    simulated_seconds: float
    same_schedule: bool  # average length, effective token ratio and failure ratio all equal

    @property
    def error(self) -> float:
        """Simulated over measured, minus one."""
        return self.simulated_seconds / self.measured_seconds - 1


def compare_with_simulation(
    measured: BenchResult,
    engine: Engine,
    requests: Sequence[Request],
    strategies: Sequence[Strategy],
    cost_model: StepCostModel,
) -> list[Comparison]:
    """Simulate ``strategies`` on ``requests`` with the prompt lengths ``engine`` tokenizes.
    Strategies on their own engine (continuous batching) are not compared here: skipped."""
    planned = [s for s in strategies if s.engine is None]
    prepared = fresh_copies(requests)
    engine.prepare(prepared)
    simulated = run_strategies(SimulatedEngine(cost_model), prepared, _reusable(planned, measured), warmup=False)
    by_name = {r.strategy.name: r for r in measured.results}
    rows = []
    for sim in simulated.results:
        real = by_name[sim.strategy.name]
        a, b = real.metrics, sim.metrics
        same = (a.average_length, a.effective_token_ratio, a.failure_ratio) == (
            b.average_length,
            b.effective_token_ratio,
            b.failure_ratio,
        )
        rows.append(Comparison(real.strategy.name, a.wall_seconds, b.wall_seconds, same))
    return rows


def format_comparison(rows: Sequence[Comparison]) -> str:
    lines = [f"{'strategy':20} {'measured s':>10} {'simulated s':>11} {'error':>7}  same schedule"]
    for r in rows:
        lines.append(
            f"{r.name:20} {r.measured_seconds:10.2f} {r.simulated_seconds:11.2f} {r.error:+7.1%}  "
            f"{'yes' if r.same_schedule else 'NO'}"
        )
    return "\n".join(lines)


def _reusable(strategies: Sequence[Strategy], measured: BenchResult) -> list[Strategy]:
    """The same strategies; a predictor made from an earlier run is reused as it was made."""
    made = {r.strategy.name: r for r in measured.results}
    return [dataclasses.replace(s, predictor=made[s.name].predictor) for s in strategies]
