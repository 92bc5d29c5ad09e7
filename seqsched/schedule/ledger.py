"""The slot ledger: who runs where, in which lane, with how much predicted work left. No
torch, no I/O.

Each upstream runs at most ``slots`` requests at once (its ``max_num_seqs``). A request
that holds a slot is *running*; its predicted work left is its predicted length less what
it has generated, at least 1 (a request that outran its prediction still holds a slot).
The ledger is the one record of held slots: a slot is taken by :meth:`take` and given
back by :meth:`give_back`, which is idempotent, so every way a request can end (an
answer, an error, a client gone, a preemption) may give it back without counting.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

Lane = Literal["interactive", "batch"]
LANES: tuple[Lane, ...] = ("interactive", "batch")


@dataclass(slots=True)
class Held:
    """One running request."""

    number: int  # the front door's id for it
    upstream: int
    lane: Lane
    predicted_len: int
    generated: int = 0

    @property
    def work_left(self) -> int:
        return max(1, self.predicted_len - self.generated)


class SlotLedger:
    def __init__(self, slots: list[int]) -> None:
        if not slots:
            raise ValueError("a ledger needs at least one upstream")
        if any(n < 1 for n in slots):
            raise ValueError(f"every upstream needs at least one slot, got {slots}")
        self.slots = list(slots)
        self._held: list[dict[int, Held]] = [{} for _ in slots]  # per upstream, in grant order
        self._where: dict[int, Held] = {}
        self._in_lane = dict.fromkeys(LANES, 0)

    @property
    def num_upstreams(self) -> int:
        return len(self.slots)

    def set_slots(self, upstream: int, slots: int) -> None:
        """``upstream`` now takes ``slots`` requests at once (0: it is down; the requests it
        holds keep their slots until they end, which they will, with errors)."""
        if slots < 0:
            raise ValueError(f"slots ({slots}) must be >= 0")
        self.slots[upstream] = slots

    def free(self, upstream: int) -> int:
        return self.slots[upstream] - len(self._held[upstream])

    def free_slots(self) -> int:
        return sum(max(0, self.free(u)) for u in range(len(self.slots)))

    def running(self, upstream: int | None = None, lane: Lane | None = None) -> int:
        """Requests running (on ``upstream``, in ``lane``; None: all)."""
        if upstream is None:
            return len(self._where) if lane is None else self._in_lane[lane]
        return sum(1 for h in self._held[upstream].values() if lane is None or h.lane == lane)

    def work(self, upstream: int) -> int:
        """Predicted tokens left over the requests ``upstream`` runs."""
        return sum(h.work_left for h in self._held[upstream].values())

    def holders(self, upstream: int | None = None) -> Iterator[Held]:
        """Running requests, in grant order (on one upstream, or on all)."""
        if upstream is not None:
            return iter(list(self._held[upstream].values()))
        return iter(list(self._where.values()))

    def get(self, number: int) -> Held | None:
        return self._where.get(number)

    def take(self, number: int, upstream: int, lane: Lane, predicted_len: int, generated: int = 0) -> Held:
        """``number`` takes a slot on ``upstream`` (which must have one free)."""
        assert number not in self._where, f"request {number} already holds a slot"
        assert self.free(upstream) > 0, f"upstream {upstream} has no free slot"
        held = Held(number, upstream, lane, max(1, int(predicted_len)), generated)
        self._held[upstream][number] = held
        self._where[number] = held
        self._in_lane[lane] += 1
        return held

    def progress(self, number: int, generated: int) -> None:
        """``number`` has generated ``generated`` tokens so far (a no-op once released)."""
        held = self._where.get(number)
        if held is not None:
            held.generated = generated

    def give_back(self, number: int) -> Held | None:
        """Free ``number``'s slot; None if it held none (already given back)."""
        held = self._where.pop(number, None)
        if held is not None:
            del self._held[held.upstream][number]
            self._in_lane[held.lane] -= 1
        return held
