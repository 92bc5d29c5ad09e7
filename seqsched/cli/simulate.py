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
import json
import sys
from pathlib import Path
from typing import Any

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


def add_schedule_args(
    p: argparse.ArgumentParser,
    default_strategies: str | None,
    default_max_new_tokens: int | None = 512,
    default_repeat: int = 1,
) -> None:
    """Options `simulate` and `bench` share."""
    p.add_argument(
        "--strategies",
        default=default_strategies,
        help="comma-separated, run in this order. Static: vanilla, oracle, seqsch or pia, with switches +vbs, "
        "+budget, +fcr, +resume, +sort (bare oracle/seqsch/pia = +vbs+fcr; +sort = sorted fixed batches). "
        "Continuous: vllm or continuous (plain fcfs), with +sjf or +ljf, +kv (KV admission), +oracle (true "
        "lengths). Default: the built-in set for the engine",
    )
    p.add_argument("--predictor", type=Path, help="saved predictor directory, for seqsch")
    p.add_argument("--margin-scale", type=float, default=1.0, help="seqsch safety margin: ceil(scale * p + add)")
    p.add_argument("--margin-add", type=float, default=0.0, help="seqsch safety margin, in tokens")
    p.add_argument("--token-budget", type=int, default=None, help="rows x predicted length, for +budget")
    p.add_argument("--batch-size", type=int, default=16, help="rows of a static micro-batch (the smallest under VBS)")
    p.add_argument("--group-size", type=int, default=256, help="requests planned together (the scheduling window)")
    p.add_argument("--bin-size", type=int, default=50, help="VBS buckets predicted lengths into cells this wide")
    p.add_argument(
        "--paper-exact",
        action="store_true",
        help="plan as the paper's code does where seqsched departs from it (VBS merges appended, a "
        "prediction of 0 in bin 0); see the README's list of departures",
    )
    p.add_argument(
        "--max-new-tokens",
        type=int,
        default=default_max_new_tokens,
        help="each request's limit (bench: 256 on the built-in workload, else 512)",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=default_repeat,
        help="interleaved repeats: the table shows medians and min-max, and marks ratios inside the noise",
    )
    p.add_argument(
        "-o",
        "--output",
        "--json",
        dest="output",
        type=Path,
        help="JSON of the figures, resolved config and environment, written as each strategy finishes (- for stdout)",
    )
    p.add_argument("--plot", type=Path, help="write a PNG: lengths, micro-batches, throughput")


def main(args: argparse.Namespace) -> int:
    from seqsched.cli import check_output
    from seqsched.data.traces import read_trace, trace_requests
    from seqsched.engine.cost_model import load_cost_model
    from seqsched.engine.simulate import SimulatedEngine

    check_output(args.output)
    check_output(args.plot, "--plot")
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
    return run_bench(args, engine, requests, trace.oracle(args.oracle), config, trace.name, stream_engines)


def add_stream_args(p: argparse.ArgumentParser) -> None:
    """Options of the stream plans that continuous strategies (vllm+sjf, ...) use."""
    from seqsched.cli.engine_args import add_plan_args

    add_plan_args(p.add_argument_group("stream plans (continuous strategies)"))


def base_schedule(args: argparse.Namespace) -> Any:
    """The schedule every strategy starts from, from the options `simulate` and `bench` share."""
    from seqsched.schedule import ScheduleConfig

    return ScheduleConfig(
        batch_size=args.batch_size,
        group_size=args.group_size,
        bin_size=args.bin_size,
        token_budget=args.token_budget,
        kv_margin=args.kv_margin,
        max_bypass=args.max_bypass,
        paper_exact=args.paper_exact,
    )


