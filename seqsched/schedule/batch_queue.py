"""The batch lane's waiting requests: earlier batches first, and inside one, shortest or
longest predicted first, as the caller asks at each pop. No torch, no I/O.

Why both ends: the lane orders by traffic (``batch_lane.py``): while interactive requests
are about, short batch requests first, so slots turn over and an arrival finds one soon;
when they are quiet, long ones first, so the batch does not end on a tail of long answers
with slots idle. ``fcfs`` pops in submission order. A request put back (preempted, to be
continued) goes before all others: it already holds progress.

Each batch is a group; a group's requests sit in a min-heap, a max-heap and a FIFO at
once, and a request popped from one is skipped lazily in the others: every operation is
O(log n) amortised.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

T = TypeVar("T")
LaneOrder = Literal["sjf", "ljf", "fcfs"]


@dataclass(eq=False)
class Queued(Generic[T]):
    seq: int
    key: float
    group: int
    item: T
    state: str = "waiting"  # waiting | popped | removed


@dataclass
class _Group(Generic[T]):
    shortest: list[tuple[float, int, Queued[T]]] = field(default_factory=list)
    longest: list[tuple[float, int, Queued[T]]] = field(default_factory=list)
    arrival: deque[Queued[T]] = field(default_factory=deque)
    waiting: int = 0


class BatchQueue(Generic[T]):
    def __init__(self) -> None:
        self._groups: dict[int, _Group[T]] = {}  # insertion order is group order
        self._front: deque[Queued[T]] = deque()
        self._seq = 0
        self._waiting = 0

    def __len__(self) -> int:
        return self._waiting

    def push(self, item: T, predicted_len: float, group: int = 0) -> Queued[T]:
        """Queue ``item`` in ``group`` (groups are served in the order they first appear)."""
        entry = Queued(self._seq, float(predicted_len), group, item)
        self._seq += 1
        g = self._groups.setdefault(group, _Group())
        heapq.heappush(g.shortest, (entry.key, entry.seq, entry))
        heapq.heappush(g.longest, (-entry.key, entry.seq, entry))
        g.arrival.append(entry)
        g.waiting += 1
        self._waiting += 1
        return entry

    def push_front(self, item: T, predicted_len: float, group: int = 0) -> Queued[T]:
        """Put ``item`` back before every waiting request."""
        entry = Queued(-1, float(predicted_len), group, item)
        self._front.append(entry)
        self._waiting += 1
        return entry

    def pop(self, order: LaneOrder) -> Queued[T] | None:
        """The next request: one put back, else by ``order`` in the earliest group."""
        while self._front:
            entry = self._front.popleft()
            if entry.state == "waiting":
                return self._take(entry, None)
        while self._groups:
            group_id, g = next(iter(self._groups.items()))
            if g.waiting == 0:
                del self._groups[group_id]
                continue
            return self._take(self._first(g, order), g)
        return None

    def remove(self, entry: Queued[T]) -> bool:
        """Take a waiting request out; False if it was not waiting."""
        if entry.state != "waiting":
            return False
        entry.state = "removed"
        self._waiting -= 1
        g = self._groups.get(entry.group) if entry.seq >= 0 else None
        if g is not None:
            g.waiting -= 1
        return True

    def _first(self, g: _Group[T], order: LaneOrder) -> Queued[T]:
        if order == "fcfs":
            while g.arrival[0].state != "waiting":
                g.arrival.popleft()
            return g.arrival[0]
        heap = g.shortest if order == "sjf" else g.longest
        while heap[0][2].state != "waiting":
            heapq.heappop(heap)
        return heap[0][2]

    def _take(self, entry: Queued[T], g: _Group[T] | None) -> Queued[T]:
        entry.state = "popped"
        self._waiting -= 1
        if g is not None:
            g.waiting -= 1
        return entry
