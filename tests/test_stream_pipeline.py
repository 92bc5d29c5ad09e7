"""One loop, continuous engines: the pipeline drives a stream plan through the simulated
continuous-batching engine (no model), and the plan's order, aging and admission show
in what the engine does."""

from __future__ import annotations

import random

import pytest

from seqsched.pipeline import Pipeline
from seqsched.predict.constant import ConstantPredictor
from seqsched.predict.oracle import OraclePredictor
from seqsched.request import RequestStatus
from seqsched.schedule import ScheduleConfig
from seqsched.simulate.cost_model import StepCostModel
from seqsched.simulate.stream import SimulatedContinuousEngine
from tests.helpers import create_requests

COST = StepCostModel(a=1.0, b=0.0, c=0.0)  # one second per step, prefill free


def _trace(n: int = 64, seed: int = 0) -> tuple[list[int], dict[str, int]]:
    rng = random.Random(seed)
    lengths = [rng.choice([rng.randint(1, 20), rng.randint(100, 200)]) for _ in range(n)]
    return lengths, {f"r{i}": n for i, n in enumerate(lengths)}


def _run(lengths: list[int], engine: SimulatedContinuousEngine, **cfg: object):  # type: ignore[no-untyped-def]
    requests = create_requests(lengths)
    for r in requests:
        r.predicted_len = None
        r.num_prompt_tokens_hint = 10
    predictor = OraclePredictor({r.request_id: n for r, n in zip(requests, lengths, strict=True)})
    return Pipeline(engine, predictor, ScheduleConfig(**cfg)).run(requests)  # type: ignore[arg-type]


def test_every_request_finishes_with_its_length_in_input_order() -> None:
    lengths, _ = _trace()
    report = _run(lengths, SimulatedContinuousEngine(COST, max_num_seqs=8), policy="sjf")
    assert [res.request.index for res in report.results] == list(range(len(lengths)))
    assert [res.num_output_tokens for res in report.results] == lengths
    assert all(res.status == RequestStatus.FINISHED_STOPPED for res in report.results)
    assert all(res.length == res.num_output_tokens for res in report.results)  # nothing pads


def test_sjf_cuts_mean_completion_time_at_the_same_work() -> None:
    lengths, _ = _trace()
    engine = SimulatedContinuousEngine(COST, max_num_seqs=8)
    fcfs, sjf = (_run(lengths, engine, policy=p) for p in ("fcfs", "sjf"))
    mean = [sum(res.completed_at for res in rep.results) / len(lengths) for rep in (fcfs, sjf)]
    assert mean[1] < 0.8 * mean[0]
    assert sum(res.num_output_tokens for res in sjf.results) == sum(lengths)


def test_ljf_shortens_the_makespan_of_a_long_tail() -> None:
    lengths = [5] * 15 + [100]
    engine = SimulatedContinuousEngine(COST, max_num_seqs=4)
    fcfs, ljf = (_run(lengths, engine, policy=p) for p in ("fcfs", "ljf"))
    assert ljf.wall_seconds < fcfs.wall_seconds


def test_aging_bound_limits_how_long_a_long_request_waits() -> None:
    lengths = [150] + [5] * 60
    engine = SimulatedContinuousEngine(COST, max_num_seqs=2)
    unbounded = _run(lengths, engine, policy="sjf", max_bypass=None)
    bounded = _run(lengths, engine, policy="sjf", max_bypass=4)
    # every request is submitted at once (the engine's priority queue orders them): the bound
    # shows in when the long one finishes
    assert bounded.results[0].completed_at < unbounded.results[0].completed_at


def test_a_small_kv_cache_preempts_and_kv_admission_avoids_it() -> None:
    lengths, _ = _trace(96, seed=1)
    engine = SimulatedContinuousEngine(COST, max_num_seqs=64, num_blocks=60, block_size=16)
    plain = _run(lengths, engine)
    admitted = _run(lengths, engine, admission="kv", kv_margin=1.0)
    assert plain.num_preemptions and plain.num_preemptions > 0
    assert admitted.num_preemptions == 0
    assert [r.num_output_tokens for r in admitted.results] == lengths


def test_plain_fcfs_does_not_ask_the_predictor() -> None:
    class Refusing(ConstantPredictor):
        def predict_requests(self, requests):  # type: ignore[no-untyped-def]
            raise AssertionError("fcfs without admission needs no prediction")

    requests = create_requests([3, 4])
    report = Pipeline(SimulatedContinuousEngine(COST), Refusing(), ScheduleConfig()).run(requests)
    assert [r.num_output_tokens for r in report.results] == [3, 4]


def test_kv_admission_on_an_engine_without_a_capacity_is_refused() -> None:
    with pytest.raises(ValueError, match="KV-cache capacity"):
        _run([3, 4], SimulatedContinuousEngine(COST, num_blocks=None), admission="kv")
