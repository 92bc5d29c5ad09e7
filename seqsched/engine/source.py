"""Checks on a model's source and device that need no model loaded (and no torch, unless
an accelerator is named): a job runs them before it creates any file, so a typo costs a
second, not a load and a journal that blocks the corrected command."""

from __future__ import annotations

from pathlib import Path


class ModelLoadError(OSError):
    """A model or tokenizer could not be loaded. The message says which and why."""


def check_source(source: str, what: str) -> None:
    """Fail fast on a local path that is not a checkpoint, before transformers tries the hub."""
    path = Path(source).expanduser()
    if path.is_dir():
        if what == "model" and not (path / "config.json").is_file():
            raise ModelLoadError(f"{what} path {source!r} is a directory without a config.json")
        return
    if path.exists():
        raise ModelLoadError(f"{what} path {source!r} is a file; expected a checkpoint directory")
    # A hub id is 'name' or 'org/name'; anything else with a separator is a missing path.
    if source.startswith(("/", ".", "~")) or source.count("/") > 1 or "\\" in source:
        raise ModelLoadError(f"{what} path {source!r} does not exist")


def check_hub_model(source: str, timeout: float = 10.0) -> None:
    """For a hub id ``org/name`` that is not a local directory: in the local cache, or found
    on the hub within ``timeout`` seconds; else refused at once (transformers' own retries
    take ~1 min to say the same). Offline mode (``HF_HUB_OFFLINE``) accepts only the cache.
    A bare name (``gpt2``) is left to the loader: it may name a legacy hub model or an
    engine's own model (a stand-in in tests)."""
    import os

    if Path(source).expanduser().exists() or source.count("/") != 1:
        return
    try:
        import huggingface_hub as hub
    except ImportError:
        return
    if isinstance(hub.try_to_load_from_cache(source, "config.json"), str):
        return
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        raise ModelLoadError(f"model {source!r} is not in the local hub cache, and HF_HUB_OFFLINE is set")
    try:
        hub.model_info(source, timeout=timeout)
    except Exception as e:  # not found, gated, no network: all mean it cannot load now
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(
            f"model {source!r} is not a local directory, not in the hub cache, and not found on the hub ({first})"
        ) from None


def check_device(device: str) -> None:
    """Refuse an accelerator this machine does not have, with what it does have."""
    kind, _, index = device.partition(":")
    if kind not in ("cuda", "mps"):
        return  # auto and cpu always work; xpu/npu are left to their own runtimes
    import torch

    if kind == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"--device {device}: no Apple GPU (MPS) here; use --device cpu or auto")
        return
    if not torch.cuda.is_available():
        raise ValueError(f"--device {device}: no CUDA device here (torch.cuda.is_available() is False); "
                         "use --device cpu or auto")  # fmt: skip
    count = torch.cuda.device_count()
    if index and int(index) >= count:
        raise ValueError(f"--device {device}: this machine has {count} CUDA device(s), cuda:0..cuda:{count - 1}")
