"""transformers' continuous batching on the tiny model, driven by stream plans: every
policy returns the tokens of plain ``generate``, in input order."""

from __future__ import annotations

import pytest

from seqsched.bench.runner import differing_outputs, run_strategies
from seqsched.bench.strategies import StrategyContext, make_strategy
from seqsched.engine.continuous import HFContinuousEngine
from seqsched.engine.hf import HFEngine
from seqsched.pipeline import Pipeline
from seqsched.predict.constant import ConstantPredictor
from seqsched.predict.oracle import OraclePredictor
from seqsched.request import Request, RequestStatus, SamplingParams
from seqsched.schedule import ScheduleConfig
from tests.tiny_model import tiny_requests as _requests


@pytest.mark.parametrize(
    "schedule",
    [
        ScheduleConfig(),
        ScheduleConfig(policy="sjf"),
        ScheduleConfig(policy="ljf", max_bypass=2),
        ScheduleConfig(policy="sjf", admission="kv"),
    ],
    ids=["fcfs", "sjf", "ljf-aged", "sjf-kv"],
)
def test_every_policy_returns_the_tokens_of_generating_alone_in_input_order(
    tiny_engine: HFEngine, reference: list[list[int]], schedule: ScheduleConfig
) -> None:
    engine = HFContinuousEngine(tiny_engine, num_blocks=3)  # 3 pages of 256 tokens: kv admission binds
    predictor = OraclePredictor({f"r{i}": max(1, len(tokens)) for i, tokens in enumerate(reference)})
    done: list[int] = []
    report = Pipeline(engine, predictor, schedule, progress=done.append).run(_requests())
    assert sum(done) == len(reference)
    assert report.wall_seconds > 0
    for i, result in enumerate(report.results):
        assert result.request.index == i
        assert result.token_ids == reference[i], f"request {i} differs from generating alone"
        ended = bool(reference[i]) and reference[i][-1] == tiny_engine.eos_token_ids[0]
        assert result.status == (RequestStatus.FINISHED_STOPPED if ended else RequestStatus.FINISHED_LENGTH)
        assert result.length == len(reference[i]), "nothing pads a continuously batched request"
        assert 0 < result.completed_at <= report.wall_seconds


def test_a_bad_request_fails_alone(tiny_engine: HFEngine, reference: list[list[int]]) -> None:
    requests = _requests(3)
    requests[1] = Request(1, "r1", prompt="x " * 5000, max_new_tokens=8)
    report = Pipeline(HFContinuousEngine(tiny_engine), ConstantPredictor(), ScheduleConfig()).run(requests)
    assert report.results[1].status == RequestStatus.FINISHED_ERROR
    assert "exceeds the model's context" in (report.results[1].request.error or "")
    assert [report.results[i].token_ids for i in (0, 2)] == [reference[0], reference[2]]


def test_a_sampled_request_fails_alone_with_its_reason(tiny_engine: HFEngine, reference: list[list[int]]) -> None:
    requests = _requests(3)
    requests[0].sampling = SamplingParams(temperature=0.7)
    report = Pipeline(HFContinuousEngine(tiny_engine), ConstantPredictor(), ScheduleConfig()).run(requests)
    assert report.results[0].status == RequestStatus.FINISHED_ERROR
    assert "greedy requests only here (temperature 0.7 given)" in (report.results[0].request.error or "")
    assert [report.results[i].token_ids for i in (1, 2)] == [reference[1], reference[2]]


def test_replayed_lengths_are_refused_by_name(tiny_engine: HFEngine) -> None:
    requests = _requests(2)
    requests[0].target_len = 5
    with pytest.raises(ValueError, match="cannot force trace lengths"):
        Pipeline(HFContinuousEngine(tiny_engine), ConstantPredictor(), ScheduleConfig()).run(requests)


def test_bench_runs_it_beside_static_batching(tiny_engine: HFEngine) -> None:
    ctx = StrategyContext(ScheduleConfig(batch_size=4), tiny_engine)
    strategies = [make_strategy(name, ctx) for name in ("vanilla", "continuous", "continuous+sjf+oracle")]
    bench = run_strategies(tiny_engine, _requests(8), strategies)
    assert differing_outputs(bench) == []
    vanilla, continuous, sjf = (r.metrics for r in bench.results)
    assert continuous.effective_token_ratio == 1.0 and vanilla.effective_token_ratio < 1.0
    assert continuous.mean_output_tokens == vanilla.mean_output_tokens == sjf.mean_output_tokens


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("continuous", "needs one \\(not the simulator\\)"),
        ("continuous+fcr", "unknown switch 'fcr'"),
        ("continuous+sjf+ljf", "one of sjf and ljf"),
        ("continuous+oracle", "needs a policy or \\+kv"),
        ("vllm+sjf", "needs the vllm engine"),
    ],
)
def test_bad_continuous_strategies_are_named(name: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_strategy(name, StrategyContext(ScheduleConfig(), predictor_path="p"))


@pytest.mark.parametrize("field", ["max_num_seqs", "max_batch_tokens", "num_blocks"])
def test_bad_sizes_are_named(tiny_engine: HFEngine, field: str) -> None:
    with pytest.raises(ValueError, match=f"{field} \\(0\\) must be >= 1"):
        HFContinuousEngine(tiny_engine, **{field: 0})


def test_a_bench_refuses_replay_before_any_strategy_runs(tiny_engine: HFEngine) -> None:
    requests = _requests(4)
    for r in requests:
        r.target_len = 3
    ctx = StrategyContext(ScheduleConfig(batch_size=4), tiny_engine)
    ran: list[str] = []
    with pytest.raises(ValueError, match="cannot force trace lengths"):
        run_strategies(
            tiny_engine,
            requests,
            [make_strategy(n, ctx) for n in ("vanilla", "continuous")],
            on_run=lambda name, *_: ran.append(name),
        )
    assert ran == []


class _StartingManager:
    """A manager whose background thread builds its batch processor after a few polls,
    or dies first."""

    def __init__(self, polls: int, dies: bool = False) -> None:
        self.polls, self.dies = polls, dies
        self.batch_processor: object | None = None

    def is_running(self) -> bool:
        self.polls -= 1
        if self.polls <= 0 and not self.dies:
            self.batch_processor = object()
        return not (self.dies and self.polls <= 0)


def test_a_run_is_timed_from_when_the_manager_serves(tiny_engine: HFEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    import seqsched.engine.continuous as continuous
    from seqsched.engine.continuous import _wait_until_serving

    manager = _StartingManager(polls=3)
    assert _wait_until_serving(manager) >= 0 and manager.batch_processor is not None
    with pytest.raises(RuntimeError, match="stopped while it was starting"):
        _wait_until_serving(_StartingManager(polls=2, dies=True))

    ready_when_waited: list[bool] = []

    def spy(manager: object) -> float:
        seconds = _wait_until_serving(manager)
        ready_when_waited.append(getattr(manager, "batch_processor", None) is not None)
        return seconds

    monkeypatch.setattr(continuous, "_wait_until_serving", spy)
    engine = HFContinuousEngine(tiny_engine)
    Pipeline(engine, ConstantPredictor(), ScheduleConfig()).run(_requests()[:2])
    assert ready_when_waited == [True]  # the real manager served before the run's clock started
