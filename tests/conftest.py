"""Shared fixtures: the tiny random Llama on disk, and an HF engine loaded from it.

torch is imported inside the fixtures, never at module level, so the scheduler and
simulator tests (and any check that ``seqsched`` stays torch-free) run without it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from seqsched.engine.hf import HFEngine

# Greedy runs of 20 prompts then end after 3 to 64 tokens (a few never reach EOS).
TINY_EOS_SCALE = 2.5


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A saved tiny Llama + byte-level BPE tokenizer with a chat template (see tiny_model.py)."""
    import torch

    from tests.tiny_model import save_tiny_model

    # A tiny model is dominated by per-op overhead; threads only fight over the shared cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield save_tiny_model(tmp_path_factory.mktemp("tiny-llama"), seed=0, eos_scale=TINY_EOS_SCALE)
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_engine(tiny_model_dir: Path) -> HFEngine:
    """An ``HFEngine`` on the tiny model, float32 on CPU. Treat it as read-only."""
    from seqsched.engine.config import EngineConfig
    from seqsched.engine.hf import HFEngine

    return HFEngine(EngineConfig(str(tiny_model_dir), device="cpu", dtype="float32"))


@pytest.fixture(scope="session")
def reference(tiny_engine: HFEngine) -> list[list[int]]:
    """Greedy tokens of each of ``tiny_requests()``, generated alone with plain ``generate``."""
    from tests.tiny_model import generate_alone, tiny_requests

    requests = tiny_requests()
    tiny_engine.prepare(requests)
    return [generate_alone(tiny_engine.model, r) for r in requests]
