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
- ``kv`` admission: a request is admitted only while the running requests' prompt +
  ``kv_margin`` x predicted output fit the KV cache at every future step (finished
  requests free theirs), so the cache fills without the engine having to preempt and
  recompute (S3, Jin et al. 2023). A request that outgrows its prediction is charged
  what it really holds (``KVAdmission.grow``); one that still overflows the cache is the
  engine's to preempt.
The plan reaches an engine as an order (submit in it), a priority per request (for
engines with a priority queue: vLLM's ``priority`` policy), and an admission rule.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from seqsched.request import Request
from seqsched.schedule.config import ScheduleConfig
from seqsched.schedule.prediction import clamped_prediction
from seqsched.schedule.queue import bounded_order


@dataclass(frozen=True)
class StreamPlan:
    """What a continuous-batching engine is told, by request index.

    - ``order``: the admission order; an engine submits requests in it.
    - ``priority``: lower runs first; the rank in ``order``, so a priority queue
      (vLLM's) pops exactly ``order``, and preempts the latest-ranked running request.
    - ``reserve``: under ``kv`` admission, each request's predicted size at its end
      (prompt + margin x predicted output), in tokens; ``None``: the engine admits what
      its own limits allow.
    - ``prompt_tokens``: each request's size when admitted (prompt + kept prefix).
    - ``kv_capacity``: the engine's KV cache, in tokens, and ``block_size`` its blocks.
    """

    order: tuple[int, ...]
    priority: Mapping[int, int]
    reserve: Mapping[int, int] | None = None
    kv_capacity: int | None = None
    prompt_tokens: Mapping[int, int] | None = None
    block_size: int = 1

    def __post_init__(self) -> None:
        assert len(set(self.order)) == len(self.order), "a request appears twice in the order"
        assert set(self.priority) == set(self.order), "every request needs a priority"
        if self.reserve is not None:
            assert self.kv_capacity is not None and self.kv_capacity >= 1, "kv admission needs a capacity"
            assert set(self.reserve) == set(self.order), "every request needs a reservation"
            assert self.prompt_tokens is not None and set(self.prompt_tokens) == set(self.order)

    def admission(self) -> KVAdmission | None:
        """A fresh admission rule for one run of this plan, or None."""
        if self.reserve is None:
            return None
        assert self.kv_capacity is not None and self.prompt_tokens is not None
        return KVAdmission(self.kv_capacity, dict(self.reserve), dict(self.prompt_tokens), self.block_size)


@dataclass
class KVAdmission:
    """Admit a request only if, with it, the predicted KV usage fits ``capacity`` at every
    future step. The first request always fits (an empty engine must make progress), so
    the engine's preemption handles one that is larger than the whole cache.

    NOTE on the rule. A running request holds ``held`` tokens now and is predicted to
    run ``left`` more steps, growing by one token a step, then to free all of it. The sum
    of the requests' final sizes over-reserves: most will have finished before the others
    peak. The usage ``t`` steps ahead is the sum over requests still running then of
    ``held + t``; it only drops when a request ends, so its maximum is just before one of
    the predicted ends, and checking those points (sorted, with suffix sums) is exact.
    Each request is also charged up to one partly filled block (``block_size - 1``).
    """

    capacity: int
    final: dict[int, int]  # request -> predicted tokens at its end (prompt + margin x predicted)
    prompt: dict[int, int]  # request -> tokens when admitted (prompt + kept prefix)
    block_size: int = 1
    held: dict[int, int] = field(default_factory=dict)  # admitted and running -> tokens held now

    @property
    def used(self) -> int:
        return sum(self.held.values())

    def try_admit(self, index: int) -> bool:
        if self.held and self.peak(index) > self.capacity:
            return False
        self.held[index] = self.prompt[index]
        return True

    def peak(self, extra: int | None = None) -> int:
        """The largest predicted usage from now on, with ``extra`` admitted too."""
        items = [(self._left(i), self.held[i]) for i in self.held]
        if extra is not None:
            items.append((self._left(extra, self.prompt[extra]), self.prompt[extra]))
        items.sort()
        suffix_held, peak = 0, 0
        for k in range(len(items) - 1, -1, -1):
            left, held = items[k]
            suffix_held += held
            alive = len(items) - k  # requests with at least ``left`` steps to go
            # just before the k-th request's last step: each alive one has grown by left.
            peak = max(peak, suffix_held + alive * (left + self.block_size - 1))
        return peak

    def grow(self, index: int, num_tokens: int) -> None:
        """A running request now holds ``num_tokens`` (prompt + output so far)."""
        if index in self.held and num_tokens > self.held[index]:
            self.held[index] = num_tokens

    def release(self, index: int) -> None:
        self.held.pop(index, None)

    def _left(self, index: int, held: int | None = None) -> int:
        """Predicted steps still to run; one that outran its prediction is given one more."""
        held = self.held[index] if held is None else held
        return max(1, self.final[index] - held)


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
        keys = [sign * clamped_prediction(r) for r in requests]
        order = [indices[i] for i in bounded_sort(keys, cfg.max_bypass)]
    priority = {index: rank for rank, index in enumerate(order)}
    if cfg.admission == "none":
        return StreamPlan(tuple(order), priority)
    if kv_capacity is None:
        raise ValueError("kv admission needs the engine's KV-cache capacity (in tokens)")
    reserve = {r.index: _reservation(r, cfg.kv_margin) for r in requests}
    prompt = {r.index: r.num_prompt_tokens + len(r.output_prefix) for r in requests}
    return StreamPlan(tuple(order), priority, reserve, kv_capacity, prompt, block_size)


def bounded_sort(keys: Sequence[float], max_bypass: int | None) -> list[int]:
    """Positions sorted by key (ties by position), except that no position is overtaken
    by more than ``max_bypass`` later positions: when the oldest waiting position has
    been overtaken that often, it goes next. ``None``: a plain stable sort. The online
    server's queue with every request there at once (``schedule/queue.py``)."""
    if max_bypass is None or max_bypass >= len(keys):
        return sorted(range(len(keys)), key=lambda i: (keys[i], i))
    return bounded_order(list(keys), max_bypass)


def _reservation(request: Request, margin: float) -> int:
    output = min(request.remaining_tokens, math.ceil(margin * clamped_prediction(request)))
    return request.num_prompt_tokens + len(request.output_prefix) + output
