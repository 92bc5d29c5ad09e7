"""A server's own work on top of the engine's steps, fitted from runs of the real server.

An OpenAI server does work that offline engine steps do not: HTTP, detokenizing and
streaming each token back, and, where its API process shares the engine's cores, the
switches between the two. Modelled as extra step cost, per step (``a``) and per request
per step (``s``), fitted from runs that send every request at once (at most
``max_inflight`` in flight: a client's ``--max-concurrency``). Such a run is scheduled
the same whatever a step costs, so its simulated duration is linear in the two terms, and
least squares over the runs gives them; two runs at different concurrency tell the terms
apart. No torch here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from seqsched.simulate.server import LatencySummary, OnlineRequest, simulate_server
from seqsched.simulate.step_cost import ContinuousCost
from seqsched.simulate.vllm_model import SchedulerLimits

TERMS = ("a", "s")


@dataclass(frozen=True)
class ServerRun:
    """One measured run: every request sent at once, in this order; ``duration`` from the
    first send to the last token (seconds)."""

    prompt_tokens: Sequence[int]
    output_tokens: Sequence[int]
    duration: float
    max_inflight: int | None = None

    def __post_init__(self) -> None:
        if len(self.prompt_tokens) != len(self.output_tokens) or not self.output_tokens:
            raise ValueError("a server run needs as many prompt as output lengths, and at least one request")
        if not self.duration > 0:
            raise ValueError(f"a server run's duration must be > 0, got {self.duration}")


def simulated_duration(run: ServerRun, limits: SchedulerLimits, cost: ContinuousCost) -> float:
    """The run's requests all at time 0 on the modelled server: its last completion."""
    if run.max_inflight is not None:
        limits = dataclasses.replace(limits, max_num_seqs=min(run.max_inflight, limits.max_num_seqs))
    load = [OnlineRequest(max(1, p), max(1, o), 0.0) for p, o in zip(run.prompt_tokens, run.output_tokens, strict=True)]
    return len(load) / LatencySummary.of(simulate_server(load, limits, cost)).throughput


def fit_server_overhead(
    runs: Sequence[ServerRun], limits: SchedulerLimits, cost: ContinuousCost, terms: Sequence[str] = TERMS
) -> ContinuousCost:
    """``cost`` plus the extra per step and per request per step (those of ``terms``) that
    give each run its measured duration, least squares over the runs; a term the fit would
    make negative is dropped, and with none left ``cost`` comes back unchanged."""
    unknown = [t for t in terms if t not in TERMS]
    if unknown or not terms:
        raise ValueError(f"terms must be some of {TERMS}, got {list(terms)}")
    if not runs:
        raise ValueError("fitting a server's overhead needs at least one run")
    unit = 1e-3
    base = np.array([simulated_duration(r, limits, cost) for r in runs])
    bumped = [_plus(cost, {t: unit}) for t in terms]
    slopes = np.array([[simulated_duration(r, limits, c) - b for c in bumped] for r, b in zip(runs, base, strict=True)])
    slopes /= unit
    gap = np.array([r.duration for r in runs]) - base
    active = list(range(len(terms)))
    while active:
        solution, *_ = np.linalg.lstsq(slopes[:, active], gap, rcond=None)
        if (solution >= 0).all():
            return _plus(cost, {terms[i]: float(x) for i, x in zip(active, solution, strict=True)})
        active.pop(int(np.argmin(solution)))
    return cost


def _plus(cost: ContinuousCost, extra: dict[str, float]) -> ContinuousCost:
    return dataclasses.replace(cost, **{t: getattr(cost, t) + x for t, x in extra.items()})
