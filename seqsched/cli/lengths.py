"""`seqsched lengths collect`: record a length trace (decode steps per prompt, at each
temperature) by running a local model on a prompts file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from seqsched.cli.help import HelpFormatter


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
        "--prompts",
        type=Path,
        required=True,
        help="request JSONL (as `seqsched run` reads) or a text file with one prompt per line",
    )
    c.add_argument("--out", type=Path, required=True, help="trace JSONL to write")
    c.add_argument("--model", help="HF model directory or hub id (default: the built-in model)")
    c.add_argument(
        "--temperatures", default="0,0.3,0.5,0.7", help="comma-separated (default: the paper's 0,0.3,0.5,0.7)"
    )
    c.add_argument("--max-new-tokens", type=int, default=512, help="limit for prompts without max_tokens")
    c.add_argument("--batch-size", type=int, default=16, help="rows generated together")
    c.add_argument("--seed", type=int, default=0, help="sampled rows of prompt i draw with seed + i")
    c.add_argument("--first", type=int, default=None, help="only the first N prompts")
    c.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")
    c.add_argument("--dtype", default="auto", help="auto (float32 on a CPU), float32, bfloat16, float16")
    c.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from seqsched.api import resolve_model
    from seqsched.cli import UsageError
    from seqsched.data.collect import CollectConfig, collect_lengths, read_prompts, write_trace
    from seqsched.engine.config import EngineConfig

    try:
        temperatures = tuple(float(t) for t in args.temperatures.split(",") if t.strip())
    except ValueError:
        raise UsageError(f"--temperatures ({args.temperatures!r}) must be comma-separated numbers") from None
    config = CollectConfig(temperatures, args.max_new_tokens, args.batch_size, args.seed)
    requests = read_prompts(args.prompts, config.max_new_tokens)
    if args.first is not None:
        if args.first < 1:
            raise UsageError(f"--first ({args.first}) must be >= 1")
        requests = requests[: args.first]
    engine = _engine(EngineConfig(model=str(resolve_model(args.model)), device=args.device, dtype=args.dtype))
    total = len(requests) * len(temperatures)
    with tqdm(total=total, desc="runs", unit="run", file=sys.stderr, mininterval=2.0) as bar:
        records, errors = collect_lengths(engine, requests, config, progress=bar.update)
    for line in errors[:5]:
        print(f"seqsched lengths: skipped {line}", file=sys.stderr)
    write_trace(args.out, records)
    print(
        f"seqsched lengths: {len(records)} prompts x {len(temperatures)} temperatures -> {args.out}"
        + (f" ({len(errors)} prompts failed and were left out)" if errors else "")
    )
    return 0


def _engine(config: Any) -> Any:
    from seqsched.engine.hf import HFEngine  # imports torch

    try:
        return HFEngine(config)
    except OSError as e:  # the loader's errors name the model and what is wrong
        raise FileNotFoundError(str(e)) from e
