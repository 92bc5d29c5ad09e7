"""The simulated continuous-batching engine: no model, a vLLM-like scheduler in modelled
time. No torch here.

NOTE on what is modelled (vLLM v1's scheduler, simplified):
- Up to ``max_num_seqs`` requests run at once. Every step, each running request
  decodes one token; one that was just admitted is prefilled in the same step and
  produces its first token.
- The KV cache holds ``num_blocks`` blocks of ``block_size`` tokens (``None``: no
  limit). Running requests are served first: when one needs a new block and none is
  free, the lowest-priority running request (the highest ``(priority, arrival)``) is
  preempted. It frees its blocks, keeps its tokens, and waits again: when it is
  readmitted its prompt and kept tokens are prefilled again (recompute, as vLLM does).
- Waiting requests are admitted in priority order while a slot is free and their
  blocks fit, and only in steps that preempted nothing.
- A step costs ``step_seconds(running, mean context)`` plus a prefill of every
  admitted request's prompt and kept tokens, from the same cost model as the static
  simulator.
Output lengths come from each request's ``target_len`` (a trace).
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

from seqsched.engine.cost_model import StepCostModel, load_cost_model
from seqsched.engine.stream import StepOutput, StreamEngine, StreamRun
from seqsched.engine.trace import SIMULATED_TOKEN, require_target_lengths
from seqsched.request import Request
from seqsched.schedule import StreamPlan


@dataclass
class _Running:
    index: int
    priority: int
    arrival: int
    prompt: int
    target: int
    generated: int = 0

    @property
    def context(self) -> int:
        return self.prompt + self.generated


class SimulatedContinuousEngine(StreamEngine):
    name = "simulate-continuous"
    modelled_time = True

    def __init__(
        self,
        cost_model: StepCostModel | None = None,
        max_num_seqs: int = 256,
        num_blocks: int | None = None,
        block_size: int = 16,
    ) -> None:
        if max_num_seqs < 1:
            raise ValueError(f"max_num_seqs ({max_num_seqs}) must be >= 1")
        if num_blocks is not None and num_blocks < 1:
            raise ValueError(f"num_blocks ({num_blocks}) must be >= 1 or None")
        if block_size < 1:
            raise ValueError(f"block_size ({block_size}) must be >= 1")
        self.cost_model = cost_model if cost_model is not None else load_cost_model(None)
        self.max_num_seqs = max_num_seqs
        self.num_blocks = num_blocks
        self.block_size = block_size

    @property
    def kv_capacity(self) -> int | None:
        return None if self.num_blocks is None else self.num_blocks * self.block_size

    def prepare(self, requests: Sequence[Request]) -> None:
        require_target_lengths(requests)

    def start(self, plan: StreamPlan, requests: Sequence[Request]) -> None:
        self._clock = 0.0
        self._arrivals = 0
        self._waiting: list[tuple[int, int, _Running]] = []
        self._running: list[_Running] = []
        self._num_preemptions = 0

    def submit(self, request: Request, priority: int) -> None:
        assert request.target_len is not None
        kept = len(request.output_prefix)
        entry = _Running(
            request.index, priority, self._arrivals, request.num_prompt_tokens + kept, request.target_len - kept
        )
        self._arrivals += 1
        heapq.heappush(self._waiting, (priority, entry.arrival, entry))

    def has_unfinished(self) -> bool:
        return bool(self._waiting or self._running)

    def now(self) -> float:
        return self._clock

    def finish(self) -> StreamRun:
        return StreamRun(self._clock, self._num_preemptions)

    def step(self) -> StepOutput:
        preempted = self._make_room_for_decodes()
        admitted = [] if preempted else self._admit()
        for r in self._running:
            r.generated += 1
        cost = self.cost_model
        if self._running:
            mean_context = sum(r.context for r in self._running) // len(self._running)
            self._clock += cost.step_seconds(len(self._running), mean_context)
        self._clock += sum(cost.prefill_seconds(1, r.context) for r in admitted)
        done = [r for r in self._running if r.generated >= r.target]
        self._running = [r for r in self._running if r.generated < r.target]
        return StepOutput(
            finished=[(r.index, [SIMULATED_TOKEN] * r.generated, True) for r in done],
            held_tokens={r.index: r.context for r in self._running},
        )

    def _blocks(self, tokens: int) -> int:
        return -(-tokens // self.block_size)

    def _free_blocks(self, extra_tokens: int = 0) -> int | None:
        """Blocks left once every running request holds its context + ``extra_tokens``."""
        if self.num_blocks is None:
            return None
        return self.num_blocks - sum(self._blocks(r.context + extra_tokens) for r in self._running)

    def _make_room_for_decodes(self) -> bool:
        """Preempt lowest-priority running requests until every decode fits. A lone request
        larger than the whole cache runs on (vLLM refuses those at submission)."""
        preempted = False
        while len(self._running) > 1 and (free := self._free_blocks(1)) is not None and free < 0:
            victim = max(self._running, key=lambda r: (r.priority, r.arrival))
            self._running.remove(victim)
            heapq.heappush(self._waiting, (victim.priority, victim.arrival, victim))
            self._num_preemptions += 1
            preempted = True
        return preempted

    def _admit(self) -> list[_Running]:
        admitted = []
        while self._waiting and len(self._running) < self.max_num_seqs:
            entry = self._waiting[0][2]
            free = self._free_blocks(1)
            if free is not None and self._running and self._blocks(entry.context + 1) > free:
                break
            heapq.heappop(self._waiting)
            self._running.append(entry)
            admitted.append(entry)
        return admitted
