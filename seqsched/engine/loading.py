"""Loading a causal LM and its tokenizer, with errors that name what is missing."""

from __future__ import annotations

import pickle
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from seqsched.engine.config import EngineConfig
from seqsched.engine.source import ModelLoadError, check_source

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_model(config: EngineConfig) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load ``config.model`` (in eval mode, on its device) and its tokenizer."""
    device = resolve_device(config.device)
    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)
    check_source(config.model, "model")
    check_source(config.tokenizer_path, "tokenizer")
    tokenizer = _load(AutoTokenizer, config.tokenizer_path, "tokenizer", trust_remote_code=config.trust_remote_code)
    kwargs: dict[str, Any] = {
        "dtype": _dtype(config.dtype, device),
        "trust_remote_code": config.trust_remote_code,
    }
    if config.attn_implementation is not None:
        kwargs["attn_implementation"] = config.attn_implementation
    model = _load(AutoModelForCausalLM, config.model, "model", **kwargs)
    return model.to(device).eval(), tokenizer


def load_tokenizer(source: str, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """A tokenizer alone (a model directory or hub id), with the same errors as a model's."""
    check_source(source, "tokenizer")
    tokenizer: PreTrainedTokenizerBase = _load(AutoTokenizer, source, "tokenizer", trust_remote_code=trust_remote_code)
    return tokenizer


def _dtype(name: str, device: torch.device) -> torch.dtype | str:
    if name == "auto":
        # Half precision on CPU is slow and changes greedy outputs; accelerators keep the checkpoint's.
        return torch.float32 if device.type == "cpu" else "auto"
    return _DTYPES[name]


def _load(auto_class: Any, source: str, what: str, **kwargs: Any) -> Any:
    try:
        return auto_class.from_pretrained(source, **kwargs)
    except pickle.UnpicklingError as e:  # torch.load(weights_only=True) met more than tensors
        refused = str(e).split("WeightsUnpickler error: ")[-1].split(".")[0]
        raise ModelLoadError(
            f"cannot load {what} {source!r}: its pickled weights (.bin) hold more than tensors ({refused}), which "
            "could run code, so they are not loaded; use a checkpoint in safetensors"
        ) from None
    except (OSError, ValueError) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(
            f"cannot load {what} {source!r}: not a local checkpoint directory, and not loadable "
            f"as a hub id ({first_line})"
        ) from None
    except Exception as e:  # a torn or corrupt file (safetensors' own error type, among others)
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ModelLoadError(
            f"cannot load {what} {source!r}: its files do not load ({type(e).__name__}: {first_line})"
        ) from None
