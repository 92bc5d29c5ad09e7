"""What the LLM-based predictors (PiA, LoRA, probe) share: render a user turn with the
chat template, left-pad a batch, greedy-generate a few tokens, read last hidden states,
and parse a number out of generated text.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import GenerationConfig

from seqsched.request import Request

# "1,200" / "1200" / "150"; a range "100-150", "100 to 150", "100~150" is read as its mean.
_NUMBER = r"\d{1,3}(?:,\d{3})+(?!\d)|\d+"
_RANGE = re.compile(rf"({_NUMBER})\s*(?:-|–|—|~|to)\s*({_NUMBER})")
_SINGLE = re.compile(_NUMBER)


def parse_length(text: str) -> int | None:
    """The first number in ``text`` (a range gives its rounded mean), or None.

    ``"about 200 tokens"`` -> 200, ``"100-150"`` -> 125, ``"1,200"`` -> 1200.
    """
    single = _SINGLE.search(text)
    if single is None:
        return None
    ranged = _RANGE.match(text, single.start())
    if ranged is not None:
        low, high = (int(g.replace(",", "")) for g in ranged.groups())
        return round((low + high) / 2)
    return int(single.group().replace(",", ""))


Messages = list[dict[str, str]]


def user_turn(text: str) -> Messages:
    return [{"role": "user", "content": text}]


def with_suffix(request: Request, suffix: str) -> Messages:
    """The request's conversation as the engine serves it, with ``suffix`` appended to
    its last user turn (a ``prompt`` is one user turn)."""
    if request.messages is None:
        return user_turn((request.prompt or "") + suffix)
    messages = [dict(m) for m in request.messages]
    users = [i for i, m in enumerate(messages) if m.get("role") == "user"]
    last = users[-1] if users else len(messages) - 1
    messages[last]["content"] = messages[last].get("content", "") + suffix
    return messages


def encode(tokenizer: Any, messages: Messages) -> list[int]:
    """Token ids of a conversation, ready for the assistant's answer, as ``HFEngine``
    encodes it. Without a chat template the contents are joined by newlines."""
    if getattr(tokenizer, "chat_template", None):
        encoded = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
        return list(encoded["input_ids"])
    return list(tokenizer("\n".join(m.get("content", "") for m in messages))["input_ids"])


def pad_id(tokenizer: Any) -> int:
    pid = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    assert pid is not None, "the tokenizer has neither a pad nor an EOS token"
    return int(pid)


def left_pad(rows: Sequence[Sequence[int]], pad: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids and attention_mask, every row right-aligned so that its last token is at -1."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        mask[i, width - len(row) :] = 1
    return ids.to(device), mask.to(device)


def position_ids(mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding, as ``generate`` computes them: a row's value
    then does not depend on how much its batch padded it."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def greedy_completions(
    model: Any, tokenizer: Any, prompts: Sequence[list[int]], max_new_tokens: int, batch_size: int
) -> list[str]:
    """Greedy continuations of token-id prompts (left-padded batches), decoded as text."""
    config = GenerationConfig(  # type: ignore[no-untyped-call]
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=pad_id(tokenizer),
        eos_token_id=model.generation_config.eos_token_id,
        bos_token_id=model.generation_config.bos_token_id,
    )
    was_training = model.training
    model.eval()
    texts: list[str] = []
    try:
        for rows in chunks(prompts, batch_size):
            ids, mask = left_pad(rows, pad_id(tokenizer), device_of(model))
            out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
            new = out[:, ids.shape[1] :]
            texts.extend(tokenizer.decode(row, skip_special_tokens=True) for row in new)
    finally:
        model.train(was_training)
    return texts


@torch.no_grad()
def last_token_states(
    model: Any, tokenizer: Any, prompts: Sequence[list[int]], batch_size: int, num_layers: int = 1
) -> np.ndarray:
    """One prefill per prompt: the last prompt token's hidden state, averaged over the
    last ``num_layers`` layers (1: the final, normed layer). Shape (n, hidden)."""
    was_training = model.training
    model.eval()
    features: list[np.ndarray] = []
    try:
        for rows in chunks(prompts, batch_size):
            ids, mask = left_pad(rows, pad_id(tokenizer), device_of(model))
            out = model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=position_ids(mask),
                output_hidden_states=True,
                use_cache=False,
            )
            layers = torch.stack(out.hidden_states[-num_layers:])  # (k, batch, seq, hidden)
            features.append(layers[:, :, -1, :].float().mean(0).cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(features, axis=0)


def model_path(model: Any, saved_in: str | Path) -> str | None:
    """Where ``model`` was loaded from, for the manifest of a predictor saved in
    ``saved_in``; None for an in-memory model. A local model is recorded relative to the
    predictor's directory, so the two can move together (e.g. inside a package)."""
    path = getattr(model, "name_or_path", None) or getattr(model.config, "_name_or_path", None)
    if not path:
        return None
    local = Path(path).expanduser()
    if not local.exists():
        return str(path)  # a hub id stays as is
    return os.path.relpath(local.resolve(), Path(saved_in).resolve())


def resolve_model_path(model_path: str | None, saved_in: str | Path) -> str | None:
    """The inverse of :func:`model_path`: relative paths are relative to ``saved_in``."""
    if model_path is None:
        return None
    candidate = Path(saved_in) / model_path
    return str(candidate.resolve()) if not Path(model_path).is_absolute() and candidate.exists() else model_path


def load_base(model_path: str | None, model: Any = None, tokenizer: Any = None) -> tuple[Any, Any]:
    """The given model and tokenizer, or those loaded from ``model_path`` the way the
    engine loads them (device and dtype chosen alike)."""
    if model is not None and tokenizer is not None:
        return model, tokenizer
    if model_path is None:
        raise ValueError("this predictor was saved without a model path: pass model= and tokenizer=")
    from seqsched.engine.config import EngineConfig
    from seqsched.engine.loading import load_model

    loaded_model, loaded_tokenizer = load_model(EngineConfig(model=model_path))
    return (model if model is not None else loaded_model), (tokenizer if tokenizer is not None else loaded_tokenizer)
