"""`seqsched calibrate`: measure a model's prefill and decode step times over a grid and
fit the step cost model that `seqsched simulate --cost-model` reads."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from seqsched.cli.help import HelpFormatter


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "calibrate",
        help="measure a model's step times and fit the simulator's cost model",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    p.add_argument("--model", help="HF model directory or hub id (default: the built-in model)")
    p.add_argument("--out", type=Path, required=True, help="cost model JSON to write")
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
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
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
    from seqsched.api import resolve_model
    from seqsched.engine.config import EngineConfig

    config = EngineConfig(
        model=str(resolve_model(args.model)), device=args.device, dtype=args.dtype, num_threads=args.threads
    )
    batch_sizes = int_list(args.batch_sizes, "--batch-sizes")
    context_lens = int_list(args.context_lens, "--context-lens")
    from seqsched.engine.calibrate import calibrate

    print(f"{'kind':8} {'batch':>5} {'context':>7} {'ms':>9}")

    def show(s: Any) -> None:
        print(f"{s.kind:8} {s.batch_size:5d} {s.context_len:7d} {1000 * s.seconds:9.3f}", flush=True)

    model = calibrate(config, batch_sizes, context_lens, args.num_steps, args.repeats, progress=show)
    model.save(args.out)
    prov = model.provenance
    print(
        f"decode step = {model.a * 1e3:.4g} ms + {model.b * 1e6:.4g} us x batch + "
        f"{model.c * 1e9:.4g} ns x batch x context; prefill = {model.d * 1e3:.4g} ms + "
        f"{model.e * 1e6:.4g} us x batch x prompt\n"
        f"fit: median |error| {prov['fit_median_rel_error']:.1%}, max {prov['fit_max_rel_error']:.1%} "
        f"on {prov['device']}, {prov['dtype']}\nwrote {args.out}"
    )
    return 0
