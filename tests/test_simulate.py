"""The cost model and the simulator: no model, no torch."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest

from seqsched.bench.runner import run_strategies
from seqsched.bench.strategies import StrategyContext, make_strategy
from seqsched.metrics import compute_metrics
from seqsched.pipeline import Pipeline
from seqsched.predict.constant import ConstantPredictor
from seqsched.predict.oracle import OraclePredictor
from seqsched.request import Request, RequestStatus
from seqsched.schedule import ScheduleConfig
from seqsched.simulate.cost_model import BUILTIN, StepCostModel, StepSample, load_cost_model
from seqsched.simulate.static import SimulatedEngine
from tests.helpers import create_requests

TRUE = StepCostModel(a=0.02, b=3e-4, c=2e-7, d=0.05, e=4e-5, f=3e-8)
STEP = StepCostModel(a=1.0, b=0.0, c=0.0)  # one second per decode step, free prefill


def _samples(model: StepCostModel, noise: float = 0.0, seed: int = 0) -> list[StepSample]:
    rng = np.random.default_rng(seed)
    out = []
    for batch_size in (1, 4, 16, 64):
        for ctx in (32, 128, 512, 1024):
            for kind, seconds in (
                ("decode", model.step_seconds(batch_size, ctx)),
                ("prefill", model.prefill_seconds(batch_size, ctx)),
            ):
                out.append(StepSample(kind, batch_size, ctx, seconds * (1 + noise * rng.standard_normal())))
    return out


def test_fit_recovers_known_parameters() -> None:
    fitted = StepCostModel.fit(_samples(TRUE))
    for name in "abcdef":
        assert getattr(fitted, name) == pytest.approx(getattr(TRUE, name), rel=1e-6)
    noisy = StepCostModel.fit(_samples(TRUE, noise=0.02))
    assert max(abs(e) for e in noisy.relative_errors(_samples(TRUE))) < 0.06


def test_fit_keeps_parameters_non_negative() -> None:
    # No fixed cost at all: plain least squares on noisy data would often give a < 0.
    truth = StepCostModel(a=0.0, b=1e-3, c=1e-6, d=0.01, e=1e-5)
    for seed in range(5):
        fitted = StepCostModel.fit(_samples(truth, noise=0.05, seed=seed))
        assert min(fitted.a, fitted.b, fitted.c, fitted.d, fitted.e, fitted.f) >= 0


def test_fit_needs_decode_samples() -> None:
    with pytest.raises(ValueError, match="decode samples"):
        StepCostModel.fit([StepSample("prefill", 1, 8, 0.1)])


@pytest.mark.parametrize(("batch_size", "prompt_len", "num_steps"), [(1, 1, 1), (16, 80, 2), (7, 33, 365)])
def test_closed_form_equals_the_per_step_sum(batch_size: int, prompt_len: int, num_steps: int) -> None:
    per_step = TRUE.prefill_seconds(batch_size, prompt_len) + sum(
        TRUE.step_seconds(batch_size, prompt_len + k) for k in range(1, num_steps)
    )
    assert TRUE.batch_seconds(batch_size, prompt_len, num_steps) == pytest.approx(per_step, rel=1e-12)
    assert TRUE.batch_seconds(batch_size, prompt_len, 0) == 0


def test_save_load_round_trip_and_validation(tmp_path) -> None:
    path = tmp_path / "cost.json"
    dataclasses.replace(TRUE, provenance={"device": "cpu", "model": "tiny"}).save(path)
    loaded = StepCostModel.load(path)
    assert loaded == TRUE and loaded.provenance["device"] == "cpu" and "date" in loaded.provenance
    assert load_cost_model(path) == TRUE and load_cost_model(None) == BUILTIN["a100-vicuna-7b"]
    with pytest.raises(ValueError, match=r"parameter c \(-1"):
        StepCostModel(a=1, b=0, c=-1)
    path.write_text(json.dumps({"a": 1}))
    with pytest.raises(ValueError, match="missing b, c"):
        StepCostModel.load(path)
    with pytest.raises(FileNotFoundError, match="not one of"):
        load_cost_model(tmp_path / "nope.json")


# 144 requests: every 9th needs 300 steps, the rest 20. Vanilla (16 rows, input order)
# puts a long one in each of its 9 batches. The oracle with the paper's VBS runs the 128
# short ones as one batch (bin 50 -> 256 rows) capped at 50, and the 16 long ones together.
ACTUAL = [300 if i % 9 == 0 else 20 for i in range(144)]
TOKENS = 16 * 300 + 128 * 20


def _run(predictor, cfg: ScheduleConfig):  # type: ignore[no-untyped-def]
    return Pipeline(SimulatedEngine(STEP), predictor, cfg).run(create_requests(ACTUAL, ACTUAL))


def test_vanilla_by_hand() -> None:
    report = _run(ConstantPredictor(), ScheduleConfig(batch_size=16))
    m = compute_metrics(report)
    assert [b.num_steps for b in report.batches] == [300] * 9
    assert m.average_length == 300 and m.effective_token_ratio == pytest.approx(TOKENS / (144 * 300))
    assert m.failure_ratio == 0 and m.wall_seconds == pytest.approx(9 * 299)


def test_oracle_with_vbs_and_fcr_by_hand() -> None:
    cfg = ScheduleConfig(batch_size=16, vbs="paper", fcr=True)
    report = _run(OraclePredictor({f"r{i}": n for i, n in enumerate(ACTUAL)}), cfg)
    m = compute_metrics(report)
    assert [(b.batch_size, b.max_new_tokens, b.num_steps) for b in report.batches] == [
        (128, 50, 20),
        (16, 300, 300),
    ]
    assert m.average_length == pytest.approx(TOKENS / 144) and m.effective_token_ratio == 1.0
    assert m.wall_seconds == pytest.approx(19 + 299)


def test_oracle_under_prediction_fails_and_reruns_by_hand() -> None:
    # Request 0 (300 steps) is predicted 20: it joins the short batch, which now runs to
    # its cap of 50, fails there, and is re-run alone at the full limit.
    lengths = {f"r{i}": n for i, n in enumerate(ACTUAL)} | {"r0": 20}
    report = _run(OraclePredictor(lengths), ScheduleConfig(batch_size=16, vbs="paper", fcr=True))
    m = compute_metrics(report)
    assert [(b.batch_size, b.num_steps, b.is_retry) for b in report.batches] == [
        (129, 50, False),
        (15, 300, False),
        (1, 300, True),
    ]
    total = 129 * 50 + 15 * 300 + 300
    assert m.failure_ratio == pytest.approx(1 / 144) and m.average_length == pytest.approx(total / 144)
    assert m.effective_token_ratio == pytest.approx(TOKENS / total) and m.wall_seconds == pytest.approx(647)


def test_requests_without_a_target_length_fail_alone() -> None:
    requests = [*create_requests([5, 7]), Request(index=2, request_id="x", prompt="no trace")]
    report = Pipeline(SimulatedEngine(STEP), ConstantPredictor(), ScheduleConfig(batch_size=2)).run(requests)
    assert [r.status for r in report.results] == [RequestStatus.FINISHED_STOPPED] * 2 + [RequestStatus.FINISHED_ERROR]
    assert compute_metrics(report).num_errors == 1


def test_prompt_length_is_the_longest_row() -> None:
    engine = SimulatedEngine(StepCostModel(a=0, b=0, c=1.0))
    short, long = (Request(index=i, request_id=f"r{i}", prompt="x" * n, target_len=3) for i, n in enumerate((4, 40)))
    from seqsched.schedule import MicroBatch

    run = engine.run(MicroBatch((0, 1), 8), [short, long])
    assert run.seconds == pytest.approx(2 * ((10 + 1) + (10 + 2)))  # 2 rows, padded to 10 prompt tokens


def test_100k_requests_through_the_pipeline() -> None:
    rng = np.random.default_rng(0)
    actual = rng.integers(1, 513, 100_000)
    requests = create_requests(actual.tolist(), actual.tolist())
    oracle = make_strategy(
        "oracle", StrategyContext(ScheduleConfig(), oracle_lengths={f"r{i}": int(n) for i, n in enumerate(actual)})
    )
    (result,) = run_strategies(SimulatedEngine(), requests, [oracle]).results
    m = result.metrics
    assert m.num_requests == 100_000 and m.failure_ratio == 0
    assert m.mean_output_tokens == pytest.approx(actual.mean())
    # Vanilla pads each run of 16 requests to its longest one.
    vanilla_ratio = actual.sum() / (16 * actual.reshape(-1, 16).max(axis=1).sum())
    assert m.effective_token_ratio > vanilla_ratio + 0.3
    assert all(r.status == RequestStatus.WAITING for r in requests), "the inputs must stay untouched"


def test_simulate_cli_on_a_made_up_trace(tmp_path) -> None:
    trace = tmp_path / "trace.json"
    trace.write_text(json.dumps([{"id": str(i), "L_t0.0": n, "L_t0.3": n + 5} for i, n in enumerate(ACTUAL)]))
    out = tmp_path / "sim.json"
    cmd = [
        sys.executable,
        "-m",
        "seqsched",
        "simulate",
        "--trace",
        str(trace),
        "--sample",
        "100",
        "--cost-model",
        "cpu-default-model",
        "--json",
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert "vanilla" in proc.stdout and "oracle" in proc.stdout
    data = json.loads(out.read_text())
    assert data["config"]["sample"] == 100 and data["config"]["schedule"]["batch_size"] == 16
    assert [s["name"] for s in data["strategies"]] == ["vanilla", "oracle"]
    assert data["strategies"][0]["throughput_ratio"] == 1.0


def test_a_strategy_that_cannot_run_is_refused_before_any_runs(tmp_path, capsys) -> None:
    from seqsched.cli import main

    trace = tmp_path / "trace.json"
    trace.write_text(json.dumps([{"id": str(i), "L_t0.0": n} for i, n in enumerate(ACTUAL)]))
    argv = ["simulate", "--trace", str(trace), "--cost-model", "cpu-default-model", "--oracle", "L_t0.0"]
    assert main([*argv, "--strategies", "vanilla,continuous,continuous+sjf+kv+oracle"]) == 2
    captured = capsys.readouterr()
    assert "admits by KV cache, and the continuous engine's capacity is unknown" in captured.err
    assert "vanilla" not in captured.out, "nothing ran before the refusal"
