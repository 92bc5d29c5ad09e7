"""Typed, validated configuration for the Hugging Face engine. No torch here, so the CLI
can build and check one before paying for the torch import."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

DType = Literal["auto", "float32", "bfloat16", "float16"]
DTYPES: tuple[DType, ...] = ("auto", "float32", "bfloat16", "float16")
_DEVICE = re.compile(r"^(auto|cpu|mps|(cuda|xpu|npu)(:\d+)?)$")


@dataclass(frozen=True)
class EngineConfig:
    """How to load and run a causal LM with ``transformers``.

    - ``model``: a local checkpoint directory or a hub id; ``tokenizer`` defaults to it.
    - ``device``: ``auto`` picks ``cuda`` when available, else ``cpu``.
    - ``dtype``: ``auto`` is float32 on CPU (half precision is slow there and changes
      greedy outputs), and the checkpoint's own dtype on an accelerator.
    - ``chat_template``: wrap each request in the tokenizer's chat template (a ``prompt``
      becomes a single user message) when the tokenizer has one. Off: ``prompt`` is
      tokenized as is, and ``messages`` contents are joined with newlines.
    - ``attn_implementation``: passed to ``from_pretrained`` (``eager``, ``sdpa``, ...);
      ``None`` lets ``transformers`` choose.
    - ``num_threads``: torch's CPU threads (``None``: torch's default). On a shared CPU,
      fewer threads than cores is often much faster for small models.
    - ``seed``: sampled rows without their own ``SamplingParams.seed`` use
      ``seed + request.index``, so every run of a request draws the same tokens.
    """

    model: str
    tokenizer: str | None = None
    device: str = "auto"
    dtype: DType = "auto"
    trust_remote_code: bool = False
    chat_template: bool = True
    attn_implementation: str | None = None
    num_threads: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.model or not self.model.strip():
            raise ValueError(f"model ({self.model!r}) must be a local directory or a hub id")
        if self.tokenizer is not None and not self.tokenizer.strip():
            raise ValueError(f"tokenizer ({self.tokenizer!r}) must be a local directory or a hub id")
        if not _DEVICE.match(self.device):
            raise ValueError(
                f"device ({self.device!r}) must be 'auto', 'cpu', 'mps', or 'cuda'/'xpu'/'npu' "
                "with an optional ':index'"
            )
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype ({self.dtype!r}) must be one of {', '.join(DTYPES)}")
        if self.attn_implementation is not None and not self.attn_implementation.strip():
            raise ValueError(f"attn_implementation ({self.attn_implementation!r}) must be a name or None")
        if self.num_threads is not None and self.num_threads < 1:
            raise ValueError(f"num_threads ({self.num_threads}) must be >= 1")
        if self.seed < 0:
            raise ValueError(f"seed ({self.seed}) must be >= 0")

    @property
    def tokenizer_path(self) -> str:
        return self.tokenizer if self.tokenizer is not None else self.model


@dataclass(frozen=True)
class VLLMConfig:
    """vLLM's offline engine, beside an :class:`EngineConfig` (model, dtype, seed, chat
    template and threads come from there).

    - ``max_num_seqs``: requests running at once (vLLM's own limit).
    - ``num_gpu_blocks``: KV-cache blocks (vLLM's ``num_gpu_blocks_override``; on the
      CPU backend too). ``None``: vLLM sizes the cache from ``gpu_memory_utilization``.
      A small value makes a KV-bound engine, where running requests outgrow the cache.
    - ``block_size``: tokens per KV block (``None``: vLLM's default; the CPU attention
      backend needs a multiple of 32).
    - ``max_model_len``: the context vLLM serves (``None``: the model's).
    - ``kv_cache_gib``: KV-cache memory. ``None``: on a GPU, what
      ``gpu_memory_utilization`` leaves; on a CPU, 1 GiB (vLLM's own CPU default sizes
      it from the RAM share, and a second engine in the same process then cannot start).
    - ``max_num_batched_tokens``: the token budget of one step (prefill chunks and
      decodes together). ``None``: vLLM's default (4096 offline on a CPU, 8192 on an A100).
    - ``gpu_memory_utilization``: on a GPU, its memory share for weights and cache; on
      the CPU backend, the share of RAM that must be free at start. ``None``: 0.9 on a
      GPU, 0.1 on a CPU.
    """

    max_num_seqs: int = 256
    num_gpu_blocks: int | None = None
    block_size: int | None = None
    max_model_len: int | None = None
    kv_cache_gib: float | None = None
    gpu_memory_utilization: float | None = None
    max_num_batched_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.max_num_batched_tokens is not None and self.max_num_batched_tokens < self.max_num_seqs:
            raise ValueError(
                f"max_num_batched_tokens ({self.max_num_batched_tokens}) must be >= max_num_seqs ({self.max_num_seqs})"
            )
        if self.kv_cache_gib is not None and not self.kv_cache_gib > 0:
            raise ValueError(f"kv_cache_gib ({self.kv_cache_gib}) must be > 0")
        if self.max_num_seqs < 1:
            raise ValueError(f"max_num_seqs ({self.max_num_seqs}) must be >= 1")
        if self.num_gpu_blocks is not None and self.num_gpu_blocks < 1:
            raise ValueError(f"num_gpu_blocks ({self.num_gpu_blocks}) must be >= 1")
        if self.block_size is not None and self.block_size < 1:
            raise ValueError(f"block_size ({self.block_size}) must be >= 1")
        if self.max_model_len is not None and self.max_model_len < 2:
            raise ValueError(f"max_model_len ({self.max_model_len}) must be >= 2")
        if self.gpu_memory_utilization is not None and not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(f"gpu_memory_utilization ({self.gpu_memory_utilization}) must be in (0, 1]")
