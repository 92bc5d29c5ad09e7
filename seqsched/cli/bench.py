"""`seqsched bench`: strategies side by side on a real model, in one process, on the same
engine and the same requests, printing the paper's throughput table.

Modes:
- live (default): the model generates until EOS on the prompts (--prompts, or the
  built-in default workload). With no --model, --prompts or --trace, the built-in model
  runs the built-in workload (max 256 new tokens) as vanilla, seqsch (the shipped
  predictor), seqsch+vbs+resume (the same, with resuming FCR), oracle, and continuous
  (transformers' continuous batching). The oracle knows the lengths of the vanilla run
  of the same bench (list vanilla first), or those of --oracle-lengths.
- replay (--trace T --mode replay): prompts and output lengths come from a length
  trace; the model is forced to end each response exactly at its trace length.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from seqsched.cli import UsageError, check_output
from seqsched.cli.engine_args import add_dry_run_args, add_engine_args, engine_config, vllm_config
from seqsched.cli.help import HelpFormatter

if TYPE_CHECKING:
    from seqsched.bench.driver import BenchOptions
    from seqsched.engine.config import EngineConfig
    from seqsched.request import Request
from seqsched.cli.bench_args import add_schedule_args, add_stream_args, bench_options


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "bench",
        help="strategies side by side on a real model (live or trace replay): the paper's table",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--prompts", type=Path, help="request JSONL (OpenAI Batch or plain), or a text file with one prompt per line"
    )
    source.add_argument("--trace", type=Path, help="length trace to replay")
    p.add_argument("--mode", choices=["live", "replay"], default=None, help="default: replay with --trace, else live")
    p.add_argument(
        "--sample",
        type=int,
        default=None,
        help="replay: draw N trace records as the paper does; default workload: its first N prompts",
    )
    p.add_argument("--seed", type=int, default=42, help="seed of the --sample draw")
    p.add_argument(
        "--compare-cost-model",
        help="replay: also simulate the same plans with this cost model (a file or a built-in) and "
        "print modelled against measured seconds",
    )
    p.add_argument("--split", help="only trace records of this split (e.g. val), before --sample")
    p.add_argument("--actual", default="L_t0.0", help="replay: trace field of the lengths to force")
    p.add_argument("--oracle", default="max", help="replay: trace field the oracle knows")
    p.add_argument(
        "--oracle-lengths",
        type=Path,
        help="live: known lengths (a trace, {custom_id, length} JSONL, or a previous output)",
    )
    add_engine_args(p)
    add_schedule_args(p, default_strategies=None, default_max_new_tokens=None, default_repeat=3)
    add_stream_args(p)
    add_dry_run_args(p, "per strategy, the plan from its predicted lengths")
    p.set_defaults(func=main)


BUILTIN_MAX_NEW_TOKENS = 256


def main(args: argparse.Namespace) -> int:
    from seqsched.bench.driver import run_bench
    from seqsched.build import build_engine

    if args.predictor is not None and not Path(args.predictor).is_dir():
        raise UsageError(f"--predictor {args.predictor} is not a directory (a saved predictor)")
    check_output(args.output)
    check_output(args.plot, "--plot")
    _fill_defaults(args)
    mode = args.mode or ("replay" if args.trace is not None else "live")
    if mode == "replay" and args.trace is None:
        raise UsageError("--mode replay needs --trace")
    if mode == "live" and args.trace is not None:
        raise UsageError("a trace is replayed: use --mode replay with --trace, or --prompts for live")
    engine_cfg, sizes = engine_config(args), vllm_config(args)
    options = bench_options(args)  # strategy names checked before any model loads
    if mode == "replay":
        requests, oracle_lengths, source = _replay_requests(args)
    else:
        requests, source = _live_requests(args)
        oracle_lengths = None
        if args.oracle_lengths is not None:
            from seqsched.data.traces import read_length_map

            oracle_lengths = read_length_map(args.oracle_lengths)
    if args.dry_run:
        return _dry_run(args, options, requests, oracle_lengths, engine_cfg)
    engines = {name.engine for name in options.strategies}
    hf = build_engine(engine_cfg, "hf") if engines - {"vllm"} else None
    stream_engines: dict[str, Any] = {}
    if hf is not None and "continuous" in engines:
        stream_engines["continuous"] = build_engine(engine_cfg, "continuous", sizes, hf=hf)
    if "vllm" in engines:
        stream_engines["vllm"] = build_engine(engine_cfg, "vllm", sizes)
    engine = hf if hf is not None else stream_engines["vllm"]
    config = {
        "command": "bench",
        "mode": mode,
        "source": source,
        "num_requests": len(requests),
        "sample": args.sample,
        "split": args.split,
        "seed": args.seed,
        "actual": args.actual if mode == "replay" else None,
        "oracle": args.oracle if mode == "replay" else str(args.oracle_lengths or "vanilla run"),
        "engine": {**vars(engine_cfg), "resolved_device": str(getattr(engine, "device", args.device))},
        "continuous_engines": {"kinds": sorted(stream_engines), **vars(sizes)},
    }
    title = f"{mode}: {source}"
    return run_bench(options, engine, requests, oracle_lengths, config, title=title, stream_engines=stream_engines)


def _dry_run(
    args: argparse.Namespace,
    options: BenchOptions,
    requests: list[Request],
    oracle_lengths: dict[str, int] | None,
    engine_cfg: EngineConfig,
) -> int:
    """Each strategy's plan and modelled time from its own predictions, side by side."""
    from seqsched.bench.strategies import StrategyContext, make_strategy
    from seqsched.dry_run import dry_run, model_holder
    from seqsched.predict.base import LengthPredictor
    from seqsched.simulate.cost_model import load_cost_model
    from seqsched.simulate.stream import SimulatedContinuousEngine

    cost = load_cost_model(args.cost_model)
    continuous = SimulatedContinuousEngine(cost, args.max_num_seqs)
    needs_model = any(n.base == "pia" for n in options.strategies)
    holder = model_holder(args.predictor, engine_cfg, needs_model=needs_model)
    ctx = StrategyContext(
        options.schedule,
        holder,
        oracle_lengths,
        args.predictor,
        args.margin_scale,
        args.margin_add,
        {"vllm": continuous, "continuous": continuous},
    )
    print(f"dry run: {len(requests)} requests, cost model {args.cost_model}; nothing generated")
    print(f"{'strategy':24} {'batches':>7} {'pred. s':>8} {'req/s':>7} {'mean s':>7}  predicted lengths")
    for name in options.strategies:
        strategy = make_strategy(name, ctx)
        if not isinstance(strategy.predictor, LengthPredictor):
            print(f"{name!s:24} lengths come from the vanilla run: not known before running")
            continue
        fresh = [dataclasses.replace(r) for r in requests]  # a dry run uses its requests up
        plan = dry_run(
            fresh, strategy.predictor, strategy.schedule, cost, args.cost_model, name.stream, args.max_num_seqs
        )
        seconds, n = plan.report.wall_seconds, len(requests)
        mean = sum(r.completed_at for r in plan.report.results) / n
        ordered = sorted(plan.predicted)
        batches = "-" if name.stream else str(len(plan.report.batches))
        print(
            f"{name!s:24} {batches:>7} {seconds:8.1f} {n / seconds if seconds else 0:7.2f} {mean:7.1f}  "
            f"median {ordered[n // 2]}, max {ordered[-1]}"
        )
    print("times assume every prediction is right; vanilla's prediction is the limit")
    return 0


