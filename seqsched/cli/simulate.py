"""`seqsched simulate`: strategies side by side on a length trace, no model, in modelled time.

Output lengths come from the trace (``--actual``, ``L_t0.0`` by default); prompt lengths
from the trace's ``prompt_tokens``, from ``--tokenizer`` (the model's tokenizer and chat
template, as the engines count them), or ``--prompt-tokens``; seconds from a cost model.
- Static strategies (vanilla, seqsch, oracle, ...) run on the static-batch simulator,
  priced by a static cost model (``seqsched calibrate``, or a built-in).
- Continuous strategies (``continuous[+sjf|+ljf][+kv][+oracle]``) run on a model of
  vLLM v1's scheduler (token budget, chunked prefill, KV blocks, preemption), priced by a
  step cost (``seqsched calibrate --engine vllm``, or the built-in
  ``a100-vllm-llama-8b``, fitted to published vLLM measurements).
- With ``--rates`` (or ``--arrivals``) requests arrive over time instead, and the
  policies of ``--policies`` are compared as servers: latency as vLLM's benchmark
  client reports it, against the arrival rate.
Every table says SIMULATED and names its cost model's source.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from seqsched.cli.bench_args import add_schedule_args, add_stream_args, bench_options
from seqsched.cli.help import HelpFormatter
from seqsched.schedule.config import DEFAULT_MAX_BYPASS as JOB_MAX_BYPASS
from seqsched.serve.config import DEFAULT_MAX_BYPASS as SERVE_MAX_BYPASS
from seqsched.simulate.cost_model import BUILTIN, DEFAULT_BUILTIN
from seqsched.simulate.step_cost import BUILTIN as STEP_BUILTIN
from seqsched.simulate.step_cost import DEFAULT_BUILTIN as DEFAULT_STEP


def add_parser(subparsers: Any) -> None:
    from seqsched.cli.simulate_online import add_online_args

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
        default=None,
        help="cost model JSON (seqsched calibrate [--engine vllm]), or a built-in: "
        f"{', '.join([*BUILTIN, *STEP_BUILTIN])} (default: {DEFAULT_BUILTIN} for static strategies, {DEFAULT_STEP} "
        "for continuous ones)",
    )
    p.add_argument(
        "--prompt-tokens",
        type=int,
        default=None,
        help="prompt length to charge every request (default: the trace's prompt_tokens, else --tokenizer, else "
        "estimated from its text)",
    )
    p.add_argument("--tokenizer", help="count prompt tokens with this model's tokenizer and chat template")
    add_schedule_args(p, default_strategies="vanilla,oracle")
    add_stream_args(p)
    g = p.add_argument_group("the simulated vLLM engine (continuous strategies and --rates)")
    g.add_argument("--max-num-seqs", type=int, default=256, help="requests running at once")
    g.add_argument("--num-gpu-blocks", type=int, default=None, help="KV-cache blocks (default: no limit)")
    g.add_argument("--block-size", type=int, default=16, help="tokens per KV block")
    g.add_argument(
        "--max-num-batched-tokens", type=int, default=8192, help="token budget of a step (vLLM's A100 offline default)"
    )
    add_online_args(p)
    for action in p._actions:  # one default each way: a job's plans (1024), a served queue (serve's 128)
        if action.dest == "max_bypass":
            action.default = None
            action.help = (f"aging bound of sjf/ljf: no request is overtaken by more than this many later ones "
                           f"(-1: none; default: a job's {JOB_MAX_BYPASS}, or with --rates seqsched serve's "
                           f"{SERVE_MAX_BYPASS}, so that a simulated server is the served one)")  # fmt: skip
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from seqsched.cli import check_output
    from seqsched.cli.simulate_online import is_online, run_online
    from seqsched.data.traces import read_trace, trace_requests

    check_output(args.output)
    check_output(args.plot, "--plot")
    online = is_online(args)
    if args.max_bypass is None:
        args.max_bypass = SERVE_MAX_BYPASS if online else JOB_MAX_BYPASS
    options = None if online else bench_options(args, simulated=_cost_label(args))  # names checked before work
    trace = read_trace(args.trace, split=args.split, sample_size=args.sample, seed=args.seed)
    requests = trace_requests(trace, args.max_new_tokens, actual=args.actual)
    if args.prompt_tokens is not None:
        if args.prompt_tokens < 1:
            raise ValueError(f"--prompt-tokens ({args.prompt_tokens}) must be >= 1")
        requests = [dataclasses.replace(r, num_prompt_tokens_hint=args.prompt_tokens) for r in requests]
    elif args.tokenizer is not None:
        count_prompt_tokens(requests, args.tokenizer)
    if online:
        return run_online(args, trace, requests)
    assert options is not None
    from seqsched.bench.driver import run_bench
    from seqsched.simulate.static import SimulatedEngine
    from seqsched.simulate.stream import SimulatedContinuousEngine

    static, step = cost_models(args.cost_model, options.strategies)
    continuous = SimulatedContinuousEngine(
        step, args.max_num_seqs, args.num_gpu_blocks, args.block_size, args.max_num_batched_tokens
    )
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
        "cost_source": (step if any(s.stream for s in options.strategies) else static).provenance.get("source"),
        "prompt_tokens": args.prompt_tokens,
        "tokenizer": args.tokenizer,
        "engine": dataclasses.asdict(continuous.limits),
    }
    return run_bench(options, SimulatedEngine(static), requests, trace.oracle(args.oracle), config, trace.name,
                     {"continuous": continuous})  # fmt: skip


def _cost_label(args: argparse.Namespace) -> str:
    """The cost model(s) a run's tables name, with the source of the continuous one."""
    from seqsched.bench.names import parse_strategies
    from seqsched.simulate.step_cost import load_step_cost

    strategies = parse_strategies(args.strategies)
    stream = any(s.stream for s in strategies)
    static = any(not s.stream for s in strategies)
    if args.cost_model is not None:
        name = str(args.cost_model)
    else:
        name = " and ".join(n for n, used in ((DEFAULT_BUILTIN, static), (DEFAULT_STEP, stream)) if used)
    if stream:
        source = load_step_cost(args.cost_model).provenance.get("source")
        name += f" (continuous step cost: {source})" if source else ""
    return name


def cost_models(name: str | None, strategies: Any) -> tuple[Any, Any]:
    """The static cost model and the continuous step cost that ``--cost-model`` names.
    A continuous step cost cannot price static batches: asking for it is an error."""
    from seqsched.simulate.cost_model import load_cost_model
    from seqsched.simulate.step_cost import is_step_cost, load_step_cost

    step = load_step_cost(name)
    if name is not None and is_step_cost(name):
        static_wanted = [str(s) for s in strategies if not s.stream]
        if static_wanted:
            raise ValueError(
                f"--cost-model {name}: a continuous step cost (seqsched calibrate --engine vllm) cannot price static "
                f"strategies ({', '.join(static_wanted)}); give a static cost model or only continuous strategies"
            )
        return load_cost_model(None), step
    return load_cost_model(name), step


def count_prompt_tokens(requests: list[Any], tokenizer_path: str) -> None:
    """Prompt lengths as the engines count them: the chat template around the text."""
    from seqsched.engine.loading import load_tokenizer
    from seqsched.engine.prompts import tokenize_all

    tokenizer = load_tokenizer(tokenizer_path)
    tokenize_all(tokenizer, requests, chat_template=True, max_context=None)
    bad = [r for r in requests if r.status.is_finished]
    if bad:
        raise ValueError(f"--tokenizer {tokenizer_path}: request {bad[0].request_id!r}: {bad[0].error}")
