"""Does the simulator predict plain vLLM's server under load? vLLM's OpenAI server on
this machine, loaded by vLLM's own benchmark client at Poisson rates below and above
capacity, against the simulated server (``simulate/server.py``) given the same
requests in the same order, the same arrival times (the client's own seeded draws), and
a step cost calibrated on this machine (``seqsched calibrate --engine vllm``) plus the
server's own work (HTTP, streaming, detokenizing, on the engine's core).

That work is fitted a round, before the round's points, on other requests of the same kind
(the built-in model's training prompts, or Alpaca's train split) sent all at once, at the
server's full concurrency and at a quarter of it: an extra cost per step and per request
per step that gives both runs their measured durations. Every point measured after it,
capacity included, is a prediction.

The server runs pinned to core 0 with one thread (``--pin``), this script and the client
on the other cores. Prints measured and simulated mean and p99 end-to-end latency and
throughput per rate, with errors, and says where capacity is (measured: every request
at once; simulated: the same). Writes the JSON and, with ``--plot``, the two curves.

    python benchmarks/simulate_check_online.py --workload builtin --cost runs/cost.json --pin --rounds 3
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from serve_latency import bench_client, figures, write_dataset  # noqa: E402

from seqsched.serve.launch import LocalVLLMConfig, local_vllm  # noqa: E402
from seqsched.simulate.server import LatencySummary, OnlineRequest, simulate_server  # noqa: E402
from seqsched.simulate.server_overhead import ServerRun, fit_server_overhead  # noqa: E402
from seqsched.simulate.step_cost import ContinuousCost, load_step_cost  # noqa: E402
from seqsched.simulate.vllm_model import SchedulerLimits  # noqa: E402
from seqsched.workload.arrivals import arrival_times  # noqa: E402

SERVER_BATCHED_TOKENS = 2048  # vLLM's default for its OpenAI server on a CPU
SERVER_BLOCK_SIZE = 128  # the CPU backend's default block
ALTERNATIVES = {  # the same check with the server's work left out, or fitted as one term
    "offline_cost": "offline cost alone",
    "per_request_step_only": "overhead a request a step only",
    "per_step_only": "overhead a step only",
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workload", choices=["builtin", "alpaca"], required=True)
    p.add_argument("--model", default=str(ROOT / "seqsched" / "assets" / "default_model"))
    p.add_argument("--cost", type=Path, required=True, help="step cost from seqsched calibrate --engine vllm")
    p.add_argument("--vicuna", type=Path, default=ROOT.parent / "shared" / "data" / "alpaca-vicuna-lengths.jsonl")
    p.add_argument("--num-prompts", type=int, default=300)
    p.add_argument("--loads", default="0.3,0.5,0.7,0.9,1.2", help="multiples of measured capacity")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--max-num-seqs", type=int, default=16)
    p.add_argument("--max-tokens", type=int, default=256, help="builtin: each request's limit (natural EOS)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pin", action="store_true", help="the server on core 0, the rest elsewhere")
    p.add_argument("--calibration-prompts", type=int, default=None, help="default: --num-prompts")
    p.add_argument("-o", "--output", type=Path, default=ROOT / "runs" / "simcheck" / "online.json")
    p.add_argument("--plot", type=Path, default=None)
    p.add_argument("--save-cost", type=Path, default=None,
                   help="write the step cost with the server's overhead (medians over rounds), for "
                        "seqsched simulate --rates --cost-model")  # fmt: skip
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="simcheck-online-"))
    dataset, ignore_eos = write_dataset(args.workload, args.num_prompts, args.seed, args.max_tokens, args.vicuna,
                                        work / "requests.jsonl")  # fmt: skip
    n_calibration = args.calibration_prompts or args.num_prompts
    calibration, _ = write_dataset(args.workload, n_calibration, args.seed, args.max_tokens, args.vicuna,
                                   work / "calibration.jsonl", held_out=False)  # fmt: skip
    concurrencies = _fit_concurrencies(args)
    cost = load_step_cost(args.cost)
    limits = SchedulerLimits(args.max_num_seqs, SERVER_BATCHED_TOKENS, None, SERVER_BLOCK_SIZE, policy="fcfs")
    config: dict[str, Any] = {"model": args.model, "dtype": "float32", "max_num_seqs": args.max_num_seqs, "threads": 1,
                              "scheduling_policy": "fcfs", "log_path": work / "server.log"}  # fmt: skip
    if args.pin:
        cores = sorted(os.sched_getaffinity(0))
        config["cpus"] = (cores[0],)
        os.sched_setaffinity(0, set(cores[1:]))
    rows: list[dict[str, Any]] = []
    server_costs: list[ContinuousCost] = []
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(local_vllm(LocalVLLMConfig(**config)))
        bench_client(url, args.model, dataset, ignore_eos, float("inf"), args.seed + 999, 32)  # warm-up
        for rnd in range(args.rounds):
            points = ["burst", *args.loads.split(",")]
            capacity = None
            fit_runs = [_server_run(bench_client(url, args.model, calibration, ignore_eos, float("inf"),
                                                 args.seed + rnd, n_calibration, max_concurrency=k), k)
                        for k in concurrencies]  # fmt: skip
            server_cost = fit_server_overhead(fit_runs, limits, cost)
            # the one-term forms, on the full-concurrency run alone, for comparison
            per_request_only = fit_server_overhead(fit_runs[:1], limits, cost, ("s",))
            per_step_only = fit_server_overhead(fit_runs[:1], limits, cost, ("a",))
            server_costs.append(server_cost)
            overhead = {"per_step_ms": 1000 * (server_cost.a - cost.a),
                        "per_request_step_ms": 1000 * (server_cost.s - cost.s)}  # fmt: skip
            for point in points:
                rate = float("inf") if point == "burst" else float(point) * capacity  # type: ignore[operator]
                raw = bench_client(url, args.model, dataset, ignore_eos, rate, args.seed + rnd, args.num_prompts)
                measured = figures(raw)
                if point == "burst":
                    capacity = measured["throughput"]
                simulated = _simulate(raw, rate, args.seed + rnd, limits, server_cost)
                simulated["offline_cost"] = _simulate(raw, rate, args.seed + rnd, limits, cost)
                simulated["per_request_step_only"] = _simulate(raw, rate, args.seed + rnd, limits, per_request_only)
                simulated["per_step_only"] = _simulate(raw, rate, args.seed + rnd, limits, per_step_only)
                row = {"round": rnd, "point": point, "rate": rate, "measured": measured, "simulated": simulated,
                       "server_overhead": overhead,
                       "lens": {"input": raw["input_lens"], "output": raw["output_lens"]}}  # fmt: skip
                rows.append(row)
                print(_line(row), file=sys.stderr, flush=True)
    report = {"settings": {k: str(v) for k, v in vars(args).items()}, "cost": str(args.cost),
              "cost_source": cost.provenance.get("source"), "rows": rows}  # fmt: skip
    report["table"] = summarise(rows)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=1, default=str))
    print(format_table(report, args))
    if args.plot is not None:
        plot(report, args.plot, args)
    if args.save_cost is not None:
        _save_server_cost(server_costs, cost, args)


def _save_server_cost(fitted: list[ContinuousCost], cost: ContinuousCost, args: argparse.Namespace) -> None:
    a, s = (statistics.median(getattr(c, t) for c in fitted) for t in ("a", "s"))
    concurrency = " and ".join(str(k) for k in _fit_concurrencies(args))
    overhead = {"per_step_s": a - cost.a, "per_request_step_s": s - cost.s, "offline_cost": str(args.cost),
                "fitted_on": f"{args.workload} calibration requests, all at once, at max_concurrency "
                             f"{concurrency}, {len(fitted)} round(s)"}  # fmt: skip
    server = dataclasses.replace(cost, a=a, s=s, provenance={**cost.provenance, "server_overhead": overhead})
    server.save(args.save_cost)
    print(f"wrote {args.save_cost} (the offline cost plus the server's overhead)", file=sys.stderr)


def _fit_concurrencies(args: argparse.Namespace) -> tuple[int, int]:
    """The client concurrencies of the overhead fit's two runs: the server's full, and a quarter."""
    return args.max_num_seqs, max(1, args.max_num_seqs // 4)


def _server_run(raw: dict[str, Any], max_inflight: int) -> ServerRun:
    """A client's all-at-once run as the overhead fit reads it: lengths in the order sent, and its duration."""
    run = figures(raw)
    duration = run["completed"] / run["throughput"]
    return ServerRun([int(n) for n in raw["input_lens"]], [int(n) for n in raw["output_lens"]], duration, max_inflight)


