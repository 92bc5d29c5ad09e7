"""The continuous-batching plan on plain data: order per policy, the aging bound, the
KV admission rule, ties by input order."""

from __future__ import annotations

import random

import pytest

from seqsched.schedule import KVAdmission, ScheduleConfig, bounded_sort, plan_stream
from tests.helpers import create_requests


def _order(predicted: list[int], **cfg: object) -> list[int]:
    return list(plan_stream(create_requests(predicted), ScheduleConfig(**cfg)).order)  # type: ignore[arg-type]


def test_fcfs_keeps_input_order_and_needs_no_prediction() -> None:
    requests = create_requests([30, 10, 20])
    for r in requests:
        r.predicted_len = None
    plan = plan_stream(requests, ScheduleConfig(policy="fcfs"))
    assert plan.order == (0, 1, 2)
    assert plan.reserve is None


def test_sjf_runs_shortest_first_and_ljf_longest_first() -> None:
    assert _order([30, 10, 20, 40], policy="sjf") == [1, 2, 0, 3]
    assert _order([30, 10, 20, 40], policy="ljf") == [3, 0, 2, 1]


def test_ties_break_by_input_order() -> None:
    assert _order([20, 10, 20, 10], policy="sjf") == [1, 3, 0, 2]
    assert _order([20, 10, 20, 10], policy="ljf") == [0, 2, 1, 3]


def test_priority_is_the_rank_in_the_order() -> None:
    plan = plan_stream(create_requests([30, 10, 20]), ScheduleConfig(policy="sjf"))
    assert [plan.priority[i] for i in plan.order] == [0, 1, 2]


def test_predictions_are_clamped_to_the_limit() -> None:
    # 900 and 600 both exceed the limit of 512, so they tie and keep input order.
    assert _order([900, 600, 100], policy="sjf") == [2, 0, 1]


def test_aging_bound_zero_is_fcfs() -> None:
    assert _order([30, 10, 20, 40], policy="sjf", max_bypass=0) == [0, 1, 2, 3]


def test_aging_bound_forces_the_oldest_request_in() -> None:
    # One long request first, then short ones: with a bound of 2 it may be overtaken twice.
    assert _order([500, 1, 2, 3, 4, 5], policy="sjf", max_bypass=2) == [1, 2, 0, 3, 4, 5]


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("bound", [0, 1, 3, 10, None])
def test_aging_bound_holds_on_random_keys(seed: int, bound: int | None) -> None:
    rng = random.Random(seed)
    keys = [rng.randint(1, 50) for _ in range(rng.randint(1, 60))]
    order = bounded_sort(keys, bound)
    assert sorted(order) == list(range(len(keys)))
    for rank, position in enumerate(order):
        overtaken_by = sum(1 for p in order[:rank] if p > position)
        assert bound is None or overtaken_by <= bound
    if bound is None:
        assert order == sorted(range(len(keys)), key=lambda i: (keys[i], i))


def test_kv_reservation_is_prompt_plus_margin_times_prediction() -> None:
    requests = create_requests([10, 100, 600])
    for r in requests:
        r.num_prompt_tokens_hint = 7
    plan = plan_stream(requests, ScheduleConfig(admission="kv", kv_margin=1.5), kv_capacity=1000, block_size=8)
    # 7 + 15, 7 + 150, 7 + min(512, 900)
    assert plan.reserve == {0: 22, 1: 157, 2: 519}
    assert plan.prompt_tokens == {0: 7, 1: 7, 2: 7}
    assert (plan.kv_capacity, plan.block_size) == (1000, 8)


def test_kv_admission_needs_a_capacity() -> None:
    with pytest.raises(ValueError, match="KV-cache capacity"):
        plan_stream(create_requests([10]), ScheduleConfig(admission="kv"))


def _admission(capacity: int, sizes: dict[int, tuple[int, int]], block_size: int = 1) -> KVAdmission:
    """``sizes``: request -> (prompt, final size)."""
    final = {i: f for i, (_, f) in sizes.items()}
    return KVAdmission(capacity, final, {i: p for i, (p, _) in sizes.items()}, block_size)


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("block_size", [1, 16])
def test_with_exact_predictions_the_cache_never_overflows(seed: int, block_size: int) -> None:
    """Requests grow one token a step and free everything at their end, as in an engine."""
    rng = random.Random(seed)
    sizes = {i: (p, p + rng.randint(1, 120)) for i, p in enumerate(rng.randint(1, 40) for _ in range(150))}
    capacity = 600
    admission = _admission(capacity, sizes, block_size)
    waiting, running, admitted_peak = list(sizes), {}, 0
    while waiting or running:
        while waiting and admission.try_admit(waiting[0]):
            index = waiting.pop(0)
            running[index] = sizes[index][0]
        admitted_peak = max(admitted_peak, len(running))
        for i in list(running):
            running[i] += 1  # the step's new token needs its slot
            admission.grow(i, running[i])
        used = sum(-(-held // block_size) * block_size for held in running.values())
        assert used <= capacity or len(running) == 1
        for i in [i for i, held in running.items() if held >= sizes[i][1]]:
            del running[i]
            admission.release(i)
    assert admitted_peak > 5


def test_admission_counts_that_finished_requests_free_their_cache() -> None:
    # The final sizes add up to 110 > 100, but the short one ends long before the long one peaks.
    admission = _admission(100, {0: (10, 90), 1: (10, 20)})
    assert admission.try_admit(0)
    assert admission.try_admit(1)
    assert admission.peak() == 90


def test_kv_admission_admits_one_request_larger_than_the_cache() -> None:
    admission = _admission(10, {0: (5, 50), 1: (2, 5)})
    assert admission.try_admit(0)
    assert not admission.try_admit(1)
    admission.release(0)
    assert admission.try_admit(1)


def test_kv_admission_charges_what_a_request_outgrew() -> None:
    admission = _admission(100, {0: (10, 40), 1: (10, 40), 2: (10, 40)})
    assert admission.try_admit(0) and admission.try_admit(1)
    admission.grow(0, 85)  # under-predicted: it holds 85, and is given one more step
    assert admission.used == 95
    assert admission.peak(2) > 100
    assert not admission.try_admit(2)
    admission.grow(1, 5)  # never shrinks
    assert admission.held[1] == 10


def test_config_rejects_bad_continuous_fields() -> None:
    with pytest.raises(ValueError, match="policy"):
        ScheduleConfig(policy="random")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="admission"):
        ScheduleConfig(admission="memory")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"max_bypass \(-1\)"):
        ScheduleConfig(max_bypass=-1)
    with pytest.raises(ValueError, match=r"kv_margin \(0\)"):
        ScheduleConfig(kv_margin=0)
