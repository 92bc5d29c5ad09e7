"""`seqsched calibrate`: measure a model's prefill and decode step times over a grid and
fit the step cost model that `seqsched simulate --cost-model` reads."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from seqsched.cli.engine_args import add_threads_arg, resolve_threads
from seqsched.cli.help import HelpFormatter

EXIT_BAD_FIT = 4


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "calibrate",
        help="measure a model's step times and fit the simulator's cost model",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    p.add_argument("--model", help="HF model directory or hub id (default: the built-in model)")
    p.add_argument("-o", "--output", "--out", dest="output", type=Path, required=True, help="cost model JSON to write")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")
    p.add_argument("--dtype", default="auto", help="auto (float32 on a CPU), float32, bfloat16, float16")
    p.add_argument("--batch-sizes", default="1,4,16,64", help="comma-separated")
    p.add_argument(
        "--context-lens",
        default="16,64,128",
        help="prompt lengths, comma-separated "
        "(default: %(default)s); keep them + --num-steps within the model's context",
    )
    p.add_argument("--num-steps", type=int, default=16, help="decode steps timed per run")
    p.add_argument("--repeats", type=int, default=3, help="runs per grid point; medians are kept")
    add_threads_arg(p)
    p.add_argument(
        "--max-error",
        type=float,
        default=0.25,
        help="refuse to save a fit whose median relative error is above this (a busy machine makes such fits)",
    )
    p.add_argument("--force", action="store_true", help="save the fit whatever its error")
    p.set_defaults(func=main)


def int_list(text: str, option: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{option} ({text!r}) must be comma-separated integers") from None
    if not values:
        raise ValueError(f"{option} ({text!r}) names no values")
    return values


def main(args: argparse.Namespace) -> int:
    from seqsched.build import resolve_model
    from seqsched.cli import check_output
    from seqsched.engine.config import EngineConfig

    check_output(args.output)
    config = EngineConfig(
        model=str(resolve_model(args.model)), device=args.device, dtype=args.dtype, num_threads=resolve_threads(args)
    )
    batch_sizes = int_list(args.batch_sizes, "--batch-sizes")
    context_lens = int_list(args.context_lens, "--context-lens")
    from seqsched.engine.calibrate import calibrate

    print(f"{'kind':8} {'batch':>5} {'context':>7} {'ms':>9}")

    def show(s: Any) -> None:
        print(f"{s.kind:8} {s.batch_size:5d} {s.context_len:7d} {1000 * s.seconds:9.3f}", flush=True)

    model = calibrate(config, batch_sizes, context_lens, args.num_steps, args.repeats, progress=show)
    prov = model.provenance
    error = prov["fit_median_rel_error"]
    if error > args.max_error and not args.force:
        print(
            f"seqsched calibrate: error: the fit's median error is {error:.0%}, above --max-error "
            f"{args.max_error:.0%}; not saved. Step times this irregular usually mean other work shares the "
            f"machine: run again when it is quiet, with --threads 1, or save anyway with --force",
            file=sys.stderr,
        )
        return EXIT_BAD_FIT
    model.save(args.output)
    print(
        f"decode step = {model.a * 1e3:.4g} ms + {model.b * 1e6:.4g} us x batch + "
        f"{model.c * 1e9:.4g} ns x batch x context; prefill = {model.d * 1e3:.4g} ms + "
        f"{model.e * 1e6:.4g} us x batch x prompt\n"
        f"fit: median |error| {prov['fit_median_rel_error']:.1%}, max {prov['fit_max_rel_error']:.1%} "
        f"on {prov['device']}, {prov['dtype']}\nwrote {args.output}"
    )
    return 0