def _simulate(
    raw: dict[str, Any], rate: float, seed: int, limits: SchedulerLimits, cost: ContinuousCost
) -> dict[str, Any]:
    """The same requests at the same times: the client reports, in the order it sent
    them, each one's prompt tokens (the server's count, chat template included) and
    output tokens, and its arrival times are its own seeded draws."""
    prompts = [max(1, int(n)) for n in raw["input_lens"]]
    outputs = [max(1, int(n)) for n in raw["output_lens"]]
    times = arrival_times(len(outputs), rate, 1.0, seed)
    load = [OnlineRequest(p, o, t) for p, o, t in zip(prompts, outputs, times, strict=True)]
    s = LatencySummary.of(simulate_server(load, limits, cost))
    return {"throughput": s.throughput, "e2e_mean": s.e2e_mean, "e2e_p99": s.e2e_p99, "ttft_mean": s.ttft_mean}


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Medians over rounds per point, and the simulated figure's error."""
    table = []
    for point in dict.fromkeys(r["point"] for r in rows):
        mine = [r for r in rows if r["point"] == point]
        entry: dict[str, Any] = {"point": point, "rate": statistics.median(r["rate"] for r in mine)}
        for key in ("throughput", "e2e_mean", "e2e_p99", "ttft_mean"):
            m = statistics.median(r["measured"][key] for r in mine)
            s = statistics.median(r["simulated"][key] for r in mine)
            entry[key] = {"measured": m, "simulated": s, "error": s / m - 1 if m else None}
        for name in ALTERNATIVES:
            alt = statistics.median(r["simulated"][name]["e2e_mean"] for r in mine)
            entry[f"{name}_mean_error"] = alt / entry["e2e_mean"]["measured"] - 1
            alt99 = statistics.median(r["simulated"][name]["e2e_p99"] for r in mine)
            entry[f"{name}_p99_error"] = alt99 / entry["e2e_p99"]["measured"] - 1
        table.append(entry)
    return table


