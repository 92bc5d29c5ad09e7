"""Typed, validated configuration for the sequence scheduler."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

VBSMode = Literal["off", "paper", "budget"]
VBS_MODES: tuple[VBSMode, ...] = ("off", "paper", "budget")
FCRMode = Literal["restart", "resume"]
FCR_MODES: tuple[FCRMode, ...] = ("restart", "resume")
Policy = Literal["fcfs", "sjf", "ljf"]
POLICIES: tuple[Policy, ...] = ("fcfs", "sjf", "ljf")
# Online (a server's queue) also: ``deadline``, shortest predicted first within a bound in
# time (``queue.py``); a batch job's requests all arrive at once, where it is ``sjf``.
OnlinePolicy = Literal["fcfs", "sjf", "ljf", "deadline"]
ONLINE_POLICIES: tuple[OnlinePolicy, ...] = ("fcfs", "sjf", "ljf", "deadline")
DEFAULT_SLACK_S = 0.02  # ``deadline``: seconds of waiting one predicted token is worth
Admission = Literal["none", "kv"]
ADMISSIONS: tuple[Admission, ...] = ("none", "kv")
DEFAULT_MAX_BYPASS = 1024


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

    - ``paper_exact``: plan as the paper's code does (``src/utils.py``, ``schedule``)
      where seqsched chose otherwise: a VBS bin's under-filled last micro-batch is
      *appended* to the next bin (seqsched prepends it, keeping the bin sorted), a
      prediction of 0 falls in bin 0 (seqsched counts it as 1, bin 50), and a bin is
      under-filled below ``max(rows // 2, 16)`` (seqsched: ``batch_size`` for 16). The
      clamp to the limit and FCR's bookkeeping stay seqsched's (the README lists why).

    Continuous-batching engines (vLLM, transformers' continuous batching, the simulated
    one) take a stream plan instead of micro-batches (``schedule/stream.py``):
    - ``policy``: the admission order. ``fcfs`` (input order: the plain engine), ``sjf``
      (shortest predicted first: mean completion time) or ``ljf`` (longest predicted
      first: makespan).
    - ``max_bypass``: the aging bound of ``sjf``/``ljf``. No request is overtaken by more
      than this many requests that came after it in the input, so nothing starves, as
      the static pipeline's group window bounds waiting. ``None``: no bound.
    - ``admission``: ``none`` (the engine admits what its own limits allow) or ``kv``
      (admit a request only while the admitted requests' prompt + ``kv_margin`` x
      predicted output fit the engine's KV cache; on under-prediction the engine's own
      preemption is the fallback).
    """

    batch_size: int = 16
    group_size: int = 256
    vbs: VBSMode = "off"
    bin_size: int = 50
    token_budget: int | None = None  # default: batch_size * the group's largest limit
    max_batch_size: int = 256
    fcr: bool = False
    fcr_mode: FCRMode = "restart"
    policy: Policy = "fcfs"
    max_bypass: int | None = DEFAULT_MAX_BYPASS
    admission: Admission = "none"
    kv_margin: float = 1.0
    paper_exact: bool = False

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size ({self.batch_size}) must be >= 1")
        if self.group_size < 1:
            raise ValueError(f"group_size ({self.group_size}) must be >= 1")
        if self.vbs not in VBS_MODES:
            raise ValueError(f"vbs ({self.vbs!r}) must be one of {', '.join(VBS_MODES)}")
        if self.fcr_mode not in FCR_MODES:
            raise ValueError(f"fcr_mode ({self.fcr_mode!r}) must be one of {', '.join(FCR_MODES)}")
        if self.policy not in POLICIES:
            raise ValueError(f"policy ({self.policy!r}) must be one of {', '.join(POLICIES)}")
        if self.admission not in ADMISSIONS:
            raise ValueError(f"admission ({self.admission!r}) must be one of {', '.join(ADMISSIONS)}")
        if self.max_bypass is not None and self.max_bypass < 0:
            raise ValueError(f"max_bypass ({self.max_bypass}) must be >= 0 or None")
        if not self.kv_margin > 0:
            raise ValueError(f"kv_margin ({self.kv_margin}) must be > 0")
        if self.bin_size < 1:
            raise ValueError(f"bin_size ({self.bin_size}) must be >= 1")
        if self.token_budget is not None and self.token_budget < 1:
            raise ValueError(f"token_budget ({self.token_budget}) must be >= 1")
        if self.max_batch_size < self.batch_size:
            raise ValueError(f"max_batch_size ({self.max_batch_size}) must be >= batch_size ({self.batch_size})")
