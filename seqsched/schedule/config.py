"""Typed, validated configuration for the sequence scheduler."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

VBSMode = Literal["off", "paper", "budget"]
VBS_MODES: tuple[VBSMode, ...] = ("off", "paper", "budget")
FCRMode = Literal["restart", "resume"]
FCR_MODES: tuple[FCRMode, ...] = ("restart", "resume")


@dataclass(frozen=True)
class ScheduleConfig:
    """How a group of requests becomes micro-batches.

    - ``batch_size``: rows of a micro-batch when VBS is off, and the smallest VBS batch.
    - ``group_size``: the scheduling window; requests are planned ``group_size`` at a time
      in input order, and FCR failures are re-run at the end of their group.
    - ``vbs``: ``off``; ``paper`` (the paper's table: predicted bin 50 -> 256 rows,
      100 -> 128, 150 -> 64, 200 -> 32, 250 and above -> 16); or ``budget`` (rows x
      predicted length <= ``token_budget``, clamped to [batch_size, max_batch_size]).
    - ``bin_size``: VBS buckets predicted lengths into cells of this many tokens.
    - ``fcr``: cap each micro-batch at its predicted maximum and re-run the requests
      that did not finish, with their full limit.
    - ``fcr_mode``: how a failure is re-run. ``restart`` (the paper) throws its tokens
      away and generates from scratch; ``resume`` keeps them and continues after prompt +
      kept tokens, so only the KV cache is recomputed (one prefill) and no decode step is
      lost. ``resume`` is how vLLM re-runs preempted requests.
    """

    batch_size: int = 16
    group_size: int = 256
    vbs: VBSMode = "off"
    bin_size: int = 50
    token_budget: int | None = None  # default: batch_size * the group's largest limit
    max_batch_size: int = 256
    fcr: bool = False
    fcr_mode: FCRMode = "restart"

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size ({self.batch_size}) must be >= 1")
        if self.group_size < 1:
            raise ValueError(f"group_size ({self.group_size}) must be >= 1")
        if self.vbs not in VBS_MODES:
            raise ValueError(f"vbs ({self.vbs!r}) must be one of {', '.join(VBS_MODES)}")
        if self.fcr_mode not in FCR_MODES:
            raise ValueError(f"fcr_mode ({self.fcr_mode!r}) must be one of {', '.join(FCR_MODES)}")
        if self.bin_size < 1:
            raise ValueError(f"bin_size ({self.bin_size}) must be >= 1")
        if self.token_budget is not None and self.token_budget < 1:
            raise ValueError(f"token_budget ({self.token_budget}) must be >= 1")
        if self.max_batch_size < self.batch_size:
            raise ValueError(f"max_batch_size ({self.max_batch_size}) must be >= batch_size ({self.batch_size})")
