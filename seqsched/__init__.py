"""seqsched: response length perception and sequence scheduling for batch LLM inference.

``seqsched.run(...)`` is imported lazily, so ``import seqsched`` stays free of torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["run"]


def __getattr__(name: str) -> Any:
    if name == "run":
        from seqsched.api import run

        return run
    raise AttributeError(f"module 'seqsched' has no attribute {name!r}")
