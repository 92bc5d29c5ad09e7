"""Interactive and batch traffic on one server, SIMULATED: the batch lane of seqsched's front
door (the same object `seqsched serve` runs) in front of the modelled vLLM, on the A100 step
cost (``a100-vllm-llama-8b``, solved from published vLLM figures) with 256 slots, or any
step cost and size.

Interactive requests (the paper's workload: Alpaca prompts, Vicuna-7B's greedy lengths,
drawn seeded from the val split) arrive as Poisson or gamma (``--burstiness``) traffic at a
share of capacity; a batch (drawn from the train split) is there from the start. Arms:
- ``alone``: interactive traffic only, through seqsched's front door (the reference);
- ``naive``: the batch sent straight to vLLM as fast as it takes it (fcfs);
- ``vllm-priority``: vLLM's priority policy, the batch at a lower priority;
- ``lane-constant``: seqsched's lane with a constant predictor;
- ``lane``: seqsched's lane with the predictor (``--predictor``; default: true lengths);
- ``lane-full``: the lane with no TPOT target (batch work takes every slot it can).
Per point: interactive mean, p99, TTFT and TPOT as ratios to ``alone``; the batch's tokens/s
while interactive traffic runs as a share of spare capacity (capacity's tokens/s less the
interactive tokens/s); preemptions and tokens recomputed.

    python benchmarks/simulate_mixed.py --predictor runs/alpaca_proxy --out runs/simmixed.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from seqsched.schedule.batch_lane import BatchLaneConfig  # noqa: E402
from seqsched.schedule.front_door import DoorConfig  # noqa: E402
from seqsched.simulate.server import LatencySummary, OnlineRequest, Served, SimFront, simulate_server  # noqa: E402
from seqsched.simulate.step_cost import load_step_cost  # noqa: E402
from seqsched.simulate.vllm_model import SchedulerLimits  # noqa: E402
from seqsched.workload.arrivals import arrival_times  # noqa: E402

ARMS = ("alone", "naive", "vllm-priority", "lane-constant", "lane", "lane-full")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vicuna", type=Path, default=ROOT.parent / "shared" / "data" / "alpaca-vicuna-lengths.jsonl")
    p.add_argument("--predictor", default=None, help="a saved predictor (default: true lengths, the ceiling)")
    p.add_argument("--cost-model", default="a100-vllm-llama-8b")
    p.add_argument("--max-num-seqs", type=int, default=256)
    p.add_argument("--num-gpu-blocks", type=int, default=None, help="KV blocks of 16 (default: no KV limit)")
    p.add_argument("--interactive", type=int, default=2000, help="interactive requests a point")
    p.add_argument("--batch", type=int, default=20000, help="batch requests (enough to outlast the interactive ones)")
    p.add_argument("--loads", default="0.2,0.4,0.6,0.8")
    p.add_argument("--burstiness", default="1,0.25", help="gamma shapes of the arrivals (1: Poisson)")
    p.add_argument("--tpot-target", type=float, default=1.1,
                   help="the lane's target: this multiple of interactive TPOT alone at the same load")  # fmt: skip
    p.add_argument("--headroom", type=int, default=0)
    p.add_argument("--order", default="auto", choices=["auto", "sjf", "ljf", "fcfs"], help="the lane's order")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    interactive, batch = _workload(args)
    cost = load_step_cost(args.cost_model)
    limits = SchedulerLimits(args.max_num_seqs, 8192, args.num_gpu_blocks, 16, policy="fcfs")
    # Capacity: the engine kept full (the whole batch sent at once), and its requests a second.
    done = simulate_server(batch, limits, cost)
    capacity_tokens = sum(s.output_tokens for s in done) / max(s.finished for s in done)
    capacity = capacity_tokens / (sum(r.output_tokens for r in interactive) / len(interactive))
    rows = []
    started = time.perf_counter()
    for shape in (float(b) for b in args.burstiness.split(",")):
        for load in (float(x) for x in args.loads.split(",")):
            times = arrival_times(len(interactive), load * capacity, shape, args.seed)
            load_in = [dataclasses.replace(r, arrival=t) for r, t in zip(interactive, times, strict=True)]
            row = _point(load_in, batch, limits, cost, args, capacity_tokens)
            rows.append({"load": load, "burstiness": shape, **row})
            print(_line(rows[-1]), flush=True)
    report = {"cost_model": args.cost_model, "max_num_seqs": args.max_num_seqs, "capacity_req_s": capacity,
              "capacity_tokens_s": capacity_tokens, "args": {k: str(v) for k, v in vars(args).items()},
              "rows": rows, "seconds": time.perf_counter() - started}  # fmt: skip
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=1))
    print(format_table(report))


def _workload(args: argparse.Namespace) -> tuple[list[OnlineRequest], list[OnlineRequest]]:
    """Interactive requests from the val split, the batch from the train split, each with
    its prompt length (the built-in tokenizer and chat template) and its prediction."""
    from seqsched.data.traces import read_trace, trace_requests
    from seqsched.engine.loading import load_tokenizer
    from seqsched.engine.prompts import tokenize_all

    rng = np.random.default_rng(args.seed)
    out = []
    for split, n in (("val", args.interactive), ("train", args.batch)):
        trace = read_trace(args.vicuna, split=split)
        picks = [int(i) for i in rng.integers(0, len(trace), n)]
        requests = trace_requests(trace, actual="L_t0.0")
        chosen = [requests[i] for i in picks]
        tokenize_all(load_tokenizer(str(ROOT / "seqsched" / "assets" / "default_model")), chosen, True, None)
        if args.predictor is not None:
            from seqsched.build import load_saved_predictor

            guesses = [float(g) for g in load_saved_predictor(args.predictor).predict_requests(chosen)]
        else:
            guesses = [float(r.target_len or 1) for r in chosen]
        lane = "interactive" if split == "val" else "batch"
        out.append([OnlineRequest(r.num_prompt_tokens, int(r.target_len or 1), 0.0, g, lane)  # type: ignore[arg-type]
                    for r, g in zip(chosen, guesses, strict=True)])  # fmt: skip
    return out[0], out[1]


def _point(interactive: list[OnlineRequest], batch: list[OnlineRequest], limits: SchedulerLimits, cost: Any,
           args: argparse.Namespace, capacity_tokens: float) -> dict[str, Any]:  # fmt: skip
    door = DoorConfig(policy="sjf", max_bypass=128)
    alone = simulate_server(interactive, limits, cost, SimFront(door))
    target = args.tpot_target * LatencySummary.of(alone).tpot_mean
    lane = dataclasses.replace(door, batch=BatchLaneConfig(headroom=args.headroom, tpot_target_s=target,
                                                           order=args.order))  # fmt: skip
    constant = [dataclasses.replace(r, predicted_len=100.0) for r in interactive + batch]
    arms: dict[str, list[Served]] = {"alone": alone}
    arms["naive"] = simulate_server(interactive + batch, limits, cost)
    prioritized = [dataclasses.replace(r, priority=r.arrival) for r in interactive]
    prioritized += [dataclasses.replace(r, priority=1e9 + i) for i, r in enumerate(batch)]
    arms["vllm-priority"] = simulate_server(prioritized, dataclasses.replace(limits, policy="priority"), cost)
    arms["lane-constant"] = simulate_server(constant, limits, cost, SimFront(lane))
    arms["lane"] = simulate_server(interactive + batch, limits, cost, SimFront(lane))
    arms["lane-full"] = simulate_server(interactive + batch, limits, cost, SimFront(door))
    n = len(interactive)
    base = LatencySummary.of(alone)
    window = max(s.finished for s in alone)
    interactive_tokens = sum(s.output_tokens for s in alone) / window
    spare = max(1e-9, capacity_tokens - interactive_tokens)
    out: dict[str, Any] = {"tpot_target_s": target, "spare_tokens_s": spare}
    for name, served in arms.items():
        mine = LatencySummary.of(served[:n])
        end = max(s.finished for s in served[:n])
        batch_tokens = sum(s.output_tokens for s in served[n:] if s.finished <= end) / end
        out[name] = {
            "mean": mine.e2e_mean / base.e2e_mean, "p99": mine.e2e_p99 / base.e2e_p99,
            "ttft": mine.ttft_mean / base.ttft_mean if base.ttft_mean else None,
            "tpot": mine.tpot_mean / base.tpot_mean, "batch_share": batch_tokens / spare,
            "preemptions": sum(s.num_preemptions for s in served[n:]),
            "recomputed": sum(s.num_recomputed for s in served[n:]),
            "batch_done_s": max((s.finished for s in served[n:]), default=None),
        }  # fmt: skip
    return out


def _line(row: dict[str, Any]) -> str:
    parts = [f"{name}: mean {row[name]['mean']:.2f} p99 {row[name]['p99']:.2f} tpot {row[name]['tpot']:.2f} "
             f"batch {row[name]['batch_share']:.0%}" for name in ARMS[1:]]  # fmt: skip
    return f"load {row['load']} shape {row['burstiness']}: " + "; ".join(parts)


def format_table(report: dict[str, Any]) -> str:
    lines = [
        f"SIMULATED: {report['cost_model']}, {report['max_num_seqs']} slots; capacity {report['capacity_req_s']:.1f} "
        f"req/s, {report['capacity_tokens_s']:.0f} tokens/s; ratios to interactive traffic alone",
        "",
        "| load | arrivals | arm | mean x | p99 x | TTFT x | TPOT x | batch / spare | preemptions | recomputed |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        arrivals = "Poisson" if row["burstiness"] == 1 else f"gamma {row['burstiness']:g}"
        for name in ARMS[1:]:
            a = row[name]
            ttft = f"{a['ttft']:.2f}" if a["ttft"] is not None else "-"
            lines.append(f"| {row['load']:g}x | {arrivals} | {name} | {a['mean']:.2f} | {a['p99']:.2f} | {ttft} | "
                         f"{a['tpot']:.2f} | {a['batch_share']:.0%} | {a['preemptions']} | "
                         f"{a['recomputed']} |")  # fmt: skip
    lines.append(f"SIMULATED in {report['seconds']:.0f} s; seconds come from the cost model, not a clock")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
