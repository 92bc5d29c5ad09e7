"""The plain data object the scheduler hands to an engine."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MicroBatch:
    """Requests (by input index) to run together, and the decode-step cap of the batch.

    Each row also stops at its own ``max_new_tokens``; ``max_new_tokens`` here is the
    batch's cap, which FCR sets to the predicted maximum.
    """

    indices: tuple[int, ...]
    max_new_tokens: int
    is_retry: bool = False

    def __post_init__(self) -> None:
        assert len(self.indices) > 0, "a micro-batch needs at least one request"
        assert len(set(self.indices)) == len(self.indices), f"duplicate rows in {self.indices}"
        assert self.max_new_tokens >= 1, f"max_new_tokens ({self.max_new_tokens}) must be >= 1"

    @property
    def batch_size(self) -> int:
        return len(self.indices)
