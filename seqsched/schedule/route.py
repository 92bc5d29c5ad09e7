"""Which upstream serves a request: least predicted outstanding work, or round-robin.
No torch, no I/O.

NOTE on least work. Each upstream has ``slots`` requests it may run at once (its
``max_num_seqs``). Its outstanding work is the sum, over the requests it runs, of the
tokens each is still predicted to generate (predicted length less what it has generated,
at least 1: a request that outran its prediction still holds a slot). A new request goes
to the upstream with a free slot and the least outstanding work, so one that drew long
requests gets fewer new ones; ties go to the lowest index. Round-robin takes the next
upstream with a free slot in turn, blind to lengths.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Routing = Literal["least-work", "round-robin"]
ROUTINGS: tuple[Routing, ...] = ("least-work", "round-robin")


@dataclass
class _Upstream:
    slots: int
    running: dict[int, tuple[int, int]] = field(default_factory=dict)  # request -> (predicted, generated)

    @property
    def free(self) -> int:
        return self.slots - len(self.running)

    @property
    def work(self) -> int:
        return sum(max(1, predicted - generated) for predicted, generated in self.running.values())


class Router:
    """Slots and predicted work per upstream; the dispatcher asks it where to send."""

    def __init__(self, slots: list[int], routing: Routing = "least-work") -> None:
        if not slots:
            raise ValueError("a router needs at least one upstream")
        if any(n < 1 for n in slots):
            raise ValueError(f"every upstream needs at least one slot, got {slots}")
        if routing not in ROUTINGS:
            raise ValueError(f"routing ({routing!r}) must be one of {', '.join(ROUTINGS)}")
        self.routing = routing
        self._upstreams = [_Upstream(n) for n in slots]
        self._next = 0  # round-robin's turn
        self._where: dict[int, int] = {}  # request -> upstream

    @property
    def has_free_slot(self) -> bool:
        return any(u.free > 0 for u in self._upstreams)

    def free_slots(self) -> int:
        return sum(max(0, u.free) for u in self._upstreams)

    def work(self, upstream: int) -> int:
        return self._upstreams[upstream].work

    def running(self, upstream: int) -> int:
        return len(self._upstreams[upstream].running)

    def assign(self, request: int, predicted_len: int, exclude: frozenset[int] = frozenset()) -> int | None:
        """Pick an upstream with a free slot for ``request`` and take the slot; None when
        every upstream (but those excluded: ones that just failed it) is full."""
        candidates = [i for i, u in enumerate(self._upstreams) if u.free > 0 and i not in exclude]
        if not candidates:
            return None
        if self.routing == "round-robin":
            n = len(self._upstreams)
            pick = min(candidates, key=lambda i: (i - self._next) % n)
            self._next = (pick + 1) % n
        else:
            pick = min(candidates, key=lambda i: (self._upstreams[i].work, i))
        self._upstreams[pick].running[request] = (max(1, int(predicted_len)), 0)
        self._where[request] = pick
        return pick

    def progress(self, request: int, num_generated: int) -> None:
        """``request`` has generated ``num_generated`` tokens so far."""
        upstream = self._where.get(request)
        if upstream is not None:
            predicted, _ = self._upstreams[upstream].running[request]
            self._upstreams[upstream].running[request] = (predicted, num_generated)

    def release(self, request: int) -> None:
        """``request`` finished (or failed, or its client left): its slot is free."""
        upstream = self._where.pop(request, None)
        if upstream is not None:
            self._upstreams[upstream].running.pop(request, None)
