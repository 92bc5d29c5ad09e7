"""Which upstream serves a request: filter, then score, then pick. No torch, no I/O.

NOTE on the steps (as llm-d's scheduler splits them).
- **Filter**: upstreams with a free slot, less the ones that already failed this request
  (when only those are free, they are tried anyway: better a second try than a wait),
  and, for the batch lane, only those with more than ``headroom`` free slots.
- **Score**: ``least-work``, the predicted tokens left over the requests an upstream
  runs (``ledger.py``), so one that drew long requests gets fewer new ones;
  ``round-robin``, the distance from the upstream whose turn it is, blind to lengths.
- **Pick**: the lowest score; ties go to the lowest index.
"""

from __future__ import annotations

from typing import Literal

from seqsched.schedule.ledger import SlotLedger

Routing = Literal["least-work", "round-robin"]
ROUTINGS: tuple[Routing, ...] = ("least-work", "round-robin")


class Router:
    """Picks an upstream from the ledger; holds only round-robin's turn."""

    def __init__(self, routing: Routing = "least-work") -> None:
        if routing not in ROUTINGS:
            raise ValueError(f"routing ({routing!r}) must be one of {', '.join(ROUTINGS)}")
        self.routing = routing
        self._next = 0  # round-robin's turn

    def pick(self, ledger: SlotLedger, exclude: frozenset[int] = frozenset(), headroom: int = 0) -> int | None:
        """An upstream with more than ``headroom`` free slots (avoiding ``exclude`` while
        another will do), or None when there is none."""
        free = [u for u in range(ledger.num_upstreams) if ledger.free(u) > headroom]
        candidates = [u for u in free if u not in exclude] or free
        if not candidates:
            return None
        if self.routing == "round-robin":
            n = ledger.num_upstreams
            pick = min(candidates, key=lambda u: (u - self._next) % n)
            self._next = (pick + 1) % n
            return pick
        if len(candidates) == 1:  # no score needed (the work is a sum over the running)
            return candidates[0]
        return min(candidates, key=lambda u: (ledger.work(u), u))
