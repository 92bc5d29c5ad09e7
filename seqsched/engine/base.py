"""The interface every static-batch engine offers: run one micro-batch."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass

from seqsched.request import Outcome, Request
from seqsched.schedule import MicroBatch

WARMUP_TOKENS = 4  # decode steps of an engine's own warm-up run


class OutOfMemory(RuntimeError):
    """An engine ran out of memory on a micro-batch (CUDA OOM, a failed CPU allocation).
    The pipeline halves the micro-batch and tries again."""


@dataclass
class BatchRun:
    """One micro-batch's outcomes (in the batch's row order) and the seconds it took.

    Real engines report measured wall seconds; the simulator reports modelled seconds.
    The pipeline advances its clock by ``seconds``, so both are accounted the same way.
    """

    outcomes: list[Outcome]
    seconds: float


class Engine(abc.ABC):
    """Executes micro-batches. It never decides order or grouping."""

    name: str = "engine"
    # True when seconds come from a cost model, not a clock: the pipeline then keeps the
    # predictor's real time apart instead of adding it to modelled time.
    modelled_time: bool = False

    def prepare(self, requests: Sequence[Request]) -> None:  # noqa: B027 - optional hook
        """Tokenize and validate. A bad request is marked failed with ``Request.fail``;
        it must never stop the others."""

    @abc.abstractmethod
    def run(self, batch: MicroBatch, requests: Sequence[Request]) -> BatchRun:
        """Run ``requests`` (the batch's rows, in order) for at most ``batch.max_new_tokens``
        decode steps, each row also stopping at its own ``max_new_tokens``."""

    def decode(self, token_ids: Sequence[int]) -> str:
        """Text of generated tokens, special tokens skipped. Engines without a tokenizer
        return an empty string."""
        return ""

    def warmup(self, requests: Sequence[Request]) -> None:  # noqa: B027 - optional hook
        """Run whatever makes later timings representative (kernels, allocator)."""
