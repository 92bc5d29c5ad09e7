"""`seqsched simulate --rates ...`: policies compared as servers, with requests arriving
over time, in modelled time (``simulate/server.py``)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import Any

from seqsched.cli.routing import SCORERS, routing_arg
from seqsched.schedule.config import DEFAULT_SLACK_S

OFFLINE_STRATEGIES = "vanilla,oracle"  # simulate's --strategies default, which online mode leaves alone
POLICY_NAMES = ("fcfs", "sjf", "ljf", "deadline")


def add_online_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("online: requests arriving over time (a server under load)")
    g.add_argument(
        "--rates",
        help="arrival rates, comma-separated: requests/s (2.5), a multiple of the simulated capacity (0.8x), or "
        "burst (all at once)",
    )
    g.add_argument(
        "--burstiness", type=float, default=1.0, help="gamma shape of the gaps (1: Poisson), as vllm bench serve"
    )
    g.add_argument("--arrivals", type=Path, help="recorded arrival times: JSONL, one {'arrival': seconds} per request")
    g.add_argument("--arrival-seed", type=int, default=0, help="seed of the arrival times")
    g.add_argument(
        "--policies",
        default="fcfs,sjf",
        help="fcfs: plain vLLM's server; sjf or ljf: seqsched serve in front of vLLM (its queue, the prediction "
        "as vLLM's priority), with --predictor, or +oracle for true lengths",
    )
    g.add_argument(
        "--max-inflight",
        type=int,
        default=None,
        help="seqsched serve: requests at vLLM at once (default: --max-num-seqs)",
    )
    g.add_argument("--replicas", type=int, default=1,
                   help="vLLM servers, each of the engine's size (fcfs: a round-robin balancer in front)")  # fmt: skip
    g.add_argument("--door-kv", action="store_true",
                   help="KV-aware admission at seqsched serve's door (with --num-gpu-blocks): hold back what would "
                   "make vLLM preempt")  # fmt: skip
    g.add_argument("--slack", type=float, default=DEFAULT_SLACK_S,
                   help="the deadline policy's seconds of waiting one predicted token is worth")  # fmt: skip
    g.add_argument("--routing", type=routing_arg, default="least-work", metavar="SCORER[:W],...",
                   help=f"seqsched serve's routing across --replicas: one scorer or a weighted mix of "
                   f"{', '.join(SCORERS)}")  # fmt: skip


def is_online(args: argparse.Namespace) -> bool:
    if args.rates is None and args.arrivals is None:
        return False
    from seqsched.cli import UsageError

    if args.strategies != OFFLINE_STRATEGIES:
        raise UsageError("--strategies is for offline runs; with --rates or --arrivals, compare --policies")
    if args.rates is not None and args.arrivals is not None:
        raise UsageError("--rates and --arrivals: give one (recorded arrivals have their own rate)")
    return True


@dataclasses.dataclass(frozen=True)
class Arm:
    policy: str  # fcfs | sjf | ljf
    oracle: bool = False

    def __str__(self) -> str:
        return self.policy + ("+oracle" if self.oracle else "")


def parse_policies(text: str) -> list[Arm]:
    arms = []
    for name in (n.strip() for n in text.split(",") if n.strip()):
        policy, *rest = name.split("+")
        if policy not in POLICY_NAMES or rest not in ([], ["oracle"]) or (policy == "fcfs" and rest):
            raise ValueError(f"--policies: {name!r}: choose fcfs, sjf, ljf, deadline, or sjf, ljf or deadline with "
                             "+oracle")  # fmt: skip
        arms.append(Arm(policy, bool(rest)))
    if not arms:
        raise ValueError(f"--policies ({text!r}) names no policy")
    return arms


def parse_rates(text: str) -> list[str]:
    rates = [r.strip() for r in text.split(",") if r.strip()]
    for r in rates:
        value = r[:-1] if r.endswith("x") else r
        try:
            ok = r == "burst" or float(value) > 0
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"--rates: {r!r} must be a positive rate (2.5), a multiple of capacity (0.8x) or burst")
    if not rates:
        raise ValueError(f"--rates ({text!r}) names no rate")
    return rates


def run_online(args: argparse.Namespace, trace: Any, requests: list[Any]) -> int:
    from seqsched.simulate.server import LatencySummary, OnlineRequest, simulate_server
    from seqsched.simulate.step_cost import load_step_cost
    from seqsched.simulate.vllm_model import SchedulerLimits
    from seqsched.workload.arrivals import arrival_times, read_arrivals

    arms = parse_policies(args.policies)
    rates = parse_rates(args.rates) if args.rates is not None else ["recorded"]
    recorded = read_arrivals(args.arrivals) if args.arrivals is not None else None
    if recorded is not None and len(recorded) != len(requests):
        raise ValueError(f"{args.arrivals}: {len(recorded)} arrival times for {len(requests)} requests")
    predicted = _predictions(args, arms, trace, requests)
    cost = load_step_cost(args.cost_model)
    limits = SchedulerLimits(args.max_num_seqs, args.max_num_batched_tokens, args.num_gpu_blocks, args.block_size,
                             policy="fcfs")  # fmt: skip
    base = [OnlineRequest(r.num_prompt_tokens, r.target_len, 0.0) for r in requests]

    def run(arm: Arm, times: list[float]) -> LatencySummary:
        guesses = predicted.get(str(arm), [0.0] * len(base))
        load = [
            dataclasses.replace(b, arrival=t, predicted_len=g) for b, t, g in zip(base, times, guesses, strict=True)
        ]
        return LatencySummary.of(simulate_server(load, limits, cost, _front(arm, args)))

    capacity = run(Arm("fcfs"), [0.0] * len(base)).throughput
    rows = []
    for rate_text in rates:
        if recorded is not None:
            rate, times = len(recorded) / max(recorded[-1], 1e-9), recorded
        else:
            rate = math.inf if rate_text == "burst" else _rate(rate_text, capacity)
            times = arrival_times(len(base), rate, args.burstiness, args.arrival_seed)
        summaries = {str(arm): run(arm, times) for arm in arms}
        first = summaries[str(arms[0])]
        for name, s in summaries.items():
            ratio = {k: getattr(s, k) / getattr(first, k) if getattr(first, k) else None
                     for k in ("e2e_mean", "e2e_p99", "per_token_mean", "throughput")}  # fmt: skip
            rows.append({"rate_spec": rate_text, "rate": rate, "policy": name, **dataclasses.asdict(s),
                         "ratio": ratio})  # fmt: skip
    source = cost.provenance.get("source", "unknown")
    report = {
        "command": "simulate --rates",
        "trace": str(args.trace),
        "num_requests": len(requests),
        "cost_model": args.cost_model,
        "cost_source": source,
        "engine": dataclasses.asdict(limits),
        "replicas": args.replicas,
        "routing": args.routing,
        "capacity_req_s": capacity,
        "burstiness": args.burstiness,
        "rows": rows,
    }
    print(format_online(report))
    if args.output is not None:
        text = json.dumps(report, indent=1, default=str)
        if str(args.output) == "-":
            sys.stdout.write(text + "\n")
        else:
            Path(args.output).write_text(text + "\n")
    if args.plot is not None:
        plot_online(report, args.plot)
    return 0


def _front(arm: Arm, args: argparse.Namespace) -> Any:
    """Plain vLLM (one, or several behind a round-robin balancer), or seqsched serve in front."""
    from seqsched.schedule.front_door import DoorConfig
    from seqsched.simulate.server import SimFront

    if arm.policy == "fcfs":
        if args.replicas == 1:
            return None
        return SimFront(DoorConfig("fcfs", None, "round-robin"), max_inflight=1 << 30, send_priority=False,
                        replicas=args.replicas)  # fmt: skip
    bypass = None if args.max_bypass is not None and args.max_bypass < 0 else args.max_bypass  # -1: no bound
    kv = args.num_gpu_blocks if args.door_kv else None  # the door knows each replica's KV cache
    door = DoorConfig(arm.policy, bypass, args.routing, slack_s=args.slack, kv_blocks=kv,  # type: ignore[arg-type]
                      block_size=args.block_size)  # fmt: skip
    return SimFront(door, max_inflight=args.max_inflight, replicas=args.replicas)


def _rate(text: str, capacity: float) -> float:
    return float(text[:-1]) * capacity if text.endswith("x") else float(text)


def _predictions(args: argparse.Namespace, arms: list[Arm], trace: Any, requests: list[Any]) -> dict[str, list[float]]:
    """Each arm's predicted lengths: the trace's oracle field, or the predictor's."""
    out: dict[str, list[float]] = {}
    learned = [a for a in arms if a.policy != "fcfs" and not a.oracle]
    if learned:
        from seqsched.build import DEFAULT_PROXY, load_saved_predictor

        path = args.predictor
        if path is None:  # the shipped text proxy: it reads the prompts' text
            if not any(record.text for record in trace.records):
                raise ValueError(f"--policies {learned[0]}: the trace has no prompt text to predict from: give "
                                 f"--predictor PATH, or use {learned[0]}+oracle")  # fmt: skip
            print(f"seqsched simulate: {learned[0]} predicts with the shipped text proxy ({DEFAULT_PROXY}); "
                  "--predictor PATH for yours", file=sys.stderr)  # fmt: skip
            path = DEFAULT_PROXY
        guesses = [float(g) for g in load_saved_predictor(path).predict_requests(requests)]
        out.update({str(a): guesses for a in learned})
    if any(a.oracle for a in arms):
        known = trace.oracle(args.oracle)
        truth = [float(known[r.request_id]) for r in requests]
        out.update({str(a): truth for a in arms if a.oracle})
    return out


