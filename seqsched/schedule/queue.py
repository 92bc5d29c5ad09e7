"""The waiting queue of an online server: which waiting request goes next. No torch, no I/O.

NOTE on the policy and the aging rule. Requests arrive one at a time, each with a
predicted output length; a dispatcher pops one whenever an upstream has a free slot.
- ``fcfs`` pops in arrival order: a plain server.
- ``sjf`` pops the shortest predicted first (ties in arrival order), which minimises mean
  latency when requests wait; ``ljf`` the longest first.
- Aging, ``max_bypass``: a waiting request is *overtaken* each time a request that
  arrived after it is popped before it. When the oldest waiting request has been
  overtaken ``max_bypass`` times, it is popped next, whatever its prediction.

Bound: no request is ever overtaken more than ``max_bypass`` times. Proof: let ``w`` be
the oldest waiting request and ``r`` any other waiting one, so ``w`` arrived before
``r``. A pop that overtakes ``r`` (a request newer than ``r``) also overtakes ``w``, so
``overtaken(r) <= overtaken(w)``. The rule pops ``w`` as soon as ``overtaken(w)`` reaches
``max_bypass``, before any further overtaking, so ``overtaken(w) <= max_bypass`` for
whoever is oldest, and therefore for every waiting request. ``tests/test_queue.py``
checks the bound on random arrivals, pops and cancellations.

NOTE on ``deadline``, the aging rule in time. A request arriving at ``a`` with predicted
length ``L`` gets the key ``a + slack * L`` (``slack``: seconds of waiting one predicted
token is worth), and the smallest key goes first: among requests that arrive together the
shortest goes first, as under ``sjf``, but a shorter request that arrives ``slack * dL``
seconds later no longer overtakes one ``dL`` tokens longer. ``slack`` 0 is ``fcfs``, an
infinite one ``sjf``.

Bound: a request ``r`` (arrival ``a``, key ``K = a + slack * L``) is overtaken only by
requests that arrived within ``slack * L`` seconds after it. Proof: a request ``q`` popped
while ``r`` waits has ``key(q) <= K`` (the heap pops the smallest; a tie goes to the
earlier arrival); ``key(q) >= arrival(q)`` since ``slack * L(q) >= 0``; so ``arrival(q) <=
K``. However many short requests keep coming, those arriving after ``K`` wait behind ``r``:
its wait is at most the time to serve what arrived in ``[a, K]`` and before it, a window of
``slack * L`` seconds, not an unbounded one. ``tests/test_queue.py`` checks it against an
endless stream of short requests. Keys are absolute times, so the same order can be sent
to vLLM as its ``priority`` (``front_door.py``), and vLLM's own queue ages too.

A request put back (``push_front``: one the front door took a slot from, to be continued)
goes before every other, as vLLM's ``prepend_request`` does; it already had its turn, so
the aging count is about first turns and it neither counts as overtaking nor as overtaken.

The same queue, filled at once and emptied, is the offline stream plan's ``sjf`` order
(``bounded_sort``): one rule, offline and online.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from seqsched.schedule.config import DEFAULT_SLACK_S, ONLINE_POLICIES, OnlinePolicy

T = TypeVar("T")


@dataclass
class Waiting(Generic[T]):
    """One queued request: its arrival number, sort key and the caller's payload."""

    seq: int
    key: float
    item: T
    state: str = "waiting"  # waiting | popped | removed


