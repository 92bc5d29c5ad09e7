"""A server under load, simulated: arrivals, the front queue, the latency figures, and
`seqsched simulate --rates` end to end."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from seqsched.cli import main
from seqsched.simulate.server import LatencySummary, OnlineRequest, Served, front_queue, simulate_server
from seqsched.simulate.step_cost import ContinuousCost
from seqsched.simulate.vllm_model import SchedulerLimits

UNIT = ContinuousCost(a=1.0, t=0.0)  # one second a step
LIMITS = SchedulerLimits(max_num_seqs=2, max_num_batched_tokens=64, policy="fcfs")


def test_an_idle_server_serves_each_request_in_its_own_time() -> None:
    # 3 output tokens take 3 steps (the prefill makes the first); arrivals 10 s apart never queue.
    load = [OnlineRequest(4, 3, arrival=10.0 * i) for i in range(3)]
    served = simulate_server(load, LIMITS, UNIT)
    assert [(s.ttft, s.e2e) for s in served] == [(1.0, 3.0)] * 3
    assert served[2].finished == 23.0


def test_requests_queue_when_slots_are_full() -> None:
    load = [OnlineRequest(4, 5, arrival=0.0) for _ in range(3)]
    served = simulate_server(load, LIMITS, UNIT)
    assert [s.finished for s in served] == [5.0, 5.0, 10.0]  # the third waits for a slot
    summary = LatencySummary.of(served)
    assert summary.throughput == pytest.approx(3 / 10) and summary.e2e_mean == pytest.approx(20 / 3)
    assert summary.tpot_mean == pytest.approx(1.0) and summary.ttft_mean == pytest.approx((1 + 1 + 6) / 3)


def test_seqsched_in_front_runs_short_predictions_first_within_max_inflight() -> None:
    lengths = [40, 2, 30, 3, 1]
    load = [OnlineRequest(4, n, arrival=0.0, predicted_len=n) for n in lengths]
    fcfs = simulate_server(load, LIMITS, UNIT, front_queue("fcfs", max_inflight=1))
    sjf = simulate_server(load, LIMITS, UNIT, front_queue("sjf", max_inflight=1))
    # one at a time: the first takes the free slot as it arrives (the door decides at each
    # arrival, as the server does); the rest wait and go shortest first: 1, 2, 3, 30 tokens
    assert [sjf[i].finished for i in (0, 4, 1, 3, 2)] == [40.0, 41.0, 43.0, 46.0, 76.0]
    assert LatencySummary.of(sjf).e2e_mean < LatencySummary.of(fcfs).e2e_mean
    assert sum(s.output_tokens for s in sjf) == sum(lengths)


def test_the_aging_bound_lets_an_old_long_request_through() -> None:
    # a long request waits while short ones keep arriving; max_bypass 2 lets it in after two.
    load = [OnlineRequest(4, 50, arrival=0.5, predicted_len=50)]
    load += [OnlineRequest(4, 2, arrival=float(i), predicted_len=2) for i in range(7)]
    unbounded = simulate_server(load, LIMITS, UNIT, front_queue("sjf", max_bypass=None, max_inflight=1))
    bounded = simulate_server(load, LIMITS, UNIT, front_queue("sjf", max_bypass=2, max_inflight=1))
    assert bounded[0].first_token < unbounded[0].first_token


def test_the_summary_quantile_is_the_benchmarks() -> None:
    served = [Served(0.0, 0.1, float(i + 1), 2, 0) for i in range(100)]
    assert LatencySummary.of(served).e2e_p99 == 100.0 and LatencySummary.of(served).e2e_median == 50.5


def _trace(tmp_path: Path) -> Path:
    path = tmp_path / "trace.jsonl"
    rows = [{"id": f"r{i}", "instruction": f"question {i}", "L_t0.0": n, "prompt_tokens": 20}
            for i, n in enumerate([5, 80, 7, 60, 3, 90, 4, 40] * 4)]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_simulate_rates_compares_policies_as_servers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, plot = tmp_path / "online.json", tmp_path / "online.png"
    argv = ["simulate", "--trace", str(_trace(tmp_path)), "--rates", "0.5x,1.5x,burst", "--policies", "fcfs,sjf+oracle",
            "--oracle", "L_t0.0", "--cost-model", "cpu-default-model", "--max-num-seqs", "4", "--json", str(out),
            "--plot", str(plot)]  # fmt: skip
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "SIMULATED server" in text and "cpu-default-model" in text
    report = json.loads(out.read_text())
    assert [r["policy"] for r in report["rows"]] == ["fcfs", "sjf+oracle"] * 3
    burst = {r["policy"]: r for r in report["rows"] if r["rate_spec"] == "burst"}
    assert burst["sjf+oracle"]["e2e_mean"] < burst["fcfs"]["e2e_mean"]
    assert all(r["completed"] == 32 for r in report["rows"]) and plot.stat().st_size > 0
    assert report["rows"][0]["rate"] == pytest.approx(0.5 * report["capacity_req_s"])


def test_recorded_arrivals_drive_the_server(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    arrivals = tmp_path / "arrivals.jsonl"
    arrivals.write_text("".join(json.dumps({"arrival": 0.5 * i}) + "\n" for i in range(32)))
    argv = ["simulate", "--trace", str(_trace(tmp_path)), "--arrivals", str(arrivals), "--policies", "fcfs",
            "--cost-model", "cpu-default-model"]  # fmt: skip
    assert main(argv) == 0
    assert "recorded" in capsys.readouterr().out
    arrivals.write_text('{"arrival": 0}\n')
    assert main(argv) == 2
    assert "1 arrival times for 32 requests" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--rates", "2", "--strategies", "vanilla"], "--strategies is for offline runs"),
        (["--rates", "2", "--arrivals", "x.jsonl"], "give one"),
        (["--rates", "fast"], "--rates: 'fast'"),
        (["--rates", "2", "--policies", "lifo"], "--policies: 'lifo'"),
    ],
)
def test_bad_online_options_are_refused_before_any_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    assert main(["simulate", "--trace", str(_trace(tmp_path)), *extra]) in (1, 2)
    captured = capsys.readouterr()
    assert message in captured.err and "SIMULATED server" not in captured.out


@pytest.mark.parametrize("value", ["20", 0, -3, True])
def test_a_bad_recorded_prompt_length_names_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: object
) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(
        json.dumps({"id": "a", "L_t0.0": 4})
        + "\n"
        + json.dumps({"id": "b", "L_t0.0": 4, "prompt_tokens": value})
        + "\n"
    )
    assert main(["simulate", "--trace", str(path), "--rates", "1", "--policies", "fcfs"]) == 2
    assert "t.jsonl:2: field 'prompt_tokens'" in capsys.readouterr().err


def test_replicas_step_on_clocks_of_their_own_and_the_door_routes_between_them() -> None:
    from seqsched.schedule.front_door import DoorConfig
    from seqsched.simulate.server import SimFront

    load = [OnlineRequest(4, 6, arrival=0.0, predicted_len=6) for _ in range(8)]
    one = simulate_server(load, LIMITS, UNIT, SimFront(DoorConfig(policy="fcfs"), max_inflight=2))
    log: list[tuple[str, str, int | None]] = []
    two = simulate_server(load, LIMITS, UNIT, SimFront(DoorConfig(policy="fcfs"), max_inflight=2, replicas=2), log)
    assert max(s.finished for s in one) == 24.0 and max(s.finished for s in two) == 12.0, "twice the engines"
    assert sorted(u for what, _, u in log if what == "grant") == [0] * 4 + [1] * 4


def test_least_work_sends_new_requests_away_from_a_replica_busy_with_long_ones() -> None:
    from seqsched.schedule.front_door import DoorConfig
    from seqsched.simulate.server import SimFront

    load = [OnlineRequest(4, 60, arrival=0.0, predicted_len=60)]
    load += [OnlineRequest(4, 2, arrival=1.0 + i, predicted_len=2) for i in range(4)]
    log: list[tuple[str, str, int | None]] = []
    limits = SchedulerLimits(max_num_seqs=4, max_num_batched_tokens=64, policy="fcfs")
    front = SimFront(DoorConfig(policy="fcfs", routing="least-work"), max_inflight=4, replicas=2)
    simulate_server(load, limits, UNIT, front, log)
    assert [u for what, _, u in log if what == "grant"] == [0, 1, 1, 1, 1]
    log.clear()
    simulate_server(load, limits, UNIT, dataclasses.replace(front, door=DoorConfig("fcfs", routing="round-robin")), log)
    assert [u for what, _, u in log if what == "grant"] == [0, 1, 0, 1, 0]


def test_a_learned_policy_without_a_predictor_uses_the_shipped_proxy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["simulate", "--trace", str(_trace(tmp_path)), "--rates", "1.2x", "--cost-model", "cpu-default-model",
                 "--max-num-seqs", "4"]) == 0  # fmt: skip
    captured = capsys.readouterr()
    assert "sjf predicts with the shipped text proxy" in captured.err and "SIMULATED server" in captured.out
    bare = tmp_path / "bare.jsonl"
    bare.write_text("".join(json.dumps({"id": f"r{i}", "L_t0.0": 5 + i}) + "\n" for i in range(8)))
    assert main(["simulate", "--trace", str(bare), "--rates", "1.2x", "--cost-model", "cpu-default-model"]) == 2
    assert "no prompt text to predict from" in capsys.readouterr().err


def test_simulate_rates_with_replicas(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "online.json"
    argv = ["simulate", "--trace", str(_trace(tmp_path)), "--rates", "1.5x", "--policies", "fcfs,sjf+oracle",
            "--oracle", "L_t0.0", "--cost-model", "cpu-default-model", "--max-num-seqs", "4", "--replicas", "2",
            "--routing", "round-robin", "--json", str(out)]  # fmt: skip
    assert main(argv) == 0
    assert "2 replica(s)" in capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["replicas"] == 2 and all(r["completed"] == 32 for r in report["rows"])
    assert main([*argv[:-2], "--replicas", "0"]) == 2
