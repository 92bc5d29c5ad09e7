"""`seqsched simulate`: strategies side by side on a length trace, no model, in modelled time.

Output lengths come from the trace (``--actual``, ``L_t0.0`` by default); seconds come
from a per-step cost model: a file from `seqsched calibrate`, or a built-in one. The
default is the built-in ``a100-vicuna-7b`` (hand-set for Vicuna-7B fp16 on an A100,
not measured), which matches the paper's traces; ``cpu-default-model`` (the built-in
model, measured on a 2-core CPU) is the other built-in.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from seqsched.cli.bench_args import add_schedule_args, add_stream_args, bench_options
from seqsched.cli.help import HelpFormatter
from seqsched.engine.cost_model import BUILTIN, DEFAULT_BUILTIN


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "simulate",
        help="strategies side by side on a length trace, no model, in modelled (simulated) time",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    p.add_argument("--trace", type=Path, required=True, help="length trace (paper JSON list or JSONL)")
    p.add_argument("--actual", default="L_t0.0", help="trace field of the lengths really produced")
    p.add_argument("--oracle", default="max", help="trace field the oracle knows ('max' over L_t*)")
    p.add_argument("--sample", type=int, default=None, help="draw N records as the paper does")
    p.add_argument("--split", help="only trace records of this split (e.g. val), before --sample")
    p.add_argument("--seed", type=int, default=42, help="seed of the --sample draw")
    p.add_argument(
        "--cost-model",
        default=DEFAULT_BUILTIN,
        help=f"cost model JSON, or a built-in: {', '.join(BUILTIN)}",
    )
    p.add_argument(
        "--prompt-tokens",
        type=int,
        default=None,
        help="prompt length to charge every request (default: estimated from its text)",
    )
    add_schedule_args(p, default_strategies="vanilla,oracle")
    add_stream_args(p)
    g = p.add_argument_group("the simulated continuous-batching engine (strategies continuous, continuous+sjf, ...)")
    g.add_argument("--max-num-seqs", type=int, default=256, help="requests running at once")
    g.add_argument("--num-gpu-blocks", type=int, default=None, help="KV-cache blocks (default: no limit)")
    g.add_argument("--block-size", type=int, default=16, help="tokens per KV block")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from seqsched.bench.driver import run_bench
    from seqsched.cli import check_output
    from seqsched.data.traces import read_trace, trace_requests
    from seqsched.engine.cost_model import load_cost_model
    from seqsched.engine.simulate import SimulatedEngine

    check_output(args.output)
    check_output(args.plot, "--plot")
    options = bench_options(args, simulated=str(args.cost_model))  # strategy names checked before any work
    trace = read_trace(args.trace, split=args.split, sample_size=args.sample, seed=args.seed)
    requests = trace_requests(trace, args.max_new_tokens, actual=args.actual)
    if args.prompt_tokens is not None:
        if args.prompt_tokens < 1:
            raise ValueError(f"--prompt-tokens ({args.prompt_tokens}) must be >= 1")
        requests = [dataclasses.replace(r, num_prompt_tokens_hint=args.prompt_tokens) for r in requests]
    from seqsched.engine.simulate_stream import SimulatedContinuousEngine

    cost_model = load_cost_model(args.cost_model)
    engine = SimulatedEngine(cost_model)
    continuous = SimulatedContinuousEngine(cost_model, args.max_num_seqs, args.num_gpu_blocks, args.block_size)
    config = {
        "command": "simulate",
        "trace": str(args.trace),
        "num_requests": len(requests),
        "sample": args.sample,
        "split": args.split,
        "seed": args.seed,
        "actual": args.actual,
        "oracle": args.oracle,
        "cost_model": args.cost_model,
        "prompt_tokens": args.prompt_tokens,
    }
    stream_engines = {"continuous": continuous}
    return run_bench(options, engine, requests, trace.oracle(args.oracle), config, trace.name, stream_engines)