class WaitingQueue(Generic[T]):
    """Waiting requests in policy order, with the aging bound. Every operation is
    O(log n) amortised; a removed request (a client gone) costs nothing later."""

    def __init__(
        self, policy: OnlinePolicy = "fcfs", max_bypass: int | None = None, slack_s: float = DEFAULT_SLACK_S
    ) -> None:
        if policy not in ONLINE_POLICIES:
            raise ValueError(f"policy ({policy!r}) must be one of {', '.join(ONLINE_POLICIES)}")
        if max_bypass is not None and max_bypass < 0:
            raise ValueError(f"max_bypass ({max_bypass}) must be >= 0 or None")
        if not slack_s >= 0 or slack_s == float("inf"):
            raise ValueError(f"slack_s ({slack_s}) must be a number of seconds >= 0")
        self.policy = policy
        self.slack_s = slack_s
        self.max_bypass = max_bypass
        self._heap: list[tuple[float, int]] = []
        self._by_seq: dict[int, Waiting[T]] = {}  # every seq from _oldest on
        self._next_seq = 0
        self._oldest = 0  # every request that arrived before it has left
        self._popped = 0
        self._popped_before_oldest = 0
        self._waiting = 0
        self._front: deque[Waiting[T]] = deque()  # put back: before everyone, in the order put

    def __len__(self) -> int:
        return self._waiting

    def key(self, predicted_len: float, now: float = 0.0) -> float:
        """The order a request arriving ``now`` takes (smaller first)."""
        if self.policy == "deadline":
            return now + self.slack_s * float(predicted_len)
        return {"fcfs": 0.0, "sjf": float(predicted_len), "ljf": -float(predicted_len)}[self.policy]

    def push(self, item: T, predicted_len: float = 0.0, now: float = 0.0) -> Waiting[T]:
        """Queue ``item``, arriving ``now``; ``predicted_len`` orders it under ``sjf``, ``ljf``
        and ``deadline``."""
        key = self.key(predicted_len, now)
        entry = Waiting(self._next_seq, key, item)
        self._by_seq[entry.seq] = entry
        heapq.heappush(self._heap, (key, entry.seq))
        self._next_seq += 1
        self._waiting += 1
        return entry

    def push_front(self, item: T, predicted_len: float = 0.0) -> Waiting[T]:
        """Put ``item`` back before every waiting request (it was taken and given back)."""
        entry = Waiting(-1, float(predicted_len), item)
        self._front.append(entry)
        self._waiting += 1
        return entry

    def pop(self) -> Waiting[T] | None:
        """The next request by policy and aging, or None when nothing waits."""
        while self._front:
            entry = self._front.popleft()
            if entry.state == "waiting":
                entry.state = "popped"
                self._waiting -= 1
                return entry
        self._advance()
        if not self._waiting:
            return None
        oldest = self._by_seq[self._oldest]
        # Every request before the oldest has left, so those popped since are all newer.
        overtaken = self._popped - self._popped_before_oldest
        if self.policy == "fcfs" or (self.max_bypass is not None and overtaken >= self.max_bypass):
            pick = oldest  # its heap entry goes stale and is skipped later
        else:
            while not self._live(self._heap[0][1]):
                heapq.heappop(self._heap)
            pick = self._by_seq[heapq.heappop(self._heap)[1]]
        pick.state = "popped"
        self._popped += 1
        self._waiting -= 1
        return pick

    def remove(self, entry: Waiting[T]) -> bool:
        """Take a waiting request out (its client left); False if it was not waiting."""
        if entry.state != "waiting":
            return False
        entry.state = "removed"
        self._waiting -= 1
        return True

    def waiting(self) -> Iterator[Waiting[T]]:
        """The waiting requests: those put back first, then the rest in arrival order."""
        return (e for e in (*self._front, *self._by_seq.values()) if e.state == "waiting")

    def _advance(self) -> None:
        """Move ``_oldest`` past requests that have left, counting the popped ones."""
        while self._oldest < self._next_seq and self._by_seq[self._oldest].state != "waiting":
            if self._by_seq.pop(self._oldest).state == "popped":
                self._popped_before_oldest += 1
            self._oldest += 1

    def _live(self, seq: int) -> bool:
        return seq >= self._oldest and self._by_seq[seq].state == "waiting"


def bounded_order(keys: list[float], max_bypass: int | None) -> list[int]:
    """Positions by key (ties by position) under the aging bound: the queue filled at once
    and emptied, as the offline stream plan uses it."""
    queue: WaitingQueue[int] = WaitingQueue("sjf", max_bypass)
    for i, key in enumerate(keys):
        queue.push(i, key)
    order = []
    while (entry := queue.pop()) is not None:
        order.append(entry.item)
    return order
