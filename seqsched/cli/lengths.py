"""`seqsched lengths collect`: record a length trace (decode steps per prompt, at each
temperature) by running a local model on a prompts file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from seqsched.cli.engine_args import add_threads_arg, resolve_threads
from seqsched.cli.help import HelpFormatter
from seqsched.engine.config import DTYPES


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "lengths",
        help="collect a model's response lengths on prompts",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    sub = p.add_subparsers(dest="lengths_command", required=True)
    c = sub.add_parser(
        "collect", help="sample each prompt at several temperatures", description=__doc__, formatter_class=HelpFormatter
    )
    c.add_argument(
        "prompts",
        type=Path,
        nargs="?",
        help="request JSONL (as `seqsched run` reads) or a text file with one prompt per line; - for stdin",
    )
    c.add_argument("--prompts", dest="prompts_option", type=Path, help="the same as PROMPTS (an older spelling)")
    c.add_argument(
        "-o",
        "--output",
        "--out",
        dest="output",
        type=Path,
        required=True,
        help="trace JSONL, written as prompts finish; run again to continue a stopped collection",
    )
    c.add_argument("--overwrite", action="store_true", help="replace an existing trace instead of continuing it")
    c.add_argument(
        "--holdout",
        type=float,
        default=None,
        help="give each record a split: about this fraction 'val', the rest 'train' (stable per prompt id), "
        "for `predictor train --split train` and `predictor eval --split val`",
    )
    c.add_argument("--model", help="HF model directory or hub id (default: the built-in model)")
    c.add_argument(
        "--temperatures", default="0,0.3,0.5,0.7", help="comma-separated; the paper's four by default"
    )
    c.add_argument("--max-new-tokens", type=int, default=512, help="limit for prompts without max_tokens")
    c.add_argument("--batch-size", type=int, default=16, help="rows generated together")
    c.add_argument("--seed", type=int, default=0, help="sampled rows of prompt i draw with seed + i")
    c.add_argument("--first", type=int, default=None, help="only the first N prompts")
    c.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")
    c.add_argument("--dtype", default="auto", choices=DTYPES, help="auto: float32 on a CPU")
    add_threads_arg(c)
    c.set_defaults(func=main)


CHUNK_BATCHES = 4  # micro-batches of prompts per saved chunk


def main(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from seqsched.build import build_engine, resolve_model
    from seqsched.cli import UsageError
    from seqsched.collect import CollectConfig, collect_lengths
    from seqsched.data.prompts import read_prompts
    from seqsched.data.trace_writer import TraceWriter
    from seqsched.engine.config import EngineConfig

    source = _prompts_path(args)
    try:
        temperatures = tuple(float(t) for t in args.temperatures.split(",") if t.strip())
    except ValueError:
        raise UsageError(f"--temperatures ({args.temperatures!r}) must be comma-separated numbers") from None
    config = CollectConfig(temperatures, args.max_new_tokens, args.batch_size, args.seed)
    if args.first is not None and args.first < 1:
        raise UsageError(f"--first ({args.first}) must be >= 1")
    requests = read_prompts(source, config.max_new_tokens)[: args.first]
    model = str(resolve_model(args.model))
    settings = {
        "temperatures": temperatures,
        "max_new_tokens": args.max_new_tokens,
        "seed": args.seed,
        "dtype": args.dtype,
    }
    writer = TraceWriter(args.output, settings, model, overwrite=args.overwrite, holdout=args.holdout)
    todo = [r for r in requests if r.request_id not in writer.done]
    if writer.done:
        print(
            f"seqsched lengths: continuing {args.output}: {len(requests) - len(todo)} prompts already there, "
            f"{len(todo)} to go" + (f" (cut a torn last line of {writer.num_cut} bytes)" if writer.num_cut else ""),
            file=sys.stderr,
        )
    threads = resolve_threads(args)
    engine = build_engine(EngineConfig(model=model, device=args.device, dtype=args.dtype, num_threads=threads))
    errors: list[str] = []

    def save(records: list[dict[str, Any]], failed: list[str]) -> None:
        writer.append(records)
        errors.extend(failed)

    with tqdm(total=len(todo) * len(temperatures), desc="runs", unit="run", file=sys.stderr, mininterval=2.0) as bar:
        try:
            collect_lengths(engine, todo, config, bar.update, on_chunk=save, chunk_size=CHUNK_BATCHES * args.batch_size)
        finally:
            writer.close()
    for line in errors[:5]:
        print(f"seqsched lengths: skipped {line}", file=sys.stderr)
    print(
        f"seqsched lengths: {len(writer.done)} prompts x {len(temperatures)} temperatures -> {args.output}"
        + (f" ({len(errors)} prompts failed and were left out)" if errors else "")
    )
    return 0


def _prompts_path(args: argparse.Namespace) -> Path:
    """PROMPTS or --prompts (one of them); ``-`` reads stdin into a temporary file."""
    import tempfile

    from seqsched.cli import UsageError

    if (args.prompts is None) == (args.prompts_option is None):
        raise UsageError("give the prompts file once: PROMPTS (or --prompts)")
    path = args.prompts if args.prompts is not None else args.prompts_option
    if str(path) == "-":
        with tempfile.NamedTemporaryFile("wb", suffix=".jsonl", delete=False) as f:
            f.write(sys.stdin.buffer.read())
        return Path(f.name)
    if not path.is_file():
        raise UsageError(f"prompts file {path} does not exist")
    return Path(path)
