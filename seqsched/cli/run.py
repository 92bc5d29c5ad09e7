"""`seqsched run`: answer a request file (OpenAI Batch or plain JSONL) with a local model."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from seqsched.cli.engine_args import add_engine_args, add_policy_args, engine_config, vllm_config


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("run", help=__doc__, description=__doc__)
    p.add_argument("input", type=Path, help="request JSONL (OpenAI Batch request lines or plain lines)")
    p.add_argument("--output", "-o", type=Path, required=True, help="result JSONL (OpenAI Batch output)")
    p.add_argument(
        "--strategy",
        choices=["vanilla", "oracle", "seqsch"],
        default=None,
        help="default: seqsch with --predictor, oracle with --oracle-lengths, else vanilla",
    )
    p.add_argument("--predictor", type=Path, help="a saved predictor directory")
    p.add_argument(
        "--oracle-lengths",
        type=Path,
        help="known lengths: a trace, {custom_id, length} JSONL, or a previous output",
    )
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--group-size", type=int, default=256)
    p.add_argument("--vbs", choices=["off", "paper", "budget"], default="off")
    p.add_argument("--token-budget", type=int, default=None, help="rows x predicted length, for --vbs budget")
    p.add_argument("--fcr", action="store_true", help="failure collection and recomputation")
    p.add_argument(
        "--fcr-mode",
        choices=["restart", "resume"],
        default="restart",
        help="re-run an FCR failure from scratch (the paper) or continue after its kept tokens; "
        "resume implies --fcr (default: %(default)s)",
    )
    p.add_argument("--max-new-tokens", type=int, default=512, help="limit for lines without max_tokens")
    p.add_argument("--margin-scale", type=float, default=1.0, help="safety margin: ceil(scale * p + add)")
    p.add_argument("--margin-add", type=float, default=0.0, help="safety margin, in tokens")
    p.add_argument("--resume", action="store_true", help="keep the answered lines of OUTPUT; run the rest")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="run on Ray: this many engine replicas, scheduling groups dealt out (default: one process, no Ray)",
    )
    p.add_argument("--worker-cpus", type=float, default=1.0, help="CPUs Ray reserves per replica")
    p.add_argument("--worker-gpus", type=float, default=0.0, help="GPUs Ray reserves per replica")
    p.add_argument("--ray-address", default=None, help="an existing Ray cluster (default: start a local one)")
    add_engine_args(p)
    add_policy_args(p, policy_default=None)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from seqsched.api import RunConfig, execute
    from seqsched.distributed import RayConfig
    from seqsched.schedule import ScheduleConfig

    config = RunConfig(
        input_path=args.input,
        output_path=args.output,
        engine=engine_config(args),
        engine_kind=args.engine,
        vllm=vllm_config(args),
        strategy=args.strategy,
        predictor=args.predictor,
        oracle_lengths=args.oracle_lengths,
        max_new_tokens=args.max_new_tokens,
        resume=args.resume,
        ray=None
        if args.workers is None
        else RayConfig(args.workers, num_cpus=args.worker_cpus, num_gpus=args.worker_gpus, address=args.ray_address),
        margin_scale=args.margin_scale,
        margin_add=args.margin_add,
        schedule=ScheduleConfig(
            batch_size=args.batch_size,
            group_size=args.group_size,
            vbs=args.vbs,
            token_budget=args.token_budget,
            fcr=args.fcr or args.fcr_mode == "resume",
            fcr_mode=args.fcr_mode,
            policy=args.policy or ("sjf" if args.predictor or args.oracle_lengths else "fcfs"),
            admission=args.admission,
            kv_margin=args.kv_margin,
            max_bypass=args.max_bypass,
        ),
    )
    # SIGTERM becomes SystemExit, so a killed job still writes what it finished.
    with _exit_on_sigterm(), tqdm(desc="requests", unit="req", file=sys.stderr, mininterval=2.0) as bar:
        summary = execute(config, progress=bar)
    m = summary.metrics
    print(
        f"seqsched run: {summary.num_lines} lines -> {summary.output_path} "
        f"({summary.num_answered} answered, {m.num_errors} failed, {summary.num_input_errors} bad input, "
        f"{summary.num_resumed} resumed) | {m.requests_per_second:.2f} req/s, "
        f"{m.output_tokens_per_second:.1f} tok/s, avg length {m.average_length:.1f}, "
        f"effective token ratio {m.effective_token_ratio:.1%}, failure ratio {m.failure_ratio:.1%}, "
        f"predictor {m.predictor_overhead:.1%}, {m.wall_seconds:.1f} s"
    )
    return 0


@contextlib.contextmanager
def _exit_on_sigterm() -> Iterator[None]:
    def _raise(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    try:
        previous = signal.signal(signal.SIGTERM, _raise)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
