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
