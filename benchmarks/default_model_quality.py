"""Do the built-in model's response lengths look like a real assistant's?

Greedy lengths of a model (default: the built-in one) on
- the built-in default workload (the prompts `seqsched bench` runs), and
- held-out Alpaca prompts (ids % 100 == 0, never trained on by scripts/train_default_model.py),
next to Vicuna-7B's greedy lengths on Alpaca (../shared/data/alpaca-vicuna-lengths.jsonl, limit
512). Reports mean, median, p90 and the share that reaches the limit without EOS, and the
Spearman correlation of the model's greedy length with the Alpaca reference answer's length
(in the model's tokens): do short tasks get short answers?

    python benchmarks/default_model_quality.py --alpaca ../shared/data/alpaca-52k.jsonl \
        --vicuna ../shared/data/alpaca-vicuna-lengths.jsonl -o out/default_model_quality.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from seqsched.build import build_engine, resolve_model
from seqsched.collect import CollectConfig, collect_lengths
from seqsched.data.traces import read_trace
from seqsched.engine.config import EngineConfig
from seqsched.request import Request
from seqsched.workload.default_prompts import default_prompts


def summary(lengths: list[int], limit: int) -> dict[str, float]:
    values = np.array(lengths)
    return {
        "n": len(lengths),
        "mean": round(float(values.mean()), 1),
        "median": float(statistics.median(lengths)),
        "p90": float(np.percentile(values, 90)),
        "at_limit": round(float((values >= limit).mean()), 4),
        "limit": limit,
    }


def greedy_lengths(engine: Any, prompts: list[str], limit: int) -> list[int]:
    requests = [Request(i, f"p{i}", prompt=p, max_new_tokens=limit) for i, p in enumerate(prompts)]
    records, errors = collect_lengths(engine, requests, CollectConfig((0.0,), limit, 32))
    assert not errors, errors[:3]
    return [int(r["L_t0.0"]) for r in records]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="default: the built-in model")
    p.add_argument("--alpaca", type=Path, required=True, help="alpaca-52k.jsonl (id, instruction, input, output)")
    p.add_argument("--vicuna", type=Path, help="alpaca-vicuna-lengths.jsonl, for the reference row")
    p.add_argument("--n-alpaca", type=int, default=256, help="held-out Alpaca prompts")
    p.add_argument("--limit", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("-o", "--output", type=Path)
    args = p.parse_args()

    model = str(resolve_model(args.model))
    engine = build_engine(EngineConfig(model=model, device="cpu", num_threads=args.threads))
    rows: dict[str, dict[str, float]] = {}
    workload = greedy_lengths(engine, default_prompts(), args.limit)
    rows["default workload"] = summary(workload, args.limit)
    held = []
    with args.alpaca.open(encoding="utf-8") as f:
        for line in f:
            ex = json.loads(line)
            if int(ex["id"]) % 100 == 0:
                held.append(ex)
    held = held[: args.n_alpaca]
    prompts = [ex["instruction"].strip() + ("\n" + ex["input"].strip() if ex.get("input") else "") for ex in held]
    alpaca = greedy_lengths(engine, prompts, args.limit)
    rows["held-out Alpaca"] = summary(alpaca, args.limit)
    tokenizer = engine.tokenizer
    reference = [len(tokenizer(ex["output"], add_special_tokens=False)["input_ids"]) + 1 for ex in held]
    rows["Alpaca reference answers"] = summary([min(n, args.limit) for n in reference], args.limit)
    if args.vicuna is not None:
        vicuna = read_trace(args.vicuna).actual("L_t0.0")
        rows["Vicuna-7B on Alpaca"] = summary(vicuna, 512)
    rho = float(spearmanr(alpaca, reference).statistic)
    print(f"model {model}, greedy, limit {args.limit}")
    print(f"{'':26} {'n':>5} {'mean':>7} {'median':>7} {'p90':>6} {'at limit':>9}")
    for name, r in rows.items():
        print(
            f"{name:26} {r['n']:5.0f} {r['mean']:7.1f} {r['median']:7.0f} {r['p90']:6.0f} "
            f"{100 * r['at_limit']:8.1f}%  (limit {r['limit']:.0f})"
        )
    print(f"Spearman(greedy length, Alpaca reference length) on {len(held)} held-out prompts: {rho:.3f}")
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        result = {"model": model, "limit": args.limit, "rows": rows, "spearman_alpaca": rho}
        args.output.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