def format_online(report: dict[str, Any]) -> str:
    engine = report["engine"]
    lines = [
        f"SIMULATED server: {report['num_requests']} requests, {report.get('replicas', 1)} replica(s) of "
        f"max_num_seqs {engine['max_num_seqs']}, "
        f"max_num_batched_tokens {engine['max_num_batched_tokens']}, KV blocks {engine['num_blocks'] or 'unlimited'}; "
        f"capacity (fcfs, all at once) {report['capacity_req_s']:.2f} req/s",
        "",
        "| rate | policy | req/s | mean s | median s | p99 s | TTFT s | TPOT ms | s/token | preempt | x first: mean "
        "| p99 | per-token |",
        "|---" * 13 + "|",
    ]
    for r in report["rows"]:
        rate = "burst" if math.isinf(r["rate"]) else f"{r['rate']:.2f}/s ({r['rate_spec']})"
        x = r["ratio"]
        lines.append(
            f"| {rate} | {r['policy']} | {r['throughput']:.2f} | {r['e2e_mean']:.2f} | {r['e2e_median']:.2f} | "
            f"{r['e2e_p99']:.2f} | {r['ttft_mean']:.3f} | {1000 * r['tpot_mean']:.1f} | {r['per_token_mean']:.4f} | "
            f"{r['num_preemptions']} | {x['e2e_mean']:.2f} | {x['e2e_p99']:.2f} | {x['per_token_mean']:.2f} |"
        )
    lines.append(f"SIMULATED: seconds come from the cost model {report['cost_model'] or 'default'} "
                 f"({report['cost_source']}), not from a clock")  # fmt: skip
    return "\n".join(lines)


def plot_online(report: dict[str, Any], path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    rows = [r for r in report["rows"] if math.isfinite(r["rate"])]
    for policy in dict.fromkeys(r["policy"] for r in rows):
        mine = [r for r in rows if r["policy"] == policy]
        line = ax.plot([r["rate"] for r in mine], [r["e2e_mean"] for r in mine], marker="o", label=f"{policy} mean")[0]
        ax.plot([r["rate"] for r in mine], [r["e2e_p99"] for r in mine], marker="x", linestyle="--",
                color=line.get_color(), label=f"{policy} p99")  # fmt: skip
    ax.axvline(report["capacity_req_s"], color="grey", linewidth=0.8, linestyle=":", label="capacity")
    ax.set_xlabel("arrival rate (requests/s)")
    ax.set_ylabel("end-to-end latency (s)")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    ax.set_title(f"SIMULATED ({report['cost_model'] or 'default cost'}): {report['num_requests']} requests", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
