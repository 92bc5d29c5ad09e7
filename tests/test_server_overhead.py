import dataclasses
import random

import pytest

from seqsched.simulate.server_overhead import ServerRun, fit_server_overhead, simulated_duration
from seqsched.simulate.step_cost import ContinuousCost
from seqsched.simulate.vllm_model import SchedulerLimits

LIMITS = SchedulerLimits(16, 2048, None, 128, policy="fcfs")
COST = ContinuousCost(a=2e-3, t=70e-6, s=8e-6, c=3e-7)


def _lengths(n: int, seed: int) -> tuple[list[int], list[int]]:
    rng = random.Random(seed)
    return [rng.randint(10, 80) for _ in range(n)], [rng.randint(1, 200) for _ in range(n)]


def _measured(truth: ContinuousCost, max_inflight: int | None, seed: int) -> ServerRun:
    prompts, outputs = _lengths(60, seed)
    probe = ServerRun(prompts, outputs, 1.0, max_inflight)
    return dataclasses.replace(probe, duration=simulated_duration(probe, LIMITS, truth))


def test_two_concurrencies_recover_both_terms() -> None:
    truth = dataclasses.replace(COST, a=COST.a + 1.5e-3, s=COST.s + 0.2e-3)
    runs = [_measured(truth, None, 0), _measured(truth, 4, 1)]
    fitted = fit_server_overhead(runs, LIMITS, COST)
    assert fitted.a == pytest.approx(truth.a, rel=1e-6)
    assert fitted.s == pytest.approx(truth.s, rel=1e-6)
    assert (fitted.t, fitted.c) == (COST.t, COST.c)


def test_one_term_fits_one_run_exactly() -> None:
    truth = dataclasses.replace(COST, a=COST.a + 1e-3, s=COST.s + 0.1e-3)
    run = _measured(truth, None, 2)
    fitted = fit_server_overhead([run], LIMITS, COST, terms=("s",))
    assert fitted.a == COST.a and fitted.s > COST.s
    assert simulated_duration(run, LIMITS, fitted) == pytest.approx(run.duration, rel=1e-6)


def test_fewer_slots_take_longer() -> None:
    prompts, outputs = _lengths(40, 3)
    full = simulated_duration(ServerRun(prompts, outputs, 1.0), LIMITS, COST)
    assert simulated_duration(ServerRun(prompts, outputs, 1.0, max_inflight=2), LIMITS, COST) > 2 * full


def test_a_term_that_would_be_negative_is_dropped() -> None:
    # Faster than the offline cost at full concurrency, slower at low: only the per-step term is left.
    slow_steps = dataclasses.replace(COST, a=COST.a + 2e-3)
    runs = [_measured(COST, None, 4), _measured(slow_steps, 2, 5)]
    runs[0] = dataclasses.replace(runs[0], duration=runs[0].duration * 0.9)
    fitted = fit_server_overhead(runs, LIMITS, COST)
    assert fitted.s == COST.s and fitted.a > COST.a


def test_a_server_faster_than_the_offline_cost_adds_nothing() -> None:
    run = _measured(COST, None, 6)
    assert fit_server_overhead([dataclasses.replace(run, duration=run.duration / 2)], LIMITS, COST) == COST


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ServerRun([1, 2], [3], 1.0), "as many prompt as output"),
        (lambda: ServerRun([], [], 1.0), "at least one request"),
        (lambda: ServerRun([1], [3], 0.0), "duration must be > 0"),
        (lambda: fit_server_overhead([], LIMITS, COST), "at least one run"),
        (lambda: fit_server_overhead([ServerRun([1], [3], 1.0)], LIMITS, COST, terms=("t",)), "terms must be"),
    ],
)
def test_bad_input_is_refused(make: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()  # type: ignore[operator]
