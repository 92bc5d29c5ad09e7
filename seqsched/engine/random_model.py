"""Randomly initialised Llama models of a chosen shape, for trace replay.

A decode step costs the same whatever the weights' values, so replaying recorded lengths
on a random model of a real model's shape measures that model's real compute cost.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass(frozen=True)
class Shape:
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    vocab_size: int
    max_position_embeddings: int

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be a multiple of "
                f"num_attention_heads ({self.num_attention_heads})"
            )

    def num_parameters(self) -> int:
        """Parameters of the Llama this shape builds (the embedding tied below 16k tokens)."""
        h, i, layers, v = self.hidden_size, self.intermediate_size, self.num_hidden_layers, self.vocab_size
        per_layer = 4 * h * h + 3 * h * i + 2 * h
        embeddings = v * h * (1 if v < 16000 else 2)
        return layers * per_layer + embeddings + h


SHAPES: dict[str, Shape] = {
    # Vicuna-7B v1.1 (LLaMA-7B): the paper's model.
    "vicuna-7b": Shape(4096, 11008, 32, 32, 32000, 2048),
    # Small CPU shapes; parameter counts include the (tied) embedding.
    "cpu-6m": Shape(320, 864, 4, 5, 4096, 2048),
    "cpu-8m": Shape(256, 768, 8, 8, 4096, 2048),
    "cpu-20m": Shape(384, 1024, 10, 6, 4096, 2048),
    "cpu-27m": Shape(512, 1376, 8, 8, 4096, 2048),  # head size 64, which vLLM's CPU attention supports
}


def resolve_shape(shape: str | Shape) -> Shape:
    if isinstance(shape, Shape):
        return shape
    if shape not in SHAPES:
        raise ValueError(f"shape ({shape!r}) must be one of {', '.join(SHAPES)}")
    return SHAPES[shape]


def make_random_model(
    shape: str | Shape,
    tokenizer_dir: str | Path,
    out: str | Path,
    seed: int = 0,
    dtype: str = "float32",
    overwrite: bool = False,
) -> int:
    """Write a random Llama of ``shape`` with the tokenizer from ``tokenizer_dir`` to ``out``
    in ``dtype`` (built in it, so a 7B shape in bfloat16 needs about 14 GB, not 27);
    return its parameter count. The tokenizer's vocabulary must fit the model's. An
    existing ``out`` is replaced only with ``overwrite``."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    if dtype not in DTYPE_BYTES:
        raise ValueError(f"dtype ({dtype!r}) must be one of {', '.join(DTYPE_BYTES)}")
    shape = resolve_shape(shape)
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty: choose another --out, or --overwrite to replace it")
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    if len(tokenizer) > shape.vocab_size:
        raise ValueError(f"tokenizer has {len(tokenizer)} tokens; the shape's vocab_size is {shape.vocab_size}")
    torch.manual_seed(seed)
    config = LlamaConfig(
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads,
        vocab_size=shape.vocab_size,
        max_position_embeddings=shape.max_position_embeddings,
        tie_word_embeddings=shape.vocab_size < 16000,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    default = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, dtype))
    try:
        model = LlamaForCausalLM(config)  # type: ignore[no-untyped-call]
    finally:
        torch.set_default_dtype(default)
    if out.exists():
        shutil.rmtree(out)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return sum(p.numel() for p in model.parameters())
