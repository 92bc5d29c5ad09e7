"""The top-level loop on plain data: FCR failures, re-runs, order, and the metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from seqsched.metrics import compute_metrics
from seqsched.pipeline import Pipeline
from seqsched.predict.constant import ConstantPredictor
from seqsched.predict.oracle import OraclePredictor
from seqsched.request import Request, RequestStatus
from seqsched.schedule import ScheduleConfig
from tests.helpers import StepCountingEngine, create_requests

if TYPE_CHECKING:
    from seqsched.engine.hf import HFEngine

ACTUAL = [40, 5, 30, 10]


def _oracle(lengths: list[int]) -> OraclePredictor:
    return OraclePredictor({f"r{i}": n for i, n in enumerate(lengths)})


def test_vanilla_pads_to_the_longest_row() -> None:
    report = Pipeline(StepCountingEngine(), ConstantPredictor(), ScheduleConfig(batch_size=2)).run(
        create_requests(ACTUAL, ACTUAL, max_new_tokens=64)
    )
    m = compute_metrics(report)
    assert [r.length for r in report.results] == [40, 40, 30, 30]
    assert m.average_length == 35
    assert m.effective_token_ratio == pytest.approx(85 / 140)
    assert m.failure_ratio == 0 and m.wall_seconds == pytest.approx(70)


def test_oracle_groups_similar_lengths() -> None:
    report = Pipeline(StepCountingEngine(), _oracle(ACTUAL), ScheduleConfig(batch_size=2, fcr=True)).run(
        create_requests(ACTUAL, ACTUAL, max_new_tokens=64)
    )
    assert [r.length for r in report.results] == [40, 10, 40, 10]
    assert compute_metrics(report).effective_token_ratio == pytest.approx(85 / 100)


def test_fcr_failures_rerun_at_the_full_limit_and_count_their_waste() -> None:
    # Request 0 is predicted 8 but needs 40: it fails at the cap of 10 and is re-run.
    engine = StepCountingEngine()
    requests = create_requests([8, 5, 30, 10], ACTUAL, max_new_tokens=64)
    report = Pipeline(engine, _oracle([8, 5, 30, 10]), ScheduleConfig(batch_size=2, fcr=True)).run(requests)
    assert [(b.indices, b.max_new_tokens, b.is_retry) for b in engine.batches] == [
        ((1, 0), 8, False),
        ((3, 2), 30, False),
        ((0,), 64, True),
    ]
    first = report.results[0]
    assert first.num_runs == 2 and first.num_wasted_steps == 8 and first.length == 8 + 40
    assert first.num_output_tokens == 40 and first.status == RequestStatus.FINISHED_STOPPED
    m = compute_metrics(report)
    assert m.failure_ratio == pytest.approx(1 / 4)
    assert m.average_length == pytest.approx((48 + 8 + 30 + 30) / 4)
    assert m.discarded_ratio == pytest.approx(8 / (48 + 8 + 30 + 30))


def test_resumed_failures_keep_their_tokens_and_decode_only_the_rest() -> None:
    # As above, but request 0 keeps its 8 tokens: the re-run decodes the other 32 and,
    # with 56 tokens left of its 64, runs at a cap of 56.
    engine = StepCountingEngine()
    requests = create_requests([8, 5, 30, 10], ACTUAL, max_new_tokens=64)
    config = ScheduleConfig(batch_size=2, fcr=True, fcr_mode="resume")
    report = Pipeline(engine, _oracle([8, 5, 30, 10]), config).run(requests)
    assert [(b.indices, b.max_new_tokens, b.is_retry) for b in engine.batches] == [
        ((1, 0), 8, False),
        ((3, 2), 30, False),
        ((0,), 56, True),
    ]
    first = report.results[0]
    assert first.num_runs == 2 and first.num_wasted_steps == 0 and first.length == 8 + 32
    assert first.num_output_tokens == 40 and first.status == RequestStatus.FINISHED_STOPPED
    m = compute_metrics(report)
    assert m.failure_ratio == pytest.approx(1 / 4)
    assert m.effective_token_ratio == pytest.approx(85 / (40 + 8 + 30 + 30))
    assert m.discarded_ratio == 0


def test_a_resumed_request_fails_again_only_below_its_remaining_limit() -> None:
    # Two caps in a row: predicted 4 of 20, limit 12. The re-run has 8 tokens left and a
    # cap of 8, so reaching it is the request's own limit (cut), not a second failure.
    requests = create_requests([4], [20], max_new_tokens=12)
    config = ScheduleConfig(fcr=True, fcr_mode="resume")
    report = Pipeline(StepCountingEngine(), _oracle([4]), config).run(requests)
    result = report.results[0]
    assert report.num_failures == 1 and result.num_runs == 2
    assert result.num_output_tokens == 12 and result.status == RequestStatus.FINISHED_LENGTH


def test_failures_rerun_at_the_end_of_their_group() -> None:
    engine = StepCountingEngine()
    requests = create_requests([1, 50, 50, 50], [20, 50, 50, 50], max_new_tokens=64)
    Pipeline(engine, _oracle([1, 50, 50, 50]), ScheduleConfig(batch_size=1, group_size=2, fcr=True)).run(requests)
    assert [(b.indices, b.is_retry) for b in engine.batches] == [
        ((0,), False),
        ((1,), False),
        ((0,), True),
        ((2,), False),
        ((3,), False),
    ]


def test_cut_at_own_limit_is_final_not_a_failure() -> None:
    requests = create_requests([100], [100], max_new_tokens=30)
    report = Pipeline(StepCountingEngine(), _oracle([100]), ScheduleConfig(fcr=True)).run(requests)
    result = report.results[0]
    assert result.status == RequestStatus.FINISHED_LENGTH and result.num_runs == 1
    assert result.num_output_tokens == 30 and report.num_failures == 0


def test_results_come_back_in_input_order_with_timestamps() -> None:
    actual = [30, 1, 20, 2, 10, 3]
    report = Pipeline(StepCountingEngine(), _oracle(actual), ScheduleConfig(batch_size=2, fcr=True)).run(
        create_requests(actual, actual)
    )
    assert [r.request.index for r in report.results] == list(range(6))
    assert [r.num_output_tokens for r in report.results] == actual
    # Short requests run first, so they complete first.
    assert report.results[1].completed_at < report.results[0].completed_at
    assert all(r.scheduled_at < r.completed_at for r in report.results)


def test_failed_requests_are_skipped_and_reported() -> None:
    class RejectingEngine(StepCountingEngine):
        def prepare(self, requests):  # type: ignore[no-untyped-def]
            requests[1].fail("prompt too long")

    report = Pipeline(RejectingEngine(), ConstantPredictor(), ScheduleConfig()).run(create_requests([5, 6, 7]))
    assert report.results[1].status == RequestStatus.FINISHED_ERROR
    assert report.results[1].num_runs == 0
    assert compute_metrics(report).num_errors == 1


def test_oracle_missing_ids_are_named() -> None:
    with pytest.raises(KeyError, match="'r1'"):
        Pipeline(StepCountingEngine(), _oracle([5]), ScheduleConfig()).run(create_requests([5, 6]))


def test_progress_counts_every_request_once() -> None:
    seen: list[int] = []
    Pipeline(StepCountingEngine(), _oracle([8, 5, 30, 10]), ScheduleConfig(batch_size=2, fcr=True), seen.append).run(
        create_requests([8, 5, 30, 10], ACTUAL, max_new_tokens=64)
    )
    assert sum(seen) == 4


def test_on_result_sees_every_final_result_once_errors_included() -> None:
    class RejectingEngine(StepCountingEngine):
        def prepare(self, requests):  # type: ignore[no-untyped-def]
            requests[2].fail("prompt too long")

    seen: list[tuple[int, int]] = []
    Pipeline(
        RejectingEngine(),
        _oracle([8, 5, 30, 10]),
        ScheduleConfig(batch_size=2, fcr=True),
        on_result=lambda r: seen.append((r.request.index, r.num_output_tokens)),
    ).run(create_requests([8, 5, 30, 10], ACTUAL, max_new_tokens=64))
    assert sorted(seen) == [(0, 40), (1, 5), (2, 0), (3, 10)]
    assert seen[0] == (2, 0), "rejected requests are reported first"


def test_running_out_of_memory_halves_the_micro_batch(
    tiny_engine: HFEngine, reference: list[list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from tests.tiny_model import tiny_requests

    real = type(tiny_engine)._generate
    sizes: list[int] = []

    def small_memory(self: HFEngine, rows: list[Request], limits: list[int]) -> list[list[int]]:
        sizes.append(len(rows))
        if len(rows) > 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, rows, limits)

    monkeypatch.setattr(type(tiny_engine), "_generate", small_memory)
    report = Pipeline(tiny_engine, ConstantPredictor(), ScheduleConfig(batch_size=8)).run(tiny_requests())
    assert [r.token_ids for r in report.results] == reference
    assert report.num_oom_splits > 0
    assert max(sizes) == 8 and all(n <= 3 for n in sizes if n not in (8, 4))
