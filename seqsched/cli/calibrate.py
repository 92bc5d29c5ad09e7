"""`seqsched calibrate`: measure a model's step times and fit the cost model that
`seqsched simulate --cost-model` reads.

- ``--engine hf`` (default): prefill and decode steps of HF ``generate`` on static
  batches over a grid; the static-batch simulator's cost model.
- ``--engine vllm``: vLLM's own steps (each step's shape read from vLLM's scheduler,
  its wall time measured) while waves of requests run over the grid; the continuous
  simulator's step cost (``continuous...`` strategies and ``--arrivals``).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from seqsched.cli.engine_args import add_threads_arg, resolve_threads
from seqsched.cli.help import HelpFormatter
from seqsched.engine.config import DTYPES

EXIT_BAD_FIT = 4


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "calibrate",
        help="measure a model's step times and fit the simulator's cost model",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    p.add_argument("--engine", choices=["hf", "vllm"], default="hf", help="whose steps to time")
    p.add_argument("--model", help="HF model directory or hub id (default: the built-in model)")
    p.add_argument("-o", "--output", "--out", dest="output", type=Path, required=True, help="cost model JSON to write")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")
    p.add_argument("--dtype", default="auto", choices=DTYPES, help="auto: float32 on a CPU")
    p.add_argument("--batch-sizes", default="1,4,16,64", help="comma-separated")
    p.add_argument(
        "--context-lens",
        default="16,64,128",
        help="prompt lengths, comma-separated "
        "(default: %(default)s); keep them + --num-steps within the model's context",
    )
    p.add_argument("--num-steps", type=int, default=None, help="decode steps timed per run (default: hf 16, vllm 32)")
    p.add_argument(
        "--repeats", type=int, default=None, help="runs per grid point; medians are kept (default: hf 3, vllm 2)"
    )
    add_threads_arg(p)
    v = p.add_argument_group("--engine vllm: the engine timed (the simulator is then run with the same settings)")
    v.add_argument(
        "--trace",
        type=Path,
        help="time a real workload instead of the grid: this trace's prompts (tokenized with the chat template) with "
        "its output lengths forced, run once at each --batch-sizes concurrency",
    )
    v.add_argument("--split", help="--trace: only records of this split")
    v.add_argument("--sample", type=int, default=None, help="--trace: draw N records")
    v.add_argument("--seed", type=int, default=42, help="--trace: seed of the --sample draw")
    v.add_argument("--max-num-seqs", type=int, default=None, help="default: the largest batch size")
    v.add_argument("--max-num-batched-tokens", type=int, default=None, help="default: vLLM's")
    v.add_argument("--num-gpu-blocks", type=int, default=None, help="KV-cache blocks (default: vLLM's sizing)")
    v.add_argument("--block-size", type=int, default=None, help="default: vLLM's")
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
    from seqsched.cli import UsageError, check_output
    from seqsched.engine.config import EngineConfig

    check_output(args.output)
    batch_sizes = int_list(args.batch_sizes, "--batch-sizes")
    context_lens = int_list(args.context_lens, "--context-lens")
    if min(batch_sizes) < 1 or min(context_lens) < 1:
        raise ValueError(f"--batch-sizes ({batch_sizes}) and --context-lens ({context_lens}) must be >= 1")
    if args.engine == "hf":
        given = [f for f in ("max_num_seqs", "max_num_batched_tokens", "num_gpu_blocks", "block_size", "trace", "split",
                                "sample")
                 if getattr(args, f) is not None]  # fmt: skip
        if given:
            raise UsageError(f"--{given[0].replace('_', '-')}: only --engine vllm uses it")
    config = EngineConfig(
        model=str(resolve_model(args.model)), device=args.device, dtype=args.dtype, num_threads=resolve_threads(args)
    )
    if args.engine == "vllm":
        return _vllm(args, config, batch_sizes, context_lens)
    from seqsched.simulate.calibrate import calibrate

    print(f"{'kind':8} {'batch':>5} {'context':>7} {'ms':>9}")

    def show(s: Any) -> None:
        print(f"{s.kind:8} {s.batch_size:5d} {s.context_len:7d} {1000 * s.seconds:9.3f}", flush=True)

    steps, repeats = args.num_steps or 16, args.repeats or 3
    model = calibrate(config, batch_sizes, context_lens, steps, repeats, progress=show)
    prov = model.provenance
    return _save(
        model,
        args,
        f"decode step = {model.a * 1e3:.4g} ms + {model.b * 1e6:.4g} us x batch + "
        f"{model.c * 1e9:.4g} ns x batch x context; prefill = {model.d * 1e3:.4g} ms + "
        f"{model.e * 1e6:.4g} us x batch x prompt\n"
        f"fit: median |error| {prov['fit_median_rel_error']:.1%}, max {prov['fit_max_rel_error']:.1%} "
        f"on {prov['device']}, {prov['dtype']}",
    )


def _vllm(args: argparse.Namespace, config: Any, batch_sizes: list[int], prompt_lens: list[int]) -> int:
    from seqsched.engine.config import VLLMConfig
    from seqsched.engine.vllm_engine import VLLMEngine
    from seqsched.simulate.calibrate_vllm import fit, measure, measure_workload, provenance

    steps, repeats = args.num_steps or 32, args.repeats or 2
    if steps < 2 or repeats < 1:
        raise ValueError(f"--num-steps ({steps}) must be >= 2 and --repeats ({repeats}) >= 1")
    workload = _trace_workload(args) if args.trace is not None else None
    vllm_config = VLLMConfig(
        max_num_seqs=args.max_num_seqs or max(batch_sizes) + (0 if workload else max(batch_sizes) // 2),
        block_size=args.block_size,
        num_gpu_blocks=args.num_gpu_blocks,
        max_model_len=None if workload else max(prompt_lens) + steps + 1,
        max_num_batched_tokens=args.max_num_batched_tokens,
    )
    engine = VLLMEngine(config, vllm_config)
    print(f"{'batch':>5} {'prompt' if workload is None else 'requests':>8} {'steps':>5} {'median ms':>9}")

    def show(batch: int, prompt: int, timed: list[Any]) -> None:
        ms = sorted(1000 * s.seconds for s in timed)
        print(f"{batch:5d} {prompt:8d} {len(timed):5d} {ms[len(ms) // 2]:9.3f}", flush=True)

    if workload is None:
        timed, settings = measure(engine.llm, batch_sizes, prompt_lens, steps, repeats, progress=show)
        what: dict[str, Any] = {"batch_sizes": batch_sizes, "prompt_lens": prompt_lens, "num_steps": steps,
                                "repeats": repeats}  # fmt: skip
    else:
        engine.prepare(workload)
        bad = [r for r in workload if r.status.is_finished]
        if bad:
            raise ValueError(f"{args.trace}: request {bad[0].request_id!r}: {bad[0].error}")
        prompts = [r.prompt_token_ids or [] for r in workload]
        outputs = [int(r.target_len or 1) for r in workload]
        timed, settings = measure_workload(engine.llm, prompts, outputs, batch_sizes, progress=show)
        what = {"trace": str(args.trace), "split": args.split, "sample": args.sample, "seed": args.seed,
                "concurrency": batch_sizes}  # fmt: skip
    cost = fit(timed, provenance(config.model, str(args.dtype), config.num_threads, settings))
    cost.provenance["grid"] = what
    prov = cost.provenance
    return _save(
        cost,
        args,
        f"step = {cost.a * 1e3:.4g} ms + {cost.t * 1e6:.4g} us x token + {cost.s * 1e6:.4g} us x request + "
        f"{cost.c * 1e9:.4g} ns x decode context + {cost.p * 1e9:.4g} ns x prefill attention\n"
        f"fit: median |error| {prov['fit_median_rel_error']:.1%}, max {prov['fit_max_rel_error']:.1%}, "
        f"total {prov['fit_total_rel_error']:+.1%} over {prov['num_steps_timed']} steps; max_num_batched_tokens "
        f"{prov['max_num_batched_tokens']}, block_size {prov['block_size']}",
    )


def _trace_workload(args: argparse.Namespace) -> list[Any]:
    from seqsched.data.traces import read_trace, trace_requests

    trace = read_trace(args.trace, split=args.split, sample_size=args.sample, seed=args.seed)
    if not len(trace):
        raise ValueError(f"{args.trace}: no records to time")
    # a replayed request asks for exactly its trace length
    return [dataclasses.replace(r, max_new_tokens=r.target_len or 1) for r in trace_requests(trace)]


def _save(model: Any, args: argparse.Namespace, summary: str) -> int:
    """Save a fit whose error is acceptable (or forced), and say what it is."""
    if not _fit_ok(model.provenance, args):
        return EXIT_BAD_FIT
    model.save(args.output)
    print(f"{summary}\nwrote {args.output}")
    return 0


def _fit_ok(prov: dict[str, Any], args: argparse.Namespace) -> bool:
    error = prov["fit_median_rel_error"]
    if error > args.max_error and not args.force:
        print(
            f"seqsched calibrate: error: the fit's median error is {error:.0%}, above --max-error "
            f"{args.max_error:.0%}; not saved. Step times this irregular usually mean other work shares the "
            f"machine: run again when it is quiet, with --threads 1, or save anyway with --force",
            file=sys.stderr,
        )
        return False
    return True
