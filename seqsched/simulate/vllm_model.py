"""A model of vLLM v1's scheduler in modelled time: the core of the simulated
continuous engine, offline and online. No torch here.

NOTE on what follows vLLM (``vllm/v1/core/sched/scheduler.py``, ``schedule()``) and what
is simplified.
- Each step has a token budget, ``max_num_batched_tokens``. Running requests are
  scheduled first: a decoding request takes one token; one still prefilling takes the
  rest of its prompt, cut to the budget left (chunked prefill). Then, only if this step
  preempted nothing, waiting requests are admitted in queue order while a slot
  (``max_num_seqs``), budget and KV blocks for all their tokens are free (vLLM's
  ``scheduler_reserve_full_isl``; only the first chunk is allocated); the first one
  that does not fit stops admission.
- The KV cache has ``num_blocks`` blocks of ``block_size`` tokens (``None``: no limit),
  one of them vLLM's null block, which holds nothing.
  A request scheduled for ``n`` more tokens needs blocks for all it has computed plus
  ``n``. When a block is missing, the lowest-priority running request is preempted
  (``priority`` policy: the highest (priority, arrival); ``fcfs``: the last admitted).
  It frees every block and goes back to the front of the queue with its tokens; when
  readmitted it prefills its prompt and all its output again (recompute).
- A request's prefill, when its last chunk runs, samples its first token in that step.
- Prefix caching: a preempted request's full blocks stay in the cache, in vLLM's
  eviction order (freed tail first onto the free queue, allocated from its head); its
  recompute skips the leading ones still there.
- Simplified: running decodes are scheduled before running prefill chunks (vLLM follows
  its running list, where prefilling requests are the newest and so mostly last
  anyway); no prefix sharing between different requests; a preemption never stops the
  rest of the running list from being scheduled in that step.

Decoding requests are kept as an aggregate (their contexts are ``offset + tick``, and
their block boundaries a count per phase), so a step costs O(1) plus O(log n) per
request that starts, finishes or is preempted in it, never O(running).
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from seqsched.simulate.step_cost import ContinuousCost, StepShape

SchedulingPolicy = Literal["fcfs", "priority"]


@dataclass(frozen=True)
class SchedulerLimits:
    """The engine's size, as vLLM's ``max_num_seqs``, ``max_num_batched_tokens``,
    ``num_gpu_blocks`` and ``block_size``; ``chunked_prefill`` as vLLM's
    ``enable_chunked_prefill`` (on by default in v1); ``reserve_full_prompt`` as vLLM's
    ``scheduler_reserve_full_isl`` (on by default since 0.2x): a waiting request is
    admitted only if all its tokens fit the free blocks, not just its first chunk;
    ``prefix_caching`` as vLLM's ``enable_prefix_caching`` (on by default): a preempted
    request's full blocks stay cached until reused, and its recompute skips those left."""

    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    num_blocks: int | None = None
    block_size: int = 16
    policy: SchedulingPolicy = "priority"
    chunked_prefill: bool = True
    reserve_full_prompt: bool = True
    prefix_caching: bool = True

    def __post_init__(self) -> None:
        if self.max_num_seqs < 1:
            raise ValueError(f"max_num_seqs ({self.max_num_seqs}) must be >= 1")
        if self.max_num_batched_tokens < self.max_num_seqs:
            raise ValueError(
                f"max_num_batched_tokens ({self.max_num_batched_tokens}) must be >= max_num_seqs "
                f"({self.max_num_seqs}), as vLLM requires"
            )
        if self.num_blocks is not None and self.num_blocks < 2:
            raise ValueError(f"num_blocks ({self.num_blocks}) must be >= 2 (one is vLLM's null block) or None")
        if self.block_size < 1:
            raise ValueError(f"block_size ({self.block_size}) must be >= 1")
        if self.policy not in ("fcfs", "priority"):
            raise ValueError(f"policy ({self.policy!r}) must be 'fcfs' or 'priority'")

    @property
    def usable_blocks(self) -> int | None:
        """vLLM keeps block 0 as its null block: ``num_blocks - 1`` hold tokens."""
        return None if self.num_blocks is None else self.num_blocks - 1

    @property
    def kv_capacity(self) -> int | None:
        return None if self.usable_blocks is None else self.usable_blocks * self.block_size


