"""Plans for continuous-batching engines: an admission order, priorities, and an
admission rule. No torch here.

NOTE on what a length prediction buys a continuous-batching engine. vLLM and
transformers' continuous batching refill a row the step it frees, so padding, the
problem the paper's micro-batches solve, is gone. What is left to decide is *which*
waiting request is admitted next, and *how many* run at once:
- ``fcfs``: input order. This is the plain engine.
- ``sjf``: shortest predicted first. With every request waiting (a batch job), running
  short ones first minimises mean completion time at unchanged total work.
- ``ljf``: longest predicted first. Long requests start early, so the job does not end
  on a tail of a few long requests running at a small batch (makespan).
- An aging bound, ``max_bypass``: no request is overtaken by more than that many
  requests that came after it in the input. The static pipeline's group window bounds
  waiting the same way; here the window slides.
- ``kv`` admission: a request is admitted only while the admitted requests' prompt +
  ``kv_margin`` x predicted output fit the KV cache, so the cache fills without the
  engine having to preempt and recompute (S3, Jin et al. 2023). A request that outgrows
  its reservation is charged what it really holds (``KVAdmission.grow``); one that still
  overflows the cache is the engine's to preempt.
The plan reaches an engine as an order (submit in it), a priority per request (for
engines with a priority queue: vLLM's ``priority`` policy), and an admission rule.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from seqsched.request import Request
from seqsched.schedule.config import ScheduleConfig


@dataclass(frozen=True)
class StreamPlan:
    """What a continuous-batching engine is told, by request index.

    - ``order``: the admission order; an engine submits requests in it.
    - ``priority``: lower runs first; the rank in ``order``, so a priority queue
      (vLLM's) pops exactly ``order``, and preempts the latest-ranked running request.
    - ``reserve``: KV-cache tokens to reserve per request under ``kv`` admission
      (prompt + margin x predicted output, rounded up to whole blocks); ``None``: the
      engine admits what its own limits allow.
    - ``kv_capacity``: the engine's KV cache, in tokens, that reservations must fit.
    """

    order: tuple[int, ...]
    priority: Mapping[int, int]
    reserve: Mapping[int, int] | None = None
    kv_capacity: int | None = None

    def __post_init__(self) -> None:
        assert len(set(self.order)) == len(self.order), "a request appears twice in the order"
        assert set(self.priority) == set(self.order), "every request needs a priority"
        if self.reserve is not None:
            assert self.kv_capacity is not None and self.kv_capacity >= 1, "kv admission needs a capacity"
            assert set(self.reserve) == set(self.order), "every request needs a reservation"

    def admission(self) -> KVAdmission | None:
        """A fresh admission rule for one run of this plan, or None."""
        if self.reserve is None:
            return None
        assert self.kv_capacity is not None
        return KVAdmission(self.kv_capacity, dict(self.reserve))


@dataclass
class KVAdmission:
    """Admit while reservations fit ``capacity``; the first request always fits (an
    empty engine must make progress), so the engine's preemption handles one that is
    larger than the whole cache."""

    capacity: int
    reserve: dict[int, int]
    held: dict[int, int] = field(default_factory=dict)  # admitted and not finished -> tokens

    @property
    def used(self) -> int:
        return sum(self.held.values())

    def try_admit(self, index: int) -> bool:
        tokens = self.reserve[index]
        if self.held and self.used + tokens > self.capacity:
            return False
        self.held[index] = tokens
        return True

    def grow(self, index: int, num_tokens: int) -> None:
        """A running request now holds ``num_tokens`` (prompt + output so far)."""
        if index in self.held and num_tokens > self.held[index]:
            self.held[index] = num_tokens

    def release(self, index: int) -> None:
        self.held.pop(index, None)


def plan_stream(
    requests: Sequence[Request], cfg: ScheduleConfig, kv_capacity: int | None = None, block_size: int = 1
) -> StreamPlan:
    """Plan requests (each with ``predicted_len`` set unless the policy is ``fcfs`` and
    admission ``none``) for a continuous-batching engine. Ties break by input order."""
    indices = [r.index for r in requests]
    assert indices == sorted(indices), "requests must come in input order"
    if cfg.policy == "fcfs":
        order = indices
    else:
        sign = 1 if cfg.policy == "sjf" else -1
        keys = [sign * _clamped_prediction(r) for r in requests]
        order = [indices[i] for i in bounded_sort(keys, cfg.max_bypass)]
    priority = {index: rank for rank, index in enumerate(order)}
    if cfg.admission == "none":
        return StreamPlan(tuple(order), priority)
    if kv_capacity is None:
        raise ValueError("kv admission needs the engine's KV-cache capacity (in tokens)")
    reserve = {r.index: _reservation(r, cfg.kv_margin, block_size) for r in requests}
    return StreamPlan(tuple(order), priority, reserve, kv_capacity)


def bounded_sort(keys: Sequence[float], max_bypass: int | None) -> list[int]:
    """Positions sorted by key (ties by position), except that no position is overtaken
    by more than ``max_bypass`` later positions: when the oldest waiting position has
    been overtaken that often, it goes next. ``None``: a plain stable sort."""
    n = len(keys)
    if max_bypass is None or max_bypass >= n:
        return sorted(range(n), key=lambda i: (keys[i], i))
    heap = [(key, i) for i, key in enumerate(keys)]
    heapq.heapify(heap)
    placed = [False] * n
    order: list[int] = []
    oldest = 0
    while len(order) < n:
        while placed[oldest]:
            oldest += 1
        # Every position before ``oldest`` is placed, so the placed ones after it number:
        overtaken = len(order) - oldest
        if overtaken >= max_bypass:
            pick = oldest
        else:
            while placed[heap[0][1]]:
                heapq.heappop(heap)
            pick = heapq.heappop(heap)[1]
        placed[pick] = True
        order.append(pick)
    return order


def _clamped_prediction(request: Request) -> int:
    assert request.predicted_len is not None, f"request {request.request_id!r} has no prediction"
    return min(max(1, int(request.predicted_len)), request.remaining_tokens)


def _reservation(request: Request, margin: float, block_size: int) -> int:
    output = min(request.remaining_tokens, math.ceil(margin * _clamped_prediction(request)))
    tokens = request.num_prompt_tokens + len(request.output_prefix) + output
    return -(-tokens // block_size) * block_size
