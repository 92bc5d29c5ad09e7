"""Side-by-side benches: live on the tiny model through the CLI, and replay == simulate."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from seqsched.bench.compare import compare_with_simulation, format_comparison
from seqsched.bench.plots import batch_token_steps
from seqsched.bench.report import format_table
from seqsched.bench.runner import BenchResult, Strategy, differing_outputs, run_strategies
from seqsched.bench.strategies import StrategyContext, make_strategy
from seqsched.cli import main
from seqsched.data.traces import Trace, TraceRecord, trace_requests
from seqsched.predict.constant import ConstantPredictor
from seqsched.predict.oracle import OraclePredictor
from seqsched.schedule import ScheduleConfig
from seqsched.simulate.cost_model import StepCostModel
from seqsched.simulate.static import SimulatedEngine
from tests.tiny_model import corpus

# Actual lengths (L_t0.0) span several VBS bins, and two pass the limit of 120. The
# oracle knows L_t0.3, which under-predicts a few of them: those become FCR failures.
ACTUAL = [5, 110, 12, 64, 150, 30, 7, 95, 48, 3, 71, 130, 20, 55, 9, 102, 40, 66, 14, 88, 33, 52, 120, 6]
KNOWN = [n if i % 5 else max(1, n // 3) for i, n in enumerate(ACTUAL)]
LIMIT = 120


def _trace() -> Trace:
    return Trace(
        [TraceRecord(f"t{i}", {"L_t0.0": a, "L_t0.3": k}) for i, (a, k) in enumerate(zip(ACTUAL, KNOWN, strict=True))]
    )


def _strategies() -> list[Strategy]:
    base = ScheduleConfig(batch_size=4, group_size=12)
    known = _trace().oracle("L_t0.3")
    return [
        make_strategy("vanilla", StrategyContext(base)),
        # VBS (paper): these small groups make one batch each
        make_strategy("oracle", StrategyContext(base, oracle_lengths=known)),
        Strategy("oracle-fcr", OraclePredictor(known), dataclasses.replace(base, fcr=True)),
        Strategy("oracle-resume", OraclePredictor(known), dataclasses.replace(base, fcr=True, fcr_mode="resume")),
    ]


def _bench(engine: Any) -> BenchResult:
    return run_strategies(engine, trace_requests(_trace(), LIMIT), _strategies(), warmup=False)


def test_replay_matches_simulate_exactly(tiny_engine: Any) -> None:
    replayed, simulated = _bench(tiny_engine), _bench(SimulatedEngine(StepCostModel(a=1e-3, b=0, c=0)))
    for real, sim in zip(replayed.results, simulated.results, strict=True):
        r, s = real.metrics, sim.metrics
        assert (r.average_length, r.effective_token_ratio, r.failure_ratio, r.mean_output_tokens) == (
            s.average_length,
            s.effective_token_ratio,
            s.failure_ratio,
            s.mean_output_tokens,
        ), real.strategy.name
        shape = [
            [(b.batch_size, b.num_steps, b.num_output_tokens, b.is_retry) for b in x.report.batches]
            for x in (real, sim)
        ]
        assert shape[0] == shape[1]
    vanilla, _, fcr, resume = simulated.results
    assert fcr.metrics.failure_ratio > 0 and any(b.is_retry for b in fcr.report.batches)
    assert fcr.metrics.effective_token_ratio > vanilla.metrics.effective_token_ratio
    assert resume.metrics.failure_ratio == fcr.metrics.failure_ratio
    assert resume.metrics.effective_token_ratio > fcr.metrics.effective_token_ratio, "resume loses no decode step"


def test_compare_with_simulation_reports_the_same_schedule(tiny_engine: Any) -> None:
    measured = _bench(tiny_engine)
    cost = StepCostModel(a=1e-3, b=0, c=0)
    rows = compare_with_simulation(measured, tiny_engine, trace_requests(_trace(), LIMIT), _strategies(), cost)
    assert [r.name for r in rows] == ["vanilla", "oracle", "oracle-fcr", "oracle-resume"]
    assert all(r.same_schedule for r in rows)
    # One millisecond per decode step (the prefill yields each batch's first token, at no cost here).
    vanilla = measured.results[0].report
    assert rows[0].simulated_seconds == pytest.approx(sum(b.num_steps - 1 for b in vanilla.batches) * 1e-3, rel=1e-3)
    assert "same schedule" in format_comparison(rows)


def test_differing_outputs_names_the_requests_that_changed(tiny_engine: Any) -> None:
    bench = _bench(tiny_engine)
    assert differing_outputs(bench) == []
    bench.results[1].report.results[3].token_ids = [1, 2, 3]
    assert differing_outputs(bench) == ["t3"]


def test_token_steps_split_into_useful_padded_discarded() -> None:
    bench = _bench(SimulatedEngine())
    for res in bench.results:
        parts = [batch_token_steps(b) for b in res.report.batches]
        total = sum(b.batch_size * b.num_steps for b in res.report.batches)
        assert sum(map(sum, parts)) == total
        kept = sum(r.num_output_tokens for r in res.report.results)
        assert sum(p[0] for p in parts) == kept
        assert sum(p[0] for p in parts) / total == pytest.approx(res.metrics.effective_token_ratio)
    restart, resume = (sum(p[2] for p in _token_steps_of(bench, n)) for n in ("oracle-fcr", "oracle-resume"))
    assert restart > 0 and resume == 0, "a restart discards its failures' tokens, a resume keeps them"
    assert "x base" in format_table(bench)


def _token_steps_of(bench: BenchResult, name: str) -> list[tuple[int, int, int]]:
    (res,) = [r for r in bench.results if r.strategy.name == name]
    assert res.report.num_failures > 0, f"{name} should have FCR failures"
    return [batch_token_steps(b) for b in res.report.batches]


def _bench_argv(model: Path, prompts: Path, *extra: str) -> list[str]:
    return ["bench", "--model", str(model), "--prompts", str(prompts), "--device", "cpu", *extra]


def test_live_bench_cli_prints_table_and_writes_json_and_png(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"custom_id": f"p{i}", "prompt": p}) + "\n" for i, p in enumerate(corpus(12, seed=3)))
    )
    out, png = tmp_path / "bench.json", tmp_path / "bench.png"
    argv = _bench_argv(
        tiny_model_dir,
        prompts,
        "--batch-size",
        "4",
        "--max-new-tokens",
        "48",
        "--strategies",
        "vanilla,oracle",
        "--json",
        str(out),
        "--plot",
        str(png),
    )
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert all(word in table for word in ("strategy", "req/s", "eff %", "vanilla", "oracle"))
    assert "greedy outputs identical across strategies: yes" in table
    data = json.loads(out.read_text())
    assert data["config"]["greedy_outputs_differing"] == []
    assert data["config"]["mode"] == "live" and data["config"]["engine"]["model"] == str(tiny_model_dir)
    assert data["environment"]["torch"] and data["environment"]["cpu_count"]
    names = [s["name"] for s in data["strategies"]]
    assert names == ["vanilla", "oracle"]
    vanilla, oracle = data["strategies"]
    assert vanilla["schedule"]["vbs"] == "off" and oracle["schedule"] == {
        **vanilla["schedule"],
        "vbs": "paper",
        "fcr": True,
    }
    assert vanilla["metrics"]["num_requests"] == oracle["metrics"]["num_requests"] == 12
    assert vanilla["throughput_ratio"] == 1.0 and oracle["throughput_ratio"] > 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_live_oracle_needs_vanilla_first(tiny_model_dir: Path, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "the model predicts"}) + "\n")
    argv = _bench_argv(tiny_model_dir, prompts, "--max-new-tokens", "8", "--strategies", "oracle,vanilla")
    assert main(argv) == 2


def test_progress_bars_count_every_request_of_every_run() -> None:
    class Bar:
        def __init__(self, label: str) -> None:
            self.label, self.done, self.closed = label, 0, False
            bars.append(self)

        def update(self, n: int = 1) -> None:
            self.done += n

        def close(self) -> None:
            self.closed = True

    bars: list[Bar] = []
    run_strategies(SimulatedEngine(), trace_requests(_trace(), LIMIT), _strategies(), repeat=2, progress=Bar)
    assert [b.label for b in bars[:4]] == ["vanilla (1/2)", "oracle (1/2)", "oracle-fcr (1/2)", "oracle-resume (1/2)"]
    assert len(bars) == 8 and all(b.done == len(ACTUAL) and b.closed for b in bars)


def test_each_strategy_is_compared_with_the_right_baseline() -> None:
    from seqsched.bench.runner import StrategyResult

    def result(name: str) -> StrategyResult:
        return StrategyResult(Strategy(name, ConstantPredictor(), ScheduleConfig()), None, None, [], None)  # type: ignore[arg-type]

    bench = BenchResult([result(n) for n in ("vanilla", "seqsch", "vllm", "vllm+sjf", "continuous+kv")])
    assert [bench.baseline_of(r.strategy.name) for r in bench.results] == [
        "vanilla",
        "vanilla",
        "vanilla",
        "vllm",
        "continuous",
    ]
    alone = BenchResult([result(n) for n in ("vllm", "vllm+sjf")])
    assert [alone.baseline_of(r.strategy.name) for r in alone.results] == ["vllm", "vllm"]
