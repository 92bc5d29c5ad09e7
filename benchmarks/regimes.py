"""Where length knowledge pays, by regime, SIMULATED on the A100 step cost: one table that
says what seqsched serve's order changes, and what it does not, with true lengths as the
ceiling and the share of that ceiling's gain the shipped kind of predictor (the proxy
trained on Alpaca's train split) gets.

Regimes (the paper's workload: Alpaca prompts, Vicuna-7B's greedy lengths, drawn seeded):
- one server, slot-bound (256 slots, KV unlimited): below, at and above capacity, and a burst;
- one server, KV-bound: the KV cache of a 7B model with full attention on a 40 GB A100
  (2,700 blocks of 16), and a third of it;
- several replicas: 4 servers behind seqsched (least predicted work, or round-robin) against
  4 plain ones behind a round-robin balancer, with 4x the requests (capacity is measured
  with every request sent at once: each slot needs as many waves as one server's had).
Each cell is mean end-to-end latency as a ratio to plain vLLM's (fcfs) at the same load.

    python benchmarks/regimes.py --predictor runs/alpaca_proxy -o runs/regimes.json
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
RATES = "0.5x,0.8x,1.0x,1.2x,1.5x,burst"
REGIMES: dict[str, list[str]] = {
    "slot-bound": [],
    "KV-bound (2,700 blocks)": ["--num-gpu-blocks", "2700"],
    "KV-bound (900 blocks)": ["--num-gpu-blocks", "900"],
    "4 replicas, least work": ["--replicas", "4", "--routing", "least-work"],
    "4 replicas, round-robin": ["--replicas", "4", "--routing", "round-robin"],
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vicuna", type=Path, default=ROOT.parent / "shared" / "data" / "alpaca-vicuna-lengths.jsonl")
    p.add_argument("--predictor", default=str(ROOT / "runs" / "alpaca_proxy"))
    p.add_argument("--requests", type=int, default=5000)
    p.add_argument("--rates", default=RATES)
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "regimes")
    p.add_argument("-o", "--output", type=Path, default=None)
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    base = list(_base_records(args.vicuna))
    traces = {n: _draw(base, n, args.work / f"trace_{n}.jsonl") for n in (args.requests, 4 * args.requests)}
    engine = ["--cost-model", "a100-vllm-llama-8b", "--max-num-seqs", "256", "--max-num-batched-tokens", "8192",
              "--block-size", "16", "--predictor", args.predictor, "--oracle", "L_t0.0"]  # fmt: skip
    report: dict[str, Any] = {}
    for name, extra in REGIMES.items():
        out = args.work / f"{name.split()[0]}-{len(report)}.json"
        trace = traces[4 * args.requests if "--replicas" in extra else args.requests]
        subprocess.run([*SEQSCHED, "simulate", "--trace", str(trace), *engine, *extra, "--rates", args.rates,
                        "--policies", "fcfs,sjf,sjf+oracle", "--json", str(out)],
                       check=True, cwd=ROOT, stdout=subprocess.DEVNULL)  # fmt: skip
        report[name] = json.loads(out.read_text())
        print(f"{name}: done", file=sys.stderr, flush=True)
    if args.output is not None:
        args.output.write_text(json.dumps(report, indent=1))
    print(format_table(report))


def format_table(report: dict[str, Any]) -> str:
    lines = [
        "SIMULATED (a100-vllm-llama-8b, 256 slots a server): mean latency x plain vLLM's at the same load; "
        "in brackets, the share of the true lengths' gain the proxy gets",
        "",
        "| regime | load | sjf, proxy | sjf, true lengths | share of the ceiling | p99 proxy | per-token proxy |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in report.items():
        for spec in dict.fromkeys(row["rate_spec"] for row in r["rows"]):
            rows = {row["policy"]: row for row in r["rows"] if row["rate_spec"] == spec}
            proxy, oracle = rows["sjf"]["ratio"], rows["sjf+oracle"]["ratio"]
            gain, ceiling = 1 - proxy["e2e_mean"], 1 - oracle["e2e_mean"]
            share = f"{gain / ceiling:.0%}" if ceiling > 0.01 else "-"
            lines.append(f"| {name} | {spec} | {proxy['e2e_mean']:.2f} | {oracle['e2e_mean']:.2f} | {share} | "
                         f"{proxy['e2e_p99']:.2f} | {proxy['per_token_mean']:.2f} |")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