@dataclass(slots=True, eq=False)
class SimRequest:
    """One request in the model: ``prompt`` tokens (a resumed request's kept output
    included), ``target`` output tokens to produce; times on the model's clock."""

    rid: int
    prompt: int
    target: int
    priority: float = 0.0
    arrival: float = 0.0
    generated: int = 0
    computed: int = 0  # tokens in the KV cache (while decoding: offset + tick)
    blocks: int = 0  # KV blocks held (while prefilling)
    cached_blocks: int = 0  # after a preemption: its full blocks, left in the prefix cache
    cache_stamp: int = 0  # ... which survive until this many blocks have been allocated
    offset: int = 0  # while decoding
    gen_offset: int = 0  # while decoding: generated = gen_offset + tick
    state: str = "new"  # new | waiting | prefill | decode | done | aborted
    version: int = 0  # bumped when it leaves decoding, so stale heap entries are skipped
    scheduled_at: float | None = None
    first_token_at: float | None = None
    finished_at: float | None = None
    num_preemptions: int = 0
    cache_hit_tokens: int = 0  # prompt tokens found in the prefix cache at admission

    @property
    def num_tokens(self) -> int:
        return self.prompt + self.generated


@dataclass
class StepRecord:
    """What one modelled step did."""

    seconds: float
    shape: StepShape
    finished: list[SimRequest] = field(default_factory=list)
    num_preempted: int = 0
    num_admitted: int = 0


