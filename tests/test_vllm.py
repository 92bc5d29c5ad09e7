"""vLLM as a continuous-batching engine for seqsched's plans, on a tiny model.

Greedy float32: every policy returns exactly the tokens plain vLLM returns, and those
of plain ``generate``, in input order; a KV-bound engine preempts and ``kv`` admission
preempts less; ``seqsched run --engine vllm`` answers, errs and resumes as with the HF
engine. CI sets SEQSCHED_REQUIRE_VLLM=1, so a missing vLLM fails these tests there
instead of skipping them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

if os.environ.get("SEQSCHED_REQUIRE_VLLM"):
    import vllm  # noqa: F401 - CI: vLLM must be there
else:
    pytest.importorskip("vllm", reason="vLLM is optional: bash scripts/install.sh vllm")

from seqsched.engine.config import EngineConfig, VLLMConfig
from seqsched.engine.hf import HFEngine
from seqsched.engine.vllm_engine import VLLMEngine
from seqsched.pipeline import Pipeline, RunReport
from seqsched.predict.constant import ConstantPredictor
from seqsched.predict.oracle import OraclePredictor
from seqsched.request import RequestStatus, SamplingParams
from seqsched.schedule import ScheduleConfig
from tests.tiny_model import generate_alone, save_tiny_model, tiny_requests

SMALL_KV = "0.02"  # GiB: each engine in this process allocates its own cache


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Head size 32: vLLM's CPU attention has no kernel for the other tests' 16.
    return save_tiny_model(tmp_path_factory.mktemp("tiny-vllm"), seed=0, eos_scale=2.5, num_heads=2)


@pytest.fixture(scope="module")
def config(model_dir: Path) -> EngineConfig:
    return EngineConfig(str(model_dir), device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def reference(config: EngineConfig) -> list[list[int]]:
    hf = HFEngine(config)
    requests = tiny_requests()
    hf.prepare(requests)
    return [generate_alone(hf.model, r) for r in requests]


@pytest.fixture(scope="module")
def engine(config: EngineConfig) -> VLLMEngine:
    return VLLMEngine(config, VLLMConfig(max_num_seqs=4, kv_cache_gib=float(SMALL_KV)))


@pytest.fixture(scope="module")
def kv_bound(config: EngineConfig) -> VLLMEngine:
    """9 blocks of 32 tokens: a few running requests outgrow it."""
    return VLLMEngine(config, VLLMConfig(max_num_seqs=16, num_gpu_blocks=9, block_size=32, kv_cache_gib=0.02))


def _oracle(reference: list[list[int]]) -> OraclePredictor:
    return OraclePredictor({f"r{i}": max(1, len(tokens)) for i, tokens in enumerate(reference)})


def _run(engine: VLLMEngine, reference: list[list[int]], **schedule: Any) -> RunReport:
    return Pipeline(engine, _oracle(reference), ScheduleConfig(**schedule)).run(tiny_requests())


@pytest.mark.parametrize(
    "schedule",
    [{}, {"policy": "sjf"}, {"policy": "ljf"}, {"policy": "sjf", "max_bypass": 2}],
    ids=["fcfs", "sjf", "ljf", "sjf-aged"],
)
def test_every_policy_returns_the_tokens_of_plain_generate_in_input_order(
    engine: VLLMEngine, reference: list[list[int]], schedule: dict[str, Any]
) -> None:
    report = _run(engine, reference, **schedule)
    assert [res.request.index for res in report.results] == list(range(len(reference)))
    for i, res in enumerate(report.results):
        assert res.token_ids == reference[i], f"request {i} differs from plain generate"
        ended = res.token_ids[-1] == engine.eos_token_ids[0]
        assert res.status == (RequestStatus.FINISHED_STOPPED if ended else RequestStatus.FINISHED_LENGTH)
    assert report.num_preemptions == 0


def test_sjf_finishes_short_requests_first(engine: VLLMEngine, reference: list[list[int]]) -> None:
    """Completion order, not time (the order is the scheduler's, whatever the machine's load)."""
    from scipy.stats import kendalltau

    lengths = [len(tokens) for tokens in reference]

    def order_follows_length(report: RunReport) -> float:
        ranks = sorted(range(len(lengths)), key=lambda i: report.results[i].completed_at)
        position = {index: rank for rank, index in enumerate(ranks)}
        return float(kendalltau([position[i] for i in range(len(lengths))], lengths).statistic)

    fcfs, sjf = _run(engine, reference), _run(engine, reference, policy="sjf")
    assert order_follows_length(sjf) > order_follows_length(fcfs) + 0.2


def test_a_kv_bound_engine_preempts_and_kv_admission_preempts_less(
    kv_bound: VLLMEngine, reference: list[list[int]]
) -> None:
    plain = _run(kv_bound, reference)
    admitted = _run(kv_bound, reference, admission="kv")
    for report in (plain, admitted):
        assert [r.token_ids for r in report.results] == reference, "preemption must not change tokens"
    assert plain.num_preemptions is not None and admitted.num_preemptions is not None
    assert plain.num_preemptions > 0
    assert admitted.num_preemptions < plain.num_preemptions


def test_replay_forces_trace_lengths(engine: VLLMEngine) -> None:
    requests = tiny_requests(6)
    for i, r in enumerate(requests):
        r.target_len = 5 + 3 * i
        r.max_new_tokens = 64
    report = Pipeline(engine, ConstantPredictor(), ScheduleConfig(policy="ljf")).run(requests)
    assert [r.num_output_tokens for r in report.results] == [5 + 3 * i for i in range(6)]


def test_sampled_requests_repeat_with_their_seed(engine: VLLMEngine) -> None:
    def sampled() -> list[list[int]]:
        requests = tiny_requests(4)
        for r in requests:
            r.sampling = SamplingParams(temperature=0.9, top_p=0.95, seed=7)
        return [r.token_ids for r in Pipeline(engine, ConstantPredictor(), ScheduleConfig()).run(requests).results]

    assert sampled() == sampled()


def test_stop_strings_end_a_request_and_are_left_out_of_its_text(
    engine: VLLMEngine, reference: list[list[int]]
) -> None:
    from seqsched.engine.prompts import stop_at, text_before_stop

    requests = tiny_requests(6)
    stops = {i: engine.decode(reference[i][4:7]) for i in range(6) if len(reference[i]) >= 8}
    for i, stop in stops.items():
        requests[i].stop = (stop,)
    report = Pipeline(engine, ConstantPredictor(), ScheduleConfig()).run(requests)
    for i, result in enumerate(report.results):
        end = stop_at(reference[i], [stops[i]], engine.decode) if i in stops else None
        assert result.token_ids == reference[i][:end]
        if i in stops:
            assert result.text == text_before_stop(engine.decode(reference[i][:end]), [stops[i]])