def run_bench(
    args: argparse.Namespace,
    engine: Any,
    requests: list[Any],
    oracle_lengths: dict[str, int] | None,
    config: dict[str, Any],
    title: str = "",
    stream_engines: dict[str, Any] | None = None,
) -> int:
    """Build the strategies from the shared options, run them, print and save."""
    from seqsched.bench.plots import plot_bench
    from seqsched.bench.report import environment, format_table, to_json, write_json
    from seqsched.bench.runner import differing_outputs, run_strategies
    from seqsched.bench.strategies import StrategyContext, make_strategy

    base = base_schedule(args)
    ctx = StrategyContext(
        base, engine, oracle_lengths, args.predictor, args.margin_scale, args.margin_add, stream_engines or {}
    )
    names = [n.strip() for n in args.strategies.split(",") if n.strip()]
    strategies = [make_strategy(n, ctx) for n in names]

    def show(name: str, rep: int, m: Any) -> None:
        print(
            f"  {name} (repeat {rep + 1}/{args.repeat}): {m.requests_per_second:.3f} req/s, "
            f"eff {m.effective_token_ratio:.1%}, {m.wall_seconds:.2f} s",
            file=sys.stderr,
        )

    def bar(label: str) -> Any:
        from tqdm import tqdm

        return tqdm(total=len(requests), desc=label, unit="req", file=sys.stderr, mininterval=2.0)

    live = getattr(engine, "name", "") in ("hf", "vllm")  # the simulator needs no bar
    simulated = str(args.cost_model) if config["command"] == "simulate" else None
    _warn_small(args, len(requests), names)
    config = {
        **config,
        "strategies": names,
        "predictor": args.predictor,
        "repeat": args.repeat,
        "schedule": dataclasses.asdict(base),
        "max_new_tokens": args.max_new_tokens,
    }
    if getattr(args, "thread_choice", None) is not None:
        config["threads"] = args.thread_choice.to_dict()
    to_file = args.output is not None and str(args.output) != "-"
    human = sys.stderr if args.output is not None and not to_file else sys.stdout  # JSON alone on stdout with -

    def save(partial: Any) -> None:  # after every run: a stopped bench keeps what it measured
        write_json(partial, args.output, {**config, "complete": False}, environment(engine))

    bench = run_strategies(
        engine,
        requests,
        strategies,
        repeat=args.repeat,
        on_run=show,
        progress=bar if live else None,
        on_partial=save if to_file else None,
    )
    print(format_table(bench, simulated=simulated), file=human)
    differing = differing_outputs(bench)
    if len(strategies) > 1 and live:
        verdict = "yes" if not differing else f"NO, {len(differing)} differ (e.g. {differing[0]!r})"
        print(f"greedy outputs identical across strategies: {verdict}", file=human)
    if getattr(args, "compare_cost_model", None) is not None:
        from seqsched.bench.compare import compare_with_simulation, format_comparison
        from seqsched.engine.cost_model import load_cost_model

        cost_model = load_cost_model(args.compare_cost_model)
        comparison = compare_with_simulation(bench, engine, requests, strategies, cost_model)
        print(f"\nsimulated with {args.compare_cost_model}, the same requests and plans:", file=human)
        print(format_comparison(comparison), file=human)
    config |= {"greedy_outputs_differing": differing, "complete": True}
    if args.output is not None:
        if to_file:
            write_json(bench, args.output, config, environment(engine))
            print(f"wrote {args.output}", file=human)
        else:
            sys.stdout.write(json.dumps(to_json(bench, config, environment(engine)), indent=2, default=str) + "\n")
    if args.plot is not None:
        plot_bench(bench, args.plot, title=title, subtitle=_subtitle(args, config, simulated))
        print(f"wrote {args.plot}", file=human)
    return 0


def _warn_small(args: argparse.Namespace, num_requests: int, names: list[str]) -> None:
    """Say when there are too few requests for the static plans to differ."""
    static = [n for n in names if n.split("+")[0] not in ("vllm", "continuous")]
    if len(static) > 1 and num_requests < args.group_size:
        print(
            f"seqsched {args.command}: note: {num_requests} requests, fewer than one scheduling group "
            f"(--group-size {args.group_size}): bins stay under-filled, VBS has little to merge, and static "
            "strategies may run the same plan",
            file=sys.stderr,
        )


def _subtitle(args: argparse.Namespace, config: dict[str, Any], simulated: str | None) -> str:
    """The configuration a plot was made with, in one line."""
    engine = config.get("engine") or {}
    model = "trace" if simulated else (Path(str(engine.get("model", ""))).name or "model")
    threads = config.get("threads", {}).get("threads")
    parts = [
        f"simulated, cost model {simulated}" if simulated else f"model {model}",
        f"{config['num_requests']} requests",
        f"limit {args.max_new_tokens}",
        f"batch {args.batch_size}",
        f"group {args.group_size}",
    ]
    if threads is not None:
        parts.append(f"{threads} thread{'s' if threads != 1 else ''}")
    parts.append(f"{args.repeat} repeat{'s' if args.repeat != 1 else ''}")
    return ", ".join(parts)