def format_table(report: dict[str, Any], args: argparse.Namespace) -> str:
    table = report["table"]
    capacity = next(t for t in table if t["point"] == "burst")["throughput"]
    per_step = [r["server_overhead"]["per_step_ms"] for r in report["rows"]]
    per_request = [r["server_overhead"]["per_request_step_ms"] for r in report["rows"]]
    lines = [
        f"{args.workload}: plain vLLM's server (fcfs, max_num_seqs {args.max_num_seqs}, float32, 1 thread"
        f"{', pinned' if args.pin else ''}), {args.num_prompts} requests a point, {args.rounds} round(s); capacity "
        f"measured {capacity['measured']:.2f} req/s, simulated {capacity['simulated']:.2f} req/s "
        f"({capacity['error']:+.1%}); the server adds {min(per_step):.2f}-{max(per_step):.2f} ms a step and "
        f"{min(per_request):.3f}-{max(per_request):.3f} ms a request a step to the offline cost {report['cost']}, "
        "fitted a round on other requests all at once",
        "",
        "| load | rate | req/s measured | simulated | error | mean s measured | simulated | error | p99 s measured "
        "| simulated | error | mean, p99 error: " + " | ".join(ALTERNATIVES.values()) + " |",
        "|---" * (11 + len(ALTERNATIVES)) + "|",
    ]
    for t in table:
        rate = "all at once" if t["point"] == "burst" else f"{t['rate']:.2f}/s"
        cells = [t["point"], rate]
        for key in ("throughput", "e2e_mean", "e2e_p99"):
            cells += [f"{t[key]['measured']:.2f}", f"{t[key]['simulated']:.2f}", f"{t[key]['error']:+.1%}"]
        cells += [f"{t[f'{name}_mean_error']:+.1%}, {t[f'{name}_p99_error']:+.1%}" for name in ALTERNATIVES]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path, args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [t for t in report["table"] if t["point"] != "burst"]
    capacity = next(t for t in report["table"] if t["point"] == "burst")["throughput"]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    x = [t["rate"] for t in rows]
    for key, marker in (("e2e_mean", "o"), ("e2e_p99", "x")):
        ax.plot(x, [t[key]["measured"] for t in rows], marker=marker, color="C0", label=f"measured {key[4:]}")
        ax.plot(x, [t[key]["simulated"] for t in rows], marker=marker, color="C1", linestyle="--",
                label=f"simulated {key[4:]}")  # fmt: skip
    ax.axvline(capacity["measured"], color="C0", linestyle=":", linewidth=0.8, label="capacity (measured)")
    ax.axvline(capacity["simulated"], color="C1", linestyle=":", linewidth=0.8, label="capacity (simulated)")
    ax.set_xlabel("arrival rate (requests/s, Poisson)")
    ax.set_ylabel("end-to-end latency (s)")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    ax.set_title(f"{args.workload}: plain vLLM server, measured vs SIMULATED", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def _line(row: dict[str, Any]) -> str:
    m, s = row["measured"], row["simulated"]
    return (f"round {row['round']} {row['point']:>5}: measured {m['throughput']:.2f} req/s mean {m['e2e_mean']:.2f} "
            f"p99 {m['e2e_p99']:.2f}; simulated {s['throughput']:.2f} req/s mean {s['e2e_mean']:.2f} "
            f"p99 {s['e2e_p99']:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