def _fill_defaults(args: argparse.Namespace) -> None:
    """The built-in benchmark when nothing is given; otherwise plain defaults."""
    from seqsched.build import DEFAULT_PREDICTOR, DEFAULT_PROXY

    builtin = args.model is None and args.prompts is None and args.trace is None
    shipped = DEFAULT_PREDICTOR if args.engine == "hf" else DEFAULT_PROXY
    if builtin and args.predictor is None and shipped.is_dir():
        args.predictor = shipped
    if args.strategies is None:
        args.strategies = _default_strategies(args.engine, args.predictor is not None)
    if args.max_new_tokens is None:
        args.max_new_tokens = BUILTIN_MAX_NEW_TOKENS if builtin else 512


def _default_strategies(engine: str, learned: bool) -> str:
    if engine == "hf":
        return "vanilla,seqsch,seqsch+vbs+resume,oracle,continuous" if learned else "vanilla,oracle"
    if learned:
        return f"{engine},{engine}+sjf,{engine}+ljf,{engine}+kv,{engine}+sjf+oracle"
    return f"{engine},{engine}+sjf+oracle,{engine}+ljf+oracle,{engine}+kv+oracle"


def _replay_requests(args: argparse.Namespace) -> tuple[list[Any], dict[str, int], str]:
    from seqsched.data.traces import read_trace, trace_requests

    trace = read_trace(args.trace, split=args.split, sample_size=args.sample, seed=args.seed)
    requests = trace_requests(trace, args.max_new_tokens, actual=args.actual)
    return requests, trace.oracle(args.oracle), trace.name


def _live_requests(args: argparse.Namespace) -> tuple[list[Any], str]:
    from seqsched.data.batch_io import read_requests

    if args.prompts is not None:
        from seqsched.data.prompts import is_request_file, read_prompts

        if not is_request_file(args.prompts):  # one prompt per line
            return read_prompts(args.prompts, args.max_new_tokens), str(args.prompts)
        requests, errors = read_requests(args.prompts, args.max_new_tokens, require_custom_id=False)
        for e in errors[:5]:
            print(f"seqsched bench: skipping bad line: {e.message}", file=sys.stderr)
        if not requests:
            raise ValueError(f"{args.prompts}: no valid requests in it")
        return requests, str(args.prompts)
    try:
        from seqsched.workload.default_prompts import default_prompts
    except ModuleNotFoundError as err:
        raise UsageError(
            "no --prompts or --trace given, and the built-in default workload "
            f"(seqsched.workload.default_prompts) is not available ({err})"
        ) from None
    prompts = default_prompts() if args.sample is None else default_prompts(args.sample)
    return _as_requests(prompts, args.max_new_tokens), f"default workload ({len(prompts)} prompts)"


def _as_requests(items: Any, max_new_tokens: int) -> list[Any]:
    """The default workload as Requests, whether it gives Requests or prompt strings."""
    from seqsched.request import Request

    requests = []
    for i, item in enumerate(items):
        if isinstance(item, Request):
            requests.append(item)
        elif isinstance(item, str):
            requests.append(Request(i, f"default-{i}", prompt=item, max_new_tokens=max_new_tokens))
        else:
            kind = type(item).__name__
            raise TypeError(f"default workload item {i}: expected a Request or a str, got {kind}")
    if not requests:
        raise ValueError("the default workload is empty")
    return requests
