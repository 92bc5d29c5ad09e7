"""`seqsched run`: answer a request file (OpenAI Batch or plain JSONL) with a local model.

Answers go to OUTPUT in input order; failed lines (bad input, or a request the model
refused) to the error file, with their custom_id, line and message; counts to
OUTPUT.status.json. Exit status: 0 when every line was answered, 3 when some lines
failed (the rest answered), 2 for a usage error (nothing run), 4 when the disk is full
(answers so far kept in OUTPUT.partial: free space, then --resume), 130 / 143 when stopped by
SIGINT / SIGTERM (answers so far kept in OUTPUT.partial; run again with --resume).
Requests without a temperature are greedy (temperature 0), unlike the OpenAI API."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from seqsched.cli.engine_args import (
    add_dry_run_args,
    add_engine_args,
    add_policy_args,
    engine_config,
    vllm_config,
)
from seqsched.cli.help import HelpFormatter
from seqsched.data.batch_input import DEFAULT_MAX_LINE_BYTES

if TYPE_CHECKING:
    from seqsched.config import RunConfig
    from seqsched.job import RunSummary

EXIT_SOME_FAILED = 3


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "run",
        help="answer a request file (OpenAI Batch or plain JSONL) with a local model",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    p.add_argument("input", type=Path, help="request JSONL (OpenAI Batch request lines or plain lines); - for stdin")
    p.add_argument("-o", "--output", type=Path, help="result JSONL (OpenAI Batch output); required unless --dry-run")
    p.add_argument("--errors", type=Path, default=None, help="failed lines (default: OUTPUT.errors.jsonl)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output and journal")
    p.add_argument(
        "--max-line-bytes",
        type=int,
        default=DEFAULT_MAX_LINE_BYTES,
        help="longer lines are rejected before they are parsed",
    )
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
    p.add_argument("--batch-size", type=int, default=16, help="rows of a static micro-batch (the smallest under VBS)")
    p.add_argument("--group-size", type=int, default=256, help="requests planned together (the scheduling window)")
    p.add_argument(
        "--vbs",
        choices=["off", "paper", "budget"],
        default=None,
        help="variable batch size: the paper's table (more rows for shorter predictions), or a token budget "
        "(default: paper with --predictor or --oracle-lengths, as bench's seqsch+vbs+resume; else off)",
    )
    p.add_argument("--token-budget", type=int, default=None, help="rows x predicted length, for --vbs budget")
    p.add_argument("--fcr", action="store_true", help="failure collection and recomputation, restarting (the paper's)")
    p.add_argument(
        "--paper-exact",
        action="store_true",
        help="plan as the paper's code does where seqsched departs from it (the list: docs/results.md)",
    )
    p.add_argument(
        "--fcr-mode",
        choices=["off", "restart", "resume"],
        default=None,
        help="failure collection and recomputation: re-run a request that outgrew its predicted cap from scratch "
        "(restart, the paper's) or after its kept tokens (resume) (default: resume with --predictor or "
        "--oracle-lengths, the strategy bench recommends; restart with --fcr; else off)",
    )
    p.add_argument("--max-new-tokens", type=int, default=512, help="limit for lines without max_tokens")
    p.add_argument("--margin-scale", type=float, default=1.0, help="safety margin: ceil(scale * p + add)")
    p.add_argument("--margin-add", type=float, default=0.0, help="safety margin, in tokens")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue a job: keep the answers in OUTPUT.partial and OUTPUT whose request and settings are "
        "unchanged; run the rest",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="run on Ray: this many engine replicas, scheduling groups dealt out (default: one process, no Ray)",
    )
    p.add_argument("--worker-cpus", type=float, default=1.0, help="CPUs Ray reserves per replica")
    p.add_argument("--worker-gpus", type=float, default=0.0, help="GPUs Ray reserves per replica")
    p.add_argument("--ray-address", default=None, help="an existing Ray cluster (default: start a local one)")
    add_dry_run_args(p, "the predicted lengths (mean, median, p90, how many at their limit) and the plan")
    add_engine_args(p)
    add_policy_args(p, policy_default=None)
    p.set_defaults(func=main, stream_only_defaults={name: p.get_default(name) for name in STREAM_ONLY})


# Options only a continuous engine reads: given with --engine hf they would do nothing, so
# they are refused. Their defaults are the parser's own (``stream_only_defaults``).
STREAM_ONLY = ("policy", "admission", "kv_margin", "max_bypass", "max_num_seqs", "num_gpu_blocks")


def check_engine_options(args: argparse.Namespace) -> None:
    from seqsched.cli import UsageError

    if args.engine != "hf":
        return
    defaults = args.stream_only_defaults
    given = [name for name in STREAM_ONLY if getattr(args, name) != defaults[name]]
    if given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise UsageError(
            f"{flags}: only continuous engines use {'it' if len(given) == 1 else 'them'} (--engine continuous or "
            "vllm); --engine hf runs static micro-batches (--batch-size, --group-size, --vbs)"
        )


def main(args: argparse.Namespace) -> int:
    from seqsched.signals import Stopped, stop_on_signals

    check_engine_options(args)
    if args.dry_run:
        return _dry_run(args)
    if args.output is None:
        from seqsched.cli import UsageError

        raise UsageError("-o/--output is required (the result file), unless --dry-run")
    try:
        with stop_on_signals():  # until the job is done: a later signal just ends the process
            summary = _execute(args)
    except Stopped as stop:
        _say_stopped(args, stop.signum)
        return 128 + stop.signum
    return _report(summary)


def _dry_run(args: argparse.Namespace) -> int:
    from seqsched.build import build_predictor
    from seqsched.data.batch_io import read_requests
    from seqsched.dry_run import dry_run, model_holder
    from seqsched.simulate.cost_model import load_cost_model

    config = _config(args)
    stdin = _stdin(args)
    if stdin is None and not args.input.is_file():
        raise FileNotFoundError(f"input {args.input} does not exist")
    requests, errors = read_requests(
        "<stdin>" if stdin is not None else args.input,
        args.max_new_tokens,
        stream=stdin,
        max_line_bytes=args.max_line_bytes,
        fingerprints=False,  # nothing is journaled: no resume reads them
    )
    if errors:
        print(f"seqsched run: {len(errors)} bad lines would go to the error file, e.g. {errors[0].message}")
    if not requests:
        print("seqsched run: no valid requests: nothing would run")
        return 0
    needed = config.predictor if config.oracle_lengths is None and config.strategy != "vanilla" else None
    predictor = build_predictor(config, model_holder(needed, config.engine))
    stream = config.engine_kind != "hf"
    schedule = config.schedule
    plan = dry_run(
        requests, predictor, schedule, load_cost_model(args.cost_model), args.cost_model, stream, args.max_num_seqs
    )
    words = _plan_words(schedule, stream)
    print(f"seqsched run --dry-run: strategy {config.strategy}, engine {config.engine_kind}, {words}")
    print(plan.describe())
    return 0


def _plan_words(schedule: Any, stream: bool) -> str:
    if stream:
        return f"policy {schedule.policy}, admission {schedule.admission}"
    fcr = f"fcr {schedule.fcr_mode}" if schedule.fcr else "no fcr"
    return f"batch {schedule.batch_size}, group {schedule.group_size}, vbs {schedule.vbs}, {fcr}"


def _execute(args: argparse.Namespace) -> RunSummary:
    from tqdm import tqdm

    from seqsched.job import execute

    config = _config(args)
    # delay: a job refused at once (a usage error) shows no empty bar before its message
    with tqdm(desc="requests", unit="req", file=sys.stderr, mininterval=2.0, delay=2.0) as bar:
        return execute(config, progress=bar, stdin=_stdin(args))


def _stdin(args: argparse.Namespace) -> BinaryIO | None:
    """stdin when the input is ``-`` (read a line at a time, as a file is); None for a file."""
    return sys.stdin.buffer if str(args.input) == "-" else None


def _config(args: argparse.Namespace) -> RunConfig:
    from seqsched.config import RayConfig, RunConfig, job_schedule

    learned = args.predictor is not None or args.oracle_lengths is not None
    return RunConfig(
        input_path=args.input,
        output_path=args.output if args.output is not None else Path("dry-run.jsonl"),  # never written
        engine=engine_config(args),
        engine_kind=args.engine,
        vllm=vllm_config(args),
        strategy=args.strategy,
        predictor=args.predictor,
        oracle_lengths=args.oracle_lengths,
        max_new_tokens=args.max_new_tokens,
        resume=args.resume,
        overwrite=args.overwrite,
        errors_path=args.errors,
        max_line_bytes=args.max_line_bytes,
        ray=None
        if args.workers is None
        else RayConfig(args.workers, num_cpus=args.worker_cpus, num_gpus=args.worker_gpus, address=args.ray_address),
        margin_scale=args.margin_scale,
        margin_add=args.margin_add,
        schedule=job_schedule(
            learned,
            vbs=args.vbs,
            fcr_mode=args.fcr_mode,
            fcr=True if args.fcr else None,
            policy=args.policy,
            batch_size=args.batch_size,
            group_size=args.group_size,
            token_budget=args.token_budget,
            admission=args.admission,
            kv_margin=args.kv_margin,
            max_bypass=args.max_bypass,
            paper_exact=args.paper_exact,
        ),
    )


def _report(summary: RunSummary) -> int:
    m = summary.metrics
    halved = summary.num_oom_splits
    job_rate = summary.num_answered / summary.job_seconds if summary.job_seconds > 0 else 0.0
    print(
        f"seqsched run: {summary.num_lines} answers -> {summary.output_path} ({summary.num_answered} new, "
        f"{summary.num_resumed} resumed); {summary.num_errors} failed lines -> {summary.errors_path} "
        f"({summary.num_input_errors} bad input, {summary.num_failed} refused by the engine) | "
        f"generation {m.requests_per_second:.2f} req/s over {m.wall_seconds:.1f} s (the pipeline's clock), "
        f"{m.output_tokens_per_second:.1f} tok/s, avg length {m.average_length:.1f}, effective token ratio "
        f"{m.effective_token_ratio:.1%}, failure ratio {m.failure_ratio:.1%}, predictor {m.predictor_overhead:.1%} "
        f"| job {job_rate:.2f} req/s over {summary.job_seconds:.1f} s (wall: reading, loading, writing too)"
        + (f"; {halved} micro-batches halved after running out of memory" if summary.num_oom_splits else ""),
        file=sys.stderr,
    )
    return EXIT_SOME_FAILED if summary.num_errors else 0


def _say_stopped(args: argparse.Namespace, signum: int) -> None:
    from seqsched.job import journal_path

    journal = journal_path(args.output)
    saved = journal.read_bytes().count(b"\n") if journal.exists() else 0
    command = " ".join(sys.argv) if "--resume" in sys.argv else " ".join([*sys.argv, "--resume"])
    if "--overwrite" in command:
        command = command.replace(" --overwrite", "")
    print(
        f"seqsched run: stopped by {signal.Signals(signum).name}: {saved} answers saved in {journal}; "
        f"no output written; continue with: {command}",
        file=sys.stderr,
    )
