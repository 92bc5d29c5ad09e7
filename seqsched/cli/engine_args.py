"""Engine options shared by `run` and `bench`: which engine, how to load the model, and
vLLM's sizes. Builds config dataclasses only; nothing here imports torch."""

from __future__ import annotations

import argparse
from typing import Any

from seqsched.config import ENGINE_KINDS
from seqsched.engine.config import DTYPES, EngineConfig, VLLMConfig


def add_engine_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--engine",
        choices=ENGINE_KINDS,
        default="hf",
        help="hf: static batching with transformers' generate (the paper's setting); continuous: "
        "transformers' continuous batching; vllm: vLLM's offline engine (install it with "
        "`bash scripts/install.sh vllm`)",
    )
    p.add_argument("--model", help="HF model directory or hub id (default: the built-in model)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")
    p.add_argument(
        "--dtype",
        default="auto",
        choices=DTYPES,
        help="auto: float32 on a CPU, the checkpoint's dtype on an accelerator",
    )
    add_threads_arg(p)
    v = p.add_argument_group("continuous engines (vllm, continuous)")
    v.add_argument("--max-num-seqs", type=int, default=256, help="requests running at once")
    v.add_argument(
        "--num-gpu-blocks",
        type=int,
        default=None,
        help="KV-cache blocks (vLLM's num_gpu_blocks_override, CPU too; transformers' pages): a small "
        "value makes a KV-bound engine (default: sized by the engine)",
    )
    v.add_argument("--block-size", type=int, default=None, help="vllm: tokens per KV block (default: vLLM's)")
    v.add_argument("--max-model-len", type=int, default=None, help="vllm: context served (default: the model's)")
    v.add_argument(
        "--max-num-batched-tokens", type=int, default=None, help="vllm: token budget of a step (default: vLLM's)"
    )
    v.add_argument("--kv-cache-gib", type=float, default=None, help="vllm: KV-cache memory (default: 1 on a CPU)")


def add_threads_arg(p: Any) -> None:
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads. Default: one per core the load average leaves free (at least 1), "
        "printed at start; on a shared machine, 1",
    )


def resolve_threads(args: argparse.Namespace) -> int:
    """Choose the thread count once per command, say it, and keep the choice on ``args``."""
    import sys

    from seqsched.threads import choose_threads

    choice = getattr(args, "thread_choice", None)
    if choice is None:
        choice = choose_threads(args.threads)
        args.thread_choice = choice
        print(f"seqsched {args.command}: {choice.describe()}", file=sys.stderr)
    return int(choice.threads)


def add_dry_run_args(p: argparse.ArgumentParser, what: str) -> None:
    """`--dry-run` and its cost model, as `run` and `bench` take them."""
    p.add_argument(
        "--dry-run",
        action="store_true",
        help=f"print {what} and its time by --cost-model, then stop: nothing is generated or written "
        "(the model loads only for a predictor that reads it)",
    )
    p.add_argument(
        "--cost-model",
        default="cpu-default-model",
        help="--dry-run: cost model JSON from `seqsched calibrate`, or a built-in (cpu-default-model, a100-vicuna-7b)",
    )


def add_policy_args(p: argparse.ArgumentParser, policy_default: str | None) -> None:
    """`run`'s choice of policy and admission, and the plan options `bench` shares."""
    g = p.add_argument_group("stream plan (continuous engines)")
    g.add_argument(
        "--policy",
        choices=["fcfs", "sjf", "ljf"],
        default=policy_default,
        help="admission order: fcfs (input order), sjf (shortest predicted first: mean latency), ljf "
        "(longest predicted first: makespan) (default: sjf with a predictor, else fcfs)",
    )
    g.add_argument(
        "--admission",
        choices=["none", "kv"],
        default="none",
        help="kv: admit a request only while prompt + margin x predicted output of the running ones fit the KV cache",
    )
    add_plan_args(g)


def add_plan_args(g: Any) -> None:
    """Options of every stream plan: the KV admission margin and the aging bound."""
    g.add_argument("--kv-margin", type=float, default=1.0, help="kv admission margin")
    g.add_argument(
        "--max-bypass",
        type=int,
        default=1024,
        help="aging bound of sjf/ljf: no request is overtaken by more than this many later ones (looser than "
        "serve's 128: a job's requests all arrive at once and it is judged by its makespan and mean, not by "
        "each request's wait)",
    )


def engine_config(args: argparse.Namespace) -> EngineConfig:
    from seqsched.build import resolve_model

    return EngineConfig(
        model=str(resolve_model(args.model)), device=args.device, dtype=args.dtype, num_threads=resolve_threads(args)
    )


def vllm_config(args: argparse.Namespace) -> VLLMConfig:
    return VLLMConfig(
        max_num_seqs=args.max_num_seqs,
        num_gpu_blocks=args.num_gpu_blocks,
        block_size=args.block_size,
        max_model_len=args.max_model_len,
        kv_cache_gib=args.kv_cache_gib,
        max_num_batched_tokens=args.max_num_batched_tokens,
    )
