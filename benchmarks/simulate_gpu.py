"""What the paper's workload would do on vLLM on an A100, SIMULATED (no GPU here): the
checked scheduler model (benchmarks/simulate_check.py) priced by the built-in
``a100-vllm-llama-8b`` step cost, which is solved from published vLLM measurements
(its sources are in seqsched/simulate/step_cost.py).

Requests are drawn with replacement (seeded) from the Alpaca/Vicuna-7B trace: Vicuna's
greedy lengths, prompt lengths counted once per prompt with the built-in tokenizer and
chat template (no LLaMA tokenizer offline), recorded in the trace as ``prompt_tokens``.
1. offline, every request at once, 1k / 10k / 100k requests: fcfs, sjf, ljf (the proxy
   predictor) and kv admission, on an engine of 256 slots with the KV cache of a 7B model
   with full attention on a 40 GB A100 (2,700 blocks of 16 tokens);
2. online, Poisson arrivals around capacity, 5k requests: plain vLLM's server against
   seqsched serve in front (sjf with the proxy, and with true lengths).
Each simulate call is timed, process start included.

    python benchmarks/simulate_gpu.py --out runs/simgpu --plot docs/simulated_a100_online.png
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SEQSCHED = [sys.executable, "-m", "seqsched"]
KV_BLOCKS = 2700  # (40 GB x 0.9 - 13.5 GB of weights) / 512 KB of KV a token (Vicuna-7B, fp16) / 16 tokens a block


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vicuna", type=Path, default=ROOT.parent / "shared" / "data" / "alpaca-vicuna-lengths.jsonl")
    p.add_argument("--predictor", default=str(ROOT / "runs" / "alpaca_proxy"))
    p.add_argument("--sizes", default="1000,10000,100000")
    p.add_argument("--online-requests", type=int, default=5000)
    p.add_argument("--rates", default="0.5x,0.8x,0.9x,1.0x,1.2x,1.5x")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "simgpu")
    p.add_argument("--plot", type=Path, default=None)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    base = _base_records(args.vicuna)
    engine = ["--cost-model", "a100-vllm-llama-8b", "--max-num-seqs", "256", "--max-num-batched-tokens", "8192",
              "--num-gpu-blocks", str(KV_BLOCKS), "--block-size", "16", "--predictor", args.predictor]  # fmt: skip
    offline = []
    for n in (int(s) for s in args.sizes.split(",")):
        trace = _draw(base, n, args.out / f"trace_{n}.jsonl")
        out = args.out / f"offline_{n}.json"
        seconds = _timed([*SEQSCHED, "simulate", "--trace", str(trace), *engine, "--json", str(out),
                          "--strategies", "continuous,continuous+sjf,continuous+ljf,continuous+kv"])  # fmt: skip
        offline.append((n, seconds, json.loads(out.read_text())))
    trace = _draw(base, args.online_requests, args.out / "trace_online.jsonl")
    out = args.out / "online.json"
    online_seconds = _timed([*SEQSCHED, "simulate", "--trace", str(trace), *engine, "--rates", args.rates,
                             "--policies", "fcfs,sjf,sjf+oracle", "--oracle", "L_t0.0", "--json", str(out),
                             *(["--plot", str(args.plot)] if args.plot else [])])  # fmt: skip
    print(format_tables(offline, json.loads(out.read_text()), online_seconds))


def _base_records(path: Path) -> list[dict[str, Any]]:
    """Every record of the trace, with its prompt length counted once."""
    from seqsched.data.traces import read_trace, trace_requests
    from seqsched.engine.loading import load_tokenizer
    from seqsched.engine.prompts import tokenize_all

    trace = read_trace(path)
    requests = trace_requests(trace)
    tokenize_all(load_tokenizer(str(ROOT / "seqsched" / "assets" / "default_model")), requests, True, None)
    return [{"instruction": r.text, "L_t0.0": r.lengths["L_t0.0"], "prompt_tokens": q.num_prompt_tokens}
            for r, q in zip(trace.records, requests, strict=True)]  # fmt: skip


def _draw(base: list[dict[str, Any]], n: int, path: Path) -> Path:
    picks = np.random.default_rng(0).integers(0, len(base), n)
    path.write_text("".join(json.dumps({"id": f"r{i}", **base[int(k)]}) + "\n" for i, k in enumerate(picks)))
    return path


def _timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def format_tables(offline: list[tuple[int, float, dict[str, Any]]], online: dict[str, Any], online_s: float) -> str:
    source = "cost model a100-vllm-llama-8b (published vLLM measurements; seqsched/simulate/step_cost.py)"
    lines = [f"SIMULATED offline, {source}; 256 slots, {KV_BLOCKS} KV blocks of 16", "",
             "| requests | policy | req/s | x fcfs | mean completion s | x fcfs | preemptions | simulate s |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for n, seconds, report in offline:
        for s in report["strategies"]:
            m = s["metrics"]
            policy = s["name"].removeprefix("continuous").removeprefix("+") or "fcfs"
            lines.append(f"| {n:,} | {policy} | {m['requests_per_second']:.1f} | {s['throughput_ratio']:.2f} | "
                         f"{m['latency_mean']:.1f} | {s['latency_ratio']:.2f} | {s['num_preemptions']} | "
                         f"{seconds:.1f} |")  # fmt: skip
    lines += ["", f"SIMULATED online (Poisson), {online['num_requests']:,} requests, {source}; capacity "
              f"{online['capacity_req_s']:.1f} req/s; simulated in {online_s:.1f} s", "",
              "| rate | policy | mean s | p99 s | TTFT s | s/token | x fcfs: mean | p99 | per-token | req/s |",
              "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in online["rows"]:
        x = r["ratio"]
        lines.append(f"| {r['rate']:.1f}/s ({r['rate_spec']}) | {r['policy']} | {r['e2e_mean']:.2f} | "
                     f"{r['e2e_p99']:.2f} | {r['ttft_mean']:.2f} | {r['per_token_mean']:.4f} | {x['e2e_mean']:.2f} | "
                     f"{x['e2e_p99']:.2f} | {x['per_token_mean']:.2f} | {x['throughput']:.2f} |")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
