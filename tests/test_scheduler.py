"""The scheduler on plain data: grouping, sorting, binning, VBS, FCR caps."""

from __future__ import annotations

import pytest

from seqsched.schedule import MicroBatch, ScheduleConfig, groups, is_failure, plan_group, plan_retries
from seqsched.schedule.vbs import batch_size_fn, bin_ceiling
from tests.helpers import create_requests


def _rows(plan: list[MicroBatch]) -> list[list[int]]:
    return [list(b.indices) for b in plan]


def test_vanilla_keeps_input_order_in_fixed_batches() -> None:
    requests = create_requests([512] * 10)
    plan = plan_group(requests, ScheduleConfig(batch_size=4))
    assert _rows(plan) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert all(b.max_new_tokens == 512 for b in plan)


def test_sorts_by_predicted_length_and_caps_with_fcr() -> None:
    requests = create_requests([300, 10, 200, 20])
    plan = plan_group(requests, ScheduleConfig(batch_size=2, fcr=True))
    assert _rows(plan) == [[1, 3], [2, 0]]
    assert [b.max_new_tokens for b in plan] == [20, 300]


def test_without_fcr_batches_run_to_the_limit() -> None:
    plan = plan_group(create_requests([300, 10, 200, 20]), ScheduleConfig(batch_size=2))
    assert [b.max_new_tokens for b in plan] == [512, 512]


def test_ties_break_by_input_order() -> None:
    plan = plan_group(create_requests([50, 50, 50, 50]), ScheduleConfig(batch_size=3, fcr=True))
    assert _rows(plan) == [[0, 1, 2], [3]]
    assert all(b.max_new_tokens == 50 for b in plan)


def test_one_request() -> None:
    plan = plan_group(create_requests([7]), ScheduleConfig(vbs="paper", fcr=True))
    assert _rows(plan) == [[0]] and plan[0].max_new_tokens == 50


def test_predictions_above_the_limit_are_clamped() -> None:
    plan = plan_group(create_requests([900, 5], max_new_tokens=100), ScheduleConfig(batch_size=1, fcr=True))
    assert [b.max_new_tokens for b in plan] == [5, 100]


def test_predictions_below_one_are_clamped() -> None:
    plan = plan_group(create_requests([0, -4]), ScheduleConfig(batch_size=2, fcr=True))
    assert plan[0].max_new_tokens == 1


def test_bin_ceiling() -> None:
    assert [bin_ceiling(x, 50) for x in (1, 49, 50, 51, 100, 101)] == [50, 50, 50, 100, 100, 150]


def test_paper_vbs_table() -> None:
    rows = batch_size_fn(ScheduleConfig(vbs="paper"), 512)
    assert [rows(c) for c in (50, 100, 150, 200, 250, 300, 500)] == [256, 128, 64, 32, 16, 16, 16]


def test_budget_vbs_is_clamped() -> None:
    cfg = ScheduleConfig(vbs="budget", token_budget=4000, batch_size=8, max_batch_size=64)
    rows = batch_size_fn(cfg, 512)
    assert [rows(c) for c in (50, 100, 200, 500)] == [64, 40, 20, 8]
    assert batch_size_fn(ScheduleConfig(vbs="budget"), 512)(512) == 16  # default budget = a vanilla batch


def test_vbs_gives_short_bins_more_rows() -> None:
    # 40 requests predicted at 30 tokens fill one 50-bin batch (<= 256 rows, >= 128 to fill).
    requests = create_requests([30] * 200 + [400] * 20)
    plan = plan_group(requests, ScheduleConfig(vbs="paper", fcr=True))
    assert [(b.batch_size, b.max_new_tokens) for b in plan] == [(200, 50), (16, 400), (4, 400)]


def test_vbs_merges_an_underfilled_bin_into_the_next_one_up() -> None:
    # 10 requests in the 50-bin cannot fill max(256 // 2, 16) rows: they move up to the 100-bin.
    requests = create_requests([20] * 10 + [80] * 70 + [480] * 3)
    plan = plan_group(requests, ScheduleConfig(vbs="paper", fcr=True))
    assert [(b.batch_size, b.max_new_tokens) for b in plan] == [(80, 100), (3, 500)]
    assert plan[0].indices[:10] == tuple(range(10)), "merged rows keep the sorted order"


def test_last_bin_keeps_its_small_batch() -> None:
    plan = plan_group(create_requests([120] * 3), ScheduleConfig(vbs="paper", fcr=True))
    assert [(b.batch_size, b.max_new_tokens) for b in plan] == [(3, 150)]


def test_plan_holds_every_request_exactly_once() -> None:
    predicted = [(i * 37) % 500 + 1 for i in range(300)]
    for cfg in (ScheduleConfig(), ScheduleConfig(vbs="paper"), ScheduleConfig(vbs="budget", fcr=True)):
        plan = plan_group(create_requests(predicted), cfg)
        assert sorted(i for b in plan for i in b.indices) == list(range(300))


def test_retries_run_at_the_full_limit_in_failure_order() -> None:
    requests = create_requests([10, 10, 10], max_new_tokens=256)
    plan = plan_retries([requests[2], requests[0], requests[1]], ScheduleConfig(batch_size=2))
    assert _rows(plan) == [[2, 0], [1]]
    assert all(b.is_retry and b.max_new_tokens == 256 for b in plan)


def test_limits_count_the_tokens_a_request_kept() -> None:
    requests = create_requests([10, 10], max_new_tokens=256)
    requests[0].output_prefix = (7,) * 100
    assert requests[0].remaining_tokens == 156
    plan = plan_retries(requests[:1], ScheduleConfig(batch_size=2))
    assert plan[0].max_new_tokens == 156
    batch = MicroBatch((0, 1), 100)
    assert is_failure(requests[1], batch, finished=False, num_output_tokens=100)
    assert not is_failure(requests[0], MicroBatch((0,), 156), finished=False, num_output_tokens=156)


def test_groups_are_windows_in_input_order() -> None:
    sizes = [len(g) for g in groups(create_requests([1] * 10), 4)]
    assert sizes == [4, 4, 2]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "batch_size (0) must be >= 1"),
        ({"group_size": -1}, "group_size (-1) must be >= 1"),
        ({"vbs": "fast"}, "vbs ('fast') must be one of off, paper, budget"),
        ({"fcr_mode": "later"}, "fcr_mode ('later') must be one of restart, resume"),
        ({"bin_size": 0}, "bin_size (0) must be >= 1"),
        ({"token_budget": 0}, "token_budget (0) must be >= 1"),
        ({"batch_size": 32, "max_batch_size": 16}, "max_batch_size (16) must be >= batch_size (32)"),
    ],
)
def test_bad_config_is_rejected_with_the_value(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ScheduleConfig(**kwargs)


def test_micro_batch_invariants() -> None:
    with pytest.raises(AssertionError):
        MicroBatch((), 10)
    with pytest.raises(AssertionError):
        MicroBatch((1, 1), 10)
    with pytest.raises(AssertionError):
        MicroBatch((1,), 0)
