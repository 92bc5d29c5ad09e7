"""Everyday use: the thread default, an honest bench table (ranges, noise, identical plans,
simulated seconds), results saved as they come, predictor fit reports, and calibrate's
refusal of a bad fit."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from seqsched.bench.report import format_table
from seqsched.bench.runner import BenchResult, run_strategies
from seqsched.bench.strategies import StrategyContext, make_strategy
from seqsched.cli import main
from seqsched.data.traces import Trace, TraceRecord, trace_requests
from seqsched.predict.constant import ConstantPredictor
from seqsched.schedule import ScheduleConfig
from seqsched.simulate.cost_model import StepCostModel
from seqsched.simulate.static import SimulatedEngine
from seqsched.threads import auto_threads, choose_threads
from tests.tiny_model import corpus

LENGTHS = [5, 110, 12, 64, 150, 30, 7, 95, 48, 3, 71, 130, 20, 55, 9, 102, 40, 66, 14, 88, 33, 52, 120, 6]


def test_auto_threads_leave_the_cores_other_work_uses() -> None:
    assert auto_threads(2, 0.4) == 2  # quiet
    assert auto_threads(2, 0.9) == 2  # the install that just ran
    assert auto_threads(2, 2.03) == 1  # two busy loops
    assert auto_threads(2, 8.0) == 1  # never fewer than one
    assert auto_threads(16, 3.2) == 13
    assert auto_threads(4, None) == 3
    chosen = choose_threads(3)
    assert (chosen.threads, chosen.chosen_by) == (3, "--threads")
    assert choose_threads(None).chosen_by == "auto" and choose_threads(None).threads >= 1
    with pytest.raises(ValueError, match="--threads"):
        choose_threads(0)


def _trace() -> Trace:
    return Trace([TraceRecord(f"t{i}", {"L_t0.0": n}) for i, n in enumerate(LENGTHS)])


def _simulated(names: list[str], repeat: int, **kwargs: Any) -> BenchResult:
    ctx = StrategyContext(ScheduleConfig(batch_size=4, group_size=12), oracle_lengths=_trace().oracle("L_t0.0"))
    engine = SimulatedEngine(StepCostModel(a=1e-3, b=1e-5, c=0))
    requests = trace_requests(_trace(), 120)
    return run_strategies(engine, requests, [make_strategy(n, ctx) for n in names], repeat=repeat, **kwargs)


def test_table_shows_ranges_marks_noise_and_names_identical_plans() -> None:
    bench = _simulated(["vanilla", "oracle", "oracle+vbs+fcr"], repeat=2)
    assert bench.identical_plans() == [["oracle", "oracle+vbs+fcr"]]
    assert bench.significant("oracle") is True  # modelled seconds: no noise, and the plans differ
    table = format_table(bench, simulated="unit-test-model")
    assert "oracle, oracle+vbs+fcr: the same plan" in table
    assert "sim s" in table and "wall s" not in table and "SIMULATED" in table
    assert "min-max" in table and "median of 2 interleaved repeats" in table
    # overlapping repeats: the ratio is marked as noise
    vanilla = bench.results[0]
    vanilla.runs = [vanilla.metrics, *(r.metrics for r in bench.results[1:])]
    assert bench.significant("oracle") is False
    oracle_row = next(line for line in format_table(bench).splitlines() if line.startswith("oracle "))
    assert "~" in oracle_row


def test_simulated_seconds_leave_the_predictors_real_time_out() -> None:
    import time

    from seqsched.bench.runner import Strategy

    class Slow(ConstantPredictor):
        def predict_requests(self, requests: Any) -> list[int]:
            time.sleep(0.05)
            return super().predict_requests(requests)

    engine = SimulatedEngine(StepCostModel(a=1e-3, b=1e-5, c=0))
    strategy = Strategy("slow", Slow(), ScheduleConfig(batch_size=4, group_size=12))
    bench = run_strategies(engine, trace_requests(_trace(), 120), [strategy], warmup=False)
    report = bench.results[0].report
    assert report.predictor_seconds >= 0.1  # two groups, real time
    assert report.wall_seconds == pytest.approx(sum(b.seconds for b in report.batches))  # modelled time only


def test_partial_figures_are_handed_out_after_every_run() -> None:
    seen: list[list[str]] = []
    _simulated(["vanilla", "oracle"], repeat=2, on_partial=lambda b: seen.append([r.strategy.name for r in b.results]))
    assert seen == [["vanilla"], ["vanilla", "oracle"], ["vanilla", "oracle"], ["vanilla", "oracle"]]


def test_bench_json_records_threads_and_load_and_is_written_as_it_goes(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts = tmp_path / "p.txt"
    prompts.write_text("\n".join(corpus(6, seed=1)) + "\n")
    out = tmp_path / "bench.json"
    argv = ["bench", "--model", str(tiny_model_dir), "--prompts", str(prompts), "--device", "cpu"]
    assert main([*argv, "--strategies", "vanilla,oracle,oracle+vbs+fcr", "--max-new-tokens", "8", "-o", str(out)]) == 0
    captured = capsys.readouterr()
    assert "CPU thread" in captured.err and "6 requests, fewer than one scheduling group" in captured.err
    data = json.loads(out.read_text())
    assert data["config"]["complete"] is True and data["repeat"] == 3
    assert data["config"]["threads"]["chosen_by"] == "auto" and data["config"]["threads"]["threads"] >= 1
    assert "load_average" in data["config"]["threads"] and "load_average_at_end" in data["environment"]
    assert "oracle, oracle+vbs+fcr: the same plan" in captured.out
    # - writes the JSON alone on stdout
    assert main([*argv, "--strategies", "vanilla", "--max-new-tokens", "8", "--repeat", "1", "-o", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["strategies"][0]["name"] == "vanilla"


def _length_trace(path: Path, n: int, informative: bool) -> Path:
    texts = corpus(n, seed=5)
    lines = []
    for i, text in enumerate(texts):
        length = 10 + 20 * len(text.split()) if informative else 10 + (i * 37) % 200
        lines.append(json.dumps({"id": f"r{i}", "instruction": text, "L_t0.0": length}))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_predictor_train_reports_against_the_best_constant(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = _length_trace(tmp_path / "good.jsonl", 120, informative=True)
    assert main(["predictor", "train", "--kind", "proxy", "--trace", str(good), "-o", str(tmp_path / "g")]) == 0
    captured = capsys.readouterr()
    assert "best constant" in captured.out and "held out:" in captured.out
    assert "WARNING" not in captured.err
    noise = _length_trace(tmp_path / "noise.jsonl", 120, informative=False)
    assert main(["predictor", "train", "--kind", "proxy", "--trace", str(noise), "-o", str(tmp_path / "n")]) == 0
    assert "is not below the best constant's" in capsys.readouterr().err
    # scoring a predictor on prompts it was trained on is flagged
    assert main(["predictor", "eval", str(tmp_path / "g"), "--trace", str(good)]) == 0
    assert "were in this predictor's training data" in capsys.readouterr().err


def test_calibrate_refuses_a_fit_above_the_error_bound(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "cost.json"
    argv = ["calibrate", "--model", str(tiny_model_dir), "--device", "cpu", "-o", str(out)]
    grid = ["--batch-sizes", "1,2", "--context-lens", "8,16", "--num-steps", "2", "--repeats", "1"]
    assert main([*argv, *grid, "--max-error", "0"]) == 4
    assert not out.exists()
    assert main([*argv, *grid, "--max-error", "0", "--force"]) == 0
    assert json.loads(out.read_text())["a"] > 0


def test_dry_run_prints_the_plan_and_writes_nothing(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    requests = tmp_path / "r.jsonl"
    requests.write_text(
        "".join(json.dumps({"custom_id": f"c{i}", "prompt": t}) + "\n" for i, t in enumerate(corpus(40)))
    )
    lengths = tmp_path / "lengths.jsonl"
    lengths.write_text("".join(json.dumps({"id": f"c{i}", "length": 5 + 7 * i}) + "\n" for i in range(40)))
    run = ["run", str(requests), "--model", str(tiny_model_dir), "--max-new-tokens", "300", "--dry-run"]
    assert main([*run, "--oracle-lengths", str(lengths)]) == 0
    out = capsys.readouterr().out
    # run with known lengths does what bench recommends: VBS (paper) and resuming FCR
    assert "vbs paper, fcr resume" in out and "predicted lengths of 40 requests" in out
    assert "plan: " in out and "predicted time:" in out
    assert main([*run, "--oracle-lengths", str(lengths), "--engine", "vllm"]) == 0
    assert "admission order (predicted length): c0 (5), c1 (12)" in capsys.readouterr().out
    assert sorted(tmp_path.iterdir()) == sorted([requests, lengths])  # nothing written
    bench = ["bench", "--model", str(tiny_model_dir), "--prompts", str(requests), "--dry-run"]
    assert main([*bench, "--oracle-lengths", str(lengths), "--strategies", "vanilla,oracle,oracle+sort"]) == 0
    table = capsys.readouterr().out
    assert "dry run: 40 requests" in table and "oracle+sort" in table


def test_the_fit_report_holds_out_part_of_a_split_made_by_collect(tmp_path: Path) -> None:
    from seqsched.data.trace_writer import holdout_split
    from seqsched.predict.fit_report import split_off

    ids = [f"r{i}" for i in range(400)]
    train = Trace([TraceRecord(i, {"L_t0.0": 10}) for i in ids if holdout_split(i, 0.2) == "train"])
    assert len(split_off(train, 0.1)[1]) == 0  # the same hash: nothing left to hold out
    fit, held = split_off(train, 0.1, within="train")
    assert 0.05 * len(train) < len(held) < 0.15 * len(train) and len(fit) + len(held) == len(train)


def test_kv_plans_with_other_reservations_are_not_the_same_plan() -> None:
    from seqsched.simulate.stream import SimulatedContinuousEngine

    ctx = StrategyContext(
        ScheduleConfig(batch_size=4, group_size=12),
        oracle_lengths=_trace().oracle("L_t0.0"),
        predictor_path=None,
        stream_engines={"continuous": SimulatedContinuousEngine(StepCostModel(a=1e-3, b=0, c=0), 8, 64, 16)},
    )
    strategies = [make_strategy(n, ctx) for n in ("continuous+kv+oracle", "continuous+sjf+kv+oracle")]
    strategies.append(dataclasses.replace(strategies[0], name="same", predictor=ConstantPredictor(7)))
    bench = run_strategies(SimulatedEngine(), trace_requests(_trace(), 120), strategies, warmup=False)
    assert bench.identical_plans() == []  # same fcfs order as "same", other reservations
