"""Options `bench` and `simulate` share, parsed into the driver's typed options."""

from __future__ import annotations

import argparse
from pathlib import Path

from seqsched.bench.driver import BenchOptions
from seqsched.bench.names import parse_strategies
from seqsched.schedule import ScheduleConfig


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
        "prediction of 0 in bin 0); the list of departures: docs/results.md",
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


def add_stream_args(p: argparse.ArgumentParser) -> None:
    """Options of the stream plans that continuous strategies (vllm+sjf, ...) use."""
    from seqsched.cli.engine_args import add_plan_args

    add_plan_args(p.add_argument_group("stream plans (continuous strategies)"))


def base_schedule(args: argparse.Namespace) -> ScheduleConfig:
    """The schedule every strategy starts from, from the options `simulate` and `bench` share."""
    return ScheduleConfig(
        batch_size=args.batch_size,
        group_size=args.group_size,
        bin_size=args.bin_size,
        token_budget=args.token_budget,
        kv_margin=args.kv_margin,
        max_bypass=args.max_bypass,
        paper_exact=args.paper_exact,
    )


def bench_options(args: argparse.Namespace, simulated: str | None = None) -> BenchOptions:
    """The driver's options from the parsed arguments (``simulated``: the cost model)."""
    return BenchOptions(
        command=args.command,
        strategies=tuple(parse_strategies(args.strategies)),
        schedule=base_schedule(args),
        max_new_tokens=args.max_new_tokens,
        predictor=args.predictor,
        margin_scale=args.margin_scale,
        margin_add=args.margin_add,
        repeat=args.repeat,
        output=args.output,
        plot=args.plot,
        simulated=simulated,
        compare_cost_model=getattr(args, "compare_cost_model", None),
        threads=getattr(args, "thread_choice", None),
    )
