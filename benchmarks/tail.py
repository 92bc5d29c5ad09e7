"""Tail latency where length knowledge pays (SIMULATED): mean and p99 end-to-end latency of
seqsched serve's orders as ratios to FCFS's, on one A100 server (the a100-vllm-llama-8b step
cost, 256 slots), slot-bound and KV-bound (900 blocks of 16), at 1.2x and 1.5x capacity and
in a burst, with 2,000 and 5,000 requests drawn from the paper's workload (Alpaca prompts,
Vicuna-7B's lengths) and the shipped kind of proxy.

Arms: ``sjf`` with the job's aging bound (1,024 overtakes) and serve's (128), and
``deadline`` (a bound in time: ``--slacks`` seconds per predicted token); on the KV-bound
points, serve's sjf and each ``deadline`` again with KV-aware admission at the door
(``--door-kv``). For each, the
table gives mean and p99 as ratios to FCFS's, the share of the deeper sjf mean gain it
keeps, and vLLM's preemptions. The issue's targets: p99 <= 1.10x FCFS's, >= 90% of sjf's
mean gain, preemptions at least halved on the KV-bound points.

    python benchmarks/tail.py --predictor runs/alpaca_proxy [--slacks 0.005,0.01,0.02,0.05] [-o runs/tail.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.simulate_gpu import _base_records, _draw  # noqa: E402

SEQSCHED = [sys.executable, "-m", "seqsched"]
REGIMES = {"slot-bound": [], "KV-bound (900 blocks)": ["--num-gpu-blocks", "900"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vicuna", type=Path, default=ROOT.parent / "shared" / "data" / "alpaca-vicuna-lengths.jsonl")
    p.add_argument("--predictor", default=str(ROOT / "runs" / "alpaca_proxy"))
    p.add_argument("--sizes", default="2000,5000")
    p.add_argument("--rates", default="1.2x,1.5x,burst")
    p.add_argument("--slacks", default="0.005,0.01,0.02,0.05")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "tail")
    p.add_argument("-o", "--output", type=Path, default=None)
    args = p.parse_args()
    if not args.vicuna.exists():
        sys.exit(f"tail.py: {args.vicuna} is not there (the shared data: Alpaca prompts with Vicuna-7B's lengths)")
    args.work.mkdir(parents=True, exist_ok=True)
    base = list(_base_records(args.vicuna))
    engine = ["--cost-model", "a100-vllm-llama-8b", "--max-num-seqs", "256", "--max-num-batched-tokens", "8192",
              "--block-size", "16", "--predictor", args.predictor, "--rates", args.rates]  # fmt: skip
    arms: list[tuple[str, list[str]]] = [("fcfs,sjf", ["--max-bypass", "1024"]), ("sjf", ["--max-bypass", "128"])]
    arms += [("deadline", ["--max-bypass", "-1", "--slack", s]) for s in args.slacks.split(",")]
    rows: list[dict[str, Any]] = []
    for size in (int(n) for n in args.sizes.split(",")):
        trace = _draw(base, size, args.work / f"trace_{size}.jsonl")
        for regime, extra in REGIMES.items():
            kv = [(p, [*k, "--door-kv"]) for p, k in arms if p != "fcfs,sjf" and k[1] != "1024"] if extra else []
            for policies, knobs in arms + kv:
                out = args.work / "run.json"
                subprocess.run([*SEQSCHED, "simulate", "--trace", str(trace), *engine, *extra, *knobs,
                                "--policies", policies, "--json", str(out)],
                               check=True, cwd=ROOT, stdout=subprocess.DEVNULL)  # fmt: skip
                for row in json.loads(out.read_text())["rows"]:
                    name = _arm(row["policy"], knobs)
                    rows.append({"size": size, "regime": regime, "rate": row["rate_spec"], "arm": name,
                                 "mean_s": row["e2e_mean"], "p99_s": row["e2e_p99"],
                                 "preemptions": row["num_preemptions"]})  # fmt: skip
            print(f"tail.py: {size} requests, {regime}: done", file=sys.stderr, flush=True)
    if args.output is not None:
        args.output.write_text(json.dumps(rows, indent=1) + "\n")
    print(table(rows))


def _arm(policy: str, knobs: list[str]) -> str:
    if policy == "fcfs":
        return "fcfs"
    kv = " +door KV" if "--door-kv" in knobs else ""
    if policy == "deadline":
        return f"deadline {knobs[knobs.index('--slack') + 1]} s/token{kv}"
    return f"{policy} bound {knobs[knobs.index('--max-bypass') + 1]}{kv}"


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["SIMULATED (a100-vllm-llama-8b, 256 slots): ratios to FCFS at the same point; 'kept': the share of the",
             "deeper of the two sjf mean gains",
             "", "| requests | regime | load | arm | mean | p99 | kept | preemptions (fcfs) |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    points = dict.fromkeys((r["size"], r["regime"], r["rate"]) for r in rows)
    for size, regime, rate in points:
        mine = [r for r in rows if (r["size"], r["regime"], r["rate"]) == (size, regime, rate)]
        fcfs = next(r for r in mine if r["arm"] == "fcfs")
        best = min(r["mean_s"] for r in mine if r["arm"].startswith("sjf"))
        gain = fcfs["mean_s"] - best
        for r in mine:
            if r["arm"] == "fcfs":
                continue
            kept = f"{(fcfs['mean_s'] - r['mean_s']) / gain:.0%}" if gain > 0.01 * fcfs["mean_s"] else "-"
            mean, p99 = r["mean_s"] / fcfs["mean_s"], r["p99_s"] / fcfs["p99_s"]
            lines.append(f"| {size} | {regime} | {rate} | {r['arm']} | {mean:.2f} | {p99:.2f} | {kept} | "
                         f"{r['preemptions']} ({fcfs['preemptions']}) |")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
