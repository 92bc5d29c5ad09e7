"""The batch lane's rules: how much of the upstreams batch work may hold, and in which
order its requests go. No torch, no I/O.

NOTE on the rules. Interactive requests always go first (``front_door.py``); batch work
fills what they leave, under three limits:
- ``headroom``: free slots per upstream that batch work never takes, so an interactive
  arrival finds one at once, without preempting anything.
- ``tpot_target_s``: the interactive time per output token to keep under. Batch work
  slows every step it shares (a step's cost grows with the tokens in it: on a CPU about
  in proportion, on a GPU once the weights' read is no longer all it costs), so the lane
  adapts how many batch requests may run, additive increase, multiplicative decrease (as
  TCP does): every ``adapt_interval_s``, if the interactive requests that finished
  meanwhile averaged over the target, the cap drops to ``backoff`` of itself (and batch
  requests over it are stopped, to be continued later: a lower cap acts at once, not as
  long answers end); if under, or with none finished (no interactive traffic), it grows
  by ``step`` (a 20th of the slots batch work may use, at least one). It starts at one
  step, as TCP's slow start does: a full engine's first seconds would miss the target.
- ``preempt``: when an interactive request would wait for a slot that batch work holds,
  the batch request with the most predicted work left is stopped and put back at the
  front of its lane, to be continued from the tokens it has (``front_door.py``).

Order inside the lane (``order``): ``fcfs``, the default, keeps submission order. ``auto``
takes the shortest predicted first while interactive traffic is about (a request running,
or one arrived within ``quiet_s``), so slots turn over, and the longest first when it is
quiet, so a batch does not end on a tail of long answers. Measured, it did not pay: at the
same interactive TPOT the shortest-first lane made 15-25% fewer batch tokens on the
SIMULATED A100 (a short answer carries its whole prompt's prefill for few tokens), and on
this CPU the orders were within the noise of one round (docs/serving.md). ``sjf`` and
``ljf`` fix one order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from seqsched.schedule.batch_queue import LaneOrder

BatchOrder = Literal["auto", "sjf", "ljf", "fcfs"]
# vLLM's ``priority`` for batch work (lower runs first): after every interactive request,
# and the first that vLLM's own preemption (on a full KV cache) evicts.
BATCH_PRIORITY = 1 << 50  # above any interactive priority, ``deadline``'s milliseconds included
BATCH_ORDERS: tuple[BatchOrder, ...] = ("auto", "sjf", "ljf", "fcfs")


def vllm_priority(predicted_len: int, lane: str, priority: int | None = None) -> int:
    """The ``priority`` seqsched sends vLLM for a request (the server and the simulator
    alike): its predicted length (or the door's ``priority``, the ``deadline`` policy's key
    in ms), after every interactive request for batch work."""
    return int(predicted_len if priority is None else priority) + (BATCH_PRIORITY if lane == "batch" else 0)


@dataclass(frozen=True)
class BatchLaneConfig:
    headroom: int = 0
    tpot_target_s: float | None = None
    preempt: bool = True
    order: BatchOrder = "fcfs"  # measured: ordering by length did not pay (docs/serving.md)
    quiet_s: float = 5.0
    adapt_interval_s: float = 2.0
    backoff: float = 0.7

    def __post_init__(self) -> None:
        if self.headroom < 0:
            raise ValueError(f"headroom ({self.headroom}) must be >= 0")
        if self.tpot_target_s is not None and not (self.tpot_target_s > 0 and math.isfinite(self.tpot_target_s)):
            raise ValueError(f"tpot_target_s ({self.tpot_target_s}) must be a positive number of seconds or None")
        if self.order not in BATCH_ORDERS:
            raise ValueError(f"order ({self.order!r}) must be one of {', '.join(BATCH_ORDERS)}")
        if not self.quiet_s >= 0:
            raise ValueError(f"quiet_s ({self.quiet_s}) must be >= 0")
        if not self.adapt_interval_s > 0:
            raise ValueError(f"adapt_interval_s ({self.adapt_interval_s}) must be > 0")
        if not 0 < self.backoff < 1:
            raise ValueError(f"backoff ({self.backoff}) must be in (0, 1)")


class BatchGovernor:
    """How many batch requests may run at once, adapted to the interactive TPOT measured;
    and the lane's order by traffic."""

    def __init__(self, config: BatchLaneConfig, max_running: int) -> None:
        self.config = config
        self.max_running = max(0, max_running)
        self.step = max(1, self.max_running // 20)
        self.cap = float(self.max_running if config.tpot_target_s is None else min(self.step, self.max_running))
        self._samples: list[float] = []
        self._last_adapt: float | None = None
        self._last_interactive: float | None = None

    @property
    def limit(self) -> int:
        return int(self.cap)

    def interactive_arrived(self, now: float) -> None:
        self._last_interactive = now

    def observe(self, tpot_s: float) -> None:
        """An interactive request finished with this time per output token."""
        if self.config.tpot_target_s is not None and math.isfinite(tpot_s) and tpot_s >= 0:
            self._samples.append(tpot_s)

    @property
    def enforced(self) -> bool:
        """Whether batch work over the cap is stopped (only with a TPOT target)."""
        return self.config.tpot_target_s is not None

    def adapt(self, now: float) -> None:
        """Move the cap once an interval has passed (a no-op without a TPOT target)."""
        target = self.config.tpot_target_s
        if target is None:
            return
        if self._last_adapt is None:
            self._last_adapt = now
            return
        if now - self._last_adapt < self.config.adapt_interval_s:
            return
        self._last_adapt = now
        samples, self._samples = self._samples, []
        if samples and sum(samples) / len(samples) > target:
            self.cap = math.floor(self.cap * self.config.backoff)
        else:
            self.cap = min(float(self.max_running), self.cap + self.step)

    def order(self, now: float, interactive_running: int) -> LaneOrder:
        if self.config.order != "auto":
            return self.config.order
        last = self._last_interactive
        present = interactive_running > 0 or (last is not None and now - last < self.config.quiet_s)
        return "sjf" if present else "ljf"
