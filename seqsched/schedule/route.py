"""Which upstream serves a request: filter, then score, then pick. No torch, no I/O.

NOTE on the steps (as llm-d's scheduler splits them).
- **Filter**: upstreams with a free slot, less the ones that already failed this request
  (when only those are free, they are tried anyway: better a second try than a wait),
  and, for the batch lane, only those with more than ``headroom`` free slots.
- **Score**: the named scorers of ``--routing`` (``scorers.py``: ``least-work``,
  ``queue-length``, ``round-robin``, ``prefix-affinity``, or a weighted mix of them).
- **Pick**: the lowest score; ties go to the lowest index. Every scorer hears the pick
  (round-robin's turn moves, prefix affinity records the prompt's blocks there).
"""

from __future__ import annotations

from seqsched.schedule.ledger import SlotLedger
from seqsched.schedule.scorers import SCORERS, Routed, Scorer, combine, parse_routing

Routing = str  # a scorer's name or a weighted mix (``scorers.parse_routing``)
ROUTINGS: tuple[str, ...] = tuple(SCORERS)
_NOBODY = Routed()


class Router:
    """Picks an upstream from the ledger with its scorers (which hold their own state:
    round-robin's turn, each upstream's routed prefixes)."""

    def __init__(self, routing: Routing = "least-work") -> None:
        self.routing = routing
        self.mix = parse_routing(routing)
        self.scorers: list[Scorer] = [SCORERS[name]() for name, _ in self.mix]
        self.weights = [weight for _, weight in self.mix]
        self.needs_prefix = any(name == "prefix-affinity" for name, _ in self.mix)

    def pick(
        self,
        ledger: SlotLedger,
        exclude: frozenset[int] = frozenset(),
        headroom: int = 0,
        request: Routed = _NOBODY,
        only: frozenset[int] | None = None,
    ) -> int | None:
        """An upstream with more than ``headroom`` free slots (avoiding ``exclude`` while
        another will do; among ``only``, when given: those with KV room), or None when
        there is none."""
        free = [u for u in range(ledger.num_upstreams) if ledger.free(u) > headroom and (only is None or u in only)]
        candidates = [u for u in free if u not in exclude] or free
        if not candidates:
            return None
        if len(candidates) == 1:
            pick = candidates[0]
        else:
            scores = combine([s.score(ledger, candidates, request) for s in self.scorers], self.weights)
            pick = candidates[min(range(len(candidates)), key=lambda i: (scores[i], candidates[i]))]
        for scorer in self.scorers:
            scorer.routed(pick, request)
        return pick