class SchedulerModel:
    """vLLM v1's scheduler and a step cost, stepping a modelled clock."""

    def __init__(self, limits: SchedulerLimits, cost: ContinuousCost) -> None:
        self.limits = limits
        self.cost = cost
        self.clock = 0.0
        self.num_steps = 0
        self.num_preemptions = 0
        self._seq = 0
        self._waiting_heap: list[tuple[float, float, int, SimRequest]] = []
        self._waiting_fifo: deque[SimRequest] = deque()
        self._running: dict[int, SimRequest] = {}  # admission order (fcfs preempts the last)
        self._victims: list[tuple[float, float, int, SimRequest]] = []  # max-heap by (priority, arrival)
        self._prefilling: dict[int, SimRequest] = {}
        # The decoding aggregate: computed = offset + tick for each.
        self._tick = 0
        self._num_decoding = 0
        self._sum_offset = 0
        self._phase = [0] * limits.block_size  # decoding requests by offset mod block_size
        self._ends: list[tuple[int, int, int, SimRequest]] = []  # (finish tick, seq, version, request)
        self._used_blocks = 0
        self._allocated = 0  # blocks ever taken from the free queue's head (prefix-cache eviction)
        self._in_step = False  # between a step's decode allocation and its outputs

    # -- queue ---------------------------------------------------------------------

    def add(self, request: SimRequest) -> None:
        """Queue a request (at the model's current time, if it has no arrival)."""
        if request.target < 1 or request.prompt < 1:
            raise ValueError(
                f"request {request.rid}: prompt ({request.prompt}) and target ({request.target}) must be >= 1"
            )
        capacity = self.limits.kv_capacity
        if capacity is not None and request.prompt + request.target > capacity:
            raise ValueError(
                f"request {request.rid}: {request.prompt + request.target} tokens can never fit the KV cache of "
                f"{capacity} tokens (vLLM refuses such a request)"
            )
        request.state = "waiting"
        self._enqueue(request, front=False)

    @property
    def num_waiting(self) -> int:
        self._drop_aborted()
        return len(self._waiting_heap) + len(self._waiting_fifo)

    def abort(self, r: SimRequest) -> int:
        """Take ``r`` out wherever it is (its client went, or the front door stopped it);
        return the tokens it generated. Its full blocks stay in the prefix cache
        (``cached_blocks``), as vLLM keeps a finished request's, for a continuation that
        starts with the same tokens."""
        if r.state in ("prefill", "decode"):
            self._leave_cached(r)
        r.state = "aborted"
        return r.generated

    def generated(self, r: SimRequest) -> int:
        """Tokens ``r`` has generated so far."""
        self._materialise(r)
        return r.generated

    @property
    def num_running(self) -> int:
        return len(self._running)

    def has_unfinished(self) -> bool:
        return bool(self._running) or self.num_waiting > 0

    def running(self) -> list[SimRequest]:
        """The running requests, materialised (O(running): for reports, not every step)."""
        for r in self._running.values():
            self._materialise(r)
        return list(self._running.values())

    # -- one step --------------------------------------------------------------------

    def step(self) -> StepRecord:
        """Schedule and run one step; the clock advances by its modelled cost."""
        limits = self.limits
        budget = limits.max_num_batched_tokens
        preempted = 0
        # 1. Decodes: one token each; a block for each whose context sits on a boundary.
        if limits.num_blocks is not None:
            need = self._phase[(-self._tick) % limits.block_size]
            while need > self._free_blocks() and self._running:
                victim = self._pick_victim()
                if victim.state == "decode" and (victim.offset + self._tick) % limits.block_size == 0:
                    need -= 1
                self._preempt(victim)
                preempted += 1
            self._used_blocks += need
            self._allocated += need
        self._in_step = True  # from here a decode holds the block of this step's token
        budget -= self._num_decoding
        # 2. Running prefills, in admission order.
        chunks: list[tuple[SimRequest, int]] = []
        for r in list(self._prefilling.values()):
            if budget <= 0:
                break
            if r.state != "prefill":  # preempted to make room for an earlier one
                continue
            n = min(r.num_tokens - r.computed, budget)
            fits, victims = self._reserve_blocks(r, n, preempt=True)
            preempted += victims
            if not fits:
                break
            chunks.append((r, n))
            budget -= n
        # 3. Waiting requests, only in a step that preempted nothing.
        admitted = 0
        while not preempted and budget > 0 and len(self._running) < limits.max_num_seqs:
            w = self._peek_waiting()
            if w is None:
                break
            hit = self._take_cached(w)
            n = w.num_tokens - w.computed
            if not limits.chunked_prefill and n > budget:
                self._return_cached(w, hit)
                break
            n = min(n, budget)
            if (limits.reserve_full_prompt and limits.num_blocks is not None
                    and self._blocks(w.num_tokens) - hit > self._free_blocks()):  # fmt: skip
                self._return_cached(w, hit)
                break
            if not self._reserve_blocks(w, n, preempt=False)[0]:
                self._return_cached(w, hit)
                break
            w.cached_blocks = 0
            self._pop_waiting()
            self._start(w)
            chunks.append((w, n))
            budget -= n
            admitted += 1
        chunks = [(r, n) for r, n in chunks if r.state == "prefill"]
        num_decode = self._num_decoding
        # A one-token chunk after computed ones reads as a decode, as vLLM's output does (calibration).
        single = sum(r.computed + 1 for r, n in chunks if n == 1 and r.computed > 0)
        shape = StepShape(
            seqs=num_decode + len(chunks),
            tokens=num_decode + sum(n for _, n in chunks),
            decode_context=self._sum_offset + num_decode * (self._tick + 1) + single,
            prefill_attention=sum(n * (r.computed + n) for r, n in chunks if not (n == 1 and r.computed > 0)),
        )
        self._in_step = False
        if shape.seqs == 0:
            return StepRecord(0.0, shape, num_preempted=preempted)
        seconds = self.cost.of(shape)
        self.clock += seconds
        self.num_steps += 1
        record = StepRecord(seconds, shape, num_preempted=preempted, num_admitted=admitted)
        # 4. Outputs: every decode made a token; a prefill that reached its end made its first.
        self._tick += 1
        while self._ends and self._ends[0][0] <= self._tick:
            _, _, version, r = heapq.heappop(self._ends)
            if r.state == "decode" and r.version == version:
                self._finish(r, record)
        for r, n in chunks:
            r.computed += n
            if r.computed < r.num_tokens:
                continue
            r.generated += 1
            if r.first_token_at is None:
                r.first_token_at = self.clock
            del self._prefilling[r.rid]
            if r.generated >= r.target:
                self._finish(r, record)
            else:
                self._enter_decoding(r)
        return record

    # -- state changes -----------------------------------------------------------------

    def _start(self, r: SimRequest) -> None:
        r.state = "prefill"
        if r.scheduled_at is None:
            r.scheduled_at = self.clock
        self._running[r.rid] = r
        self._prefilling[r.rid] = r
        if self.limits.policy == "priority":
            heapq.heappush(self._victims, (-r.priority, -r.arrival, -self._next_seq(), r))

    def _enter_decoding(self, r: SimRequest) -> None:
        r.state = "decode"
        r.offset = r.computed - self._tick
        r.gen_offset = r.generated - self._tick
        self._num_decoding += 1
        self._sum_offset += r.offset
        self._phase[r.offset % self.limits.block_size] += 1
        heapq.heappush(self._ends, (self._tick + r.target - r.generated, self._next_seq(), r.version, r))

    def _held_blocks(self, r: SimRequest) -> int:
        if r.state == "decode":  # its block for this step's token is already counted
            return self._blocks(r.offset + self._tick + (1 if self._in_step else 0))
        return r.blocks

    def _leave(self, r: SimRequest) -> None:
        """Out of the running set, its blocks freed."""
        self._used_blocks -= self._held_blocks(r)
        if r.state == "decode":
            self._materialise(r)
            self._num_decoding -= 1
            self._sum_offset -= r.offset
            self._phase[r.offset % self.limits.block_size] -= 1
        del self._running[r.rid]
        self._prefilling.pop(r.rid, None)
        r.blocks = 0
        r.version += 1

    def _materialise(self, r: SimRequest) -> None:
        if r.state == "decode":
            r.computed = r.offset + self._tick
            r.generated = r.gen_offset + self._tick

    def _finish(self, r: SimRequest, record: StepRecord) -> None:
        self._leave(r)
        r.state = "done"
        r.finished_at = self.clock
        record.finished.append(r)

    def _preempt(self, r: SimRequest) -> None:
        self._leave_cached(r)
        r.computed = 0
        r.state = "waiting"
        r.num_preemptions += 1
        self.num_preemptions += 1
        self._enqueue(r, front=True)

    def _leave_cached(self, r: SimRequest) -> None:
        """Out of the running set; vLLM frees a request's blocks tail first onto the free
        queue's end and allocates from its head: its full blocks stay cached until that
        many more are allocated."""
        held = self._held_blocks(r)
        free_before = self._free_blocks() if self.limits.num_blocks is not None else 0
        self._leave(r)
        r.cached_blocks = r.computed // self.limits.block_size if self.limits.prefix_caching else 0
        r.cache_stamp = self._allocated + free_before + held

    def _take_cached(self, r: SimRequest) -> int:
        """A preempted request's blocks still in the prefix cache, taken back (at least its
        last token is always recomputed, as vLLM does)."""
        if not r.cached_blocks:
            return 0
        if self.limits.num_blocks is None:  # an unbounded cache evicts nothing
            hit = min(r.cached_blocks, (r.num_tokens - 1) // self.limits.block_size)
            r.computed = r.cache_hit_tokens = hit * self.limits.block_size
            return hit
        survive = max(0, min(r.cached_blocks, r.cache_stamp - self._allocated))
        hit = min(survive, (r.num_tokens - 1) // self.limits.block_size)
        r.computed = hit * self.limits.block_size
        r.cache_hit_tokens = r.computed
        r.blocks = hit
        self._used_blocks += hit
        return hit

    def _return_cached(self, r: SimRequest, hit: int) -> None:
        r.computed = r.blocks = 0
        if self.limits.num_blocks is not None:
            self._used_blocks -= hit

    def _pick_victim(self) -> SimRequest:
        """The running request vLLM preempts first; stale heap entries are dropped."""
        if self.limits.policy == "fcfs":
            return next(reversed(self._running.values()))
        while self._running.get(self._victims[0][3].rid) is not self._victims[0][3]:
            heapq.heappop(self._victims)
        return self._victims[0][3]

    def _reserve_blocks(self, r: SimRequest, n: int, preempt: bool) -> tuple[bool, int]:
        """Blocks for ``r`` to compute ``n`` more tokens; while running, preempt others
        (or itself) to find them. Returns (scheduled, preemptions made)."""
        if self.limits.num_blocks is None:
            return True, 0
        extra = self._blocks(r.computed + n) - self._blocks(r.computed)
        victims = 0
        while extra > self._free_blocks():
            if not preempt:
                return False, 0
            victim = self._pick_victim()
            self._preempt(victim)
            victims += 1
            if victim is r:
                return False, victims
        self._used_blocks += extra
        self._allocated += extra
        r.blocks += extra
        return True, victims

    # -- helpers -------------------------------------------------------------------------

    def _blocks(self, tokens: int) -> int:
        return -(-tokens // self.limits.block_size)

    def _free_blocks(self) -> int:
        assert self.limits.usable_blocks is not None
        return self.limits.usable_blocks - self._used_blocks

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _enqueue(self, r: SimRequest, front: bool) -> None:
        if self.limits.policy == "priority":
            heapq.heappush(self._waiting_heap, (r.priority, r.arrival, self._next_seq(), r))
        elif front:
            self._waiting_fifo.appendleft(r)
        else:
            self._waiting_fifo.append(r)

    def _drop_aborted(self) -> None:
        while self._waiting_heap and self._waiting_heap[0][3].state == "aborted":
            heapq.heappop(self._waiting_heap)
        while self._waiting_fifo and self._waiting_fifo[0].state == "aborted":
            self._waiting_fifo.popleft()

    def _peek_waiting(self) -> SimRequest | None:
        self._drop_aborted()
        if self.limits.policy == "priority":
            return self._waiting_heap[0][3] if self._waiting_heap else None
        return self._waiting_fifo[0] if self._waiting_fifo else None

    def _pop_waiting(self) -> None:
        if self.limits.policy == "priority":
            heapq.heappop(self._waiting_heap)
        else:
            self._waiting_fifo.popleft()
