"""Named routing scorers, in one registry that seqsched's front door, the simulated server
and the Ray Serve router (``seqsched/ray_serve.py``) all take. No torch, no I/O.

A scorer gives each candidate upstream a number, lower being better, and hears which one
was picked. The scorers:
- ``least-work``: predicted tokens left over the requests an upstream runs (seqsched's
  own: an upstream that drew long requests gets fewer new ones);
- ``queue-length``: requests it runs (Ray Serve's default, power of two choices, scores
  this);
- ``round-robin``: the distance from the upstream whose turn it is, blind to everything;
- ``prefix-affinity``: the share of the request's prompt blocks the upstream has not been
  sent before (``prefix.py``), so requests that share a prefix meet the cache that holds
  it. A load-imbalance guard (Ray's ``PrefixCacheAffinityRouter`` has one, SGLang's router
  too) ignores affinity while the candidates' running requests differ by more than
  ``MAX_IMBALANCE``, or when no upstream holds at least ``MIN_MATCH`` of the prompt.

``--routing`` takes one name or a weighted mix, ``prefix-affinity:2,least-work:1``: each
scorer's numbers are divided by their largest over the candidates (so each lies in [0, 1]),
weighed, and summed; the lowest sum wins, ties to the lowest index. One scorer alone picks
by its own numbers.

Scorers read loads through :class:`Loads`, which the front door's ``SlotLedger`` and the Ray
router's replica table both provide.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from seqsched.schedule.prefix import Blocks, PrefixIndex

MAX_IMBALANCE = 8  # running requests between the busiest and idlest candidate
MIN_MATCH = 0.1  # of the prompt's blocks, somewhere, for affinity to count


class Loads(Protocol):
    """What scorers read of the upstreams."""

    @property
    def num_upstreams(self) -> int: ...

    def work(self, upstream: int) -> int: ...

    def running(self, upstream: int | None = None) -> int: ...


@dataclass(frozen=True)
class Routed:
    """What a scorer may know of the request being routed."""

    predicted_len: int = 0
    prefix: Blocks = ()


class Scorer(Protocol):
    def score(self, loads: Loads, candidates: list[int], request: Routed) -> list[float]: ...

    def routed(self, upstream: int, request: Routed) -> None: ...


class LeastWork:
    def score(self, loads: Loads, candidates: list[int], request: Routed) -> list[float]:
        return [float(loads.work(u)) for u in candidates]

    def routed(self, upstream: int, request: Routed) -> None:
        pass


class QueueLength:
    def score(self, loads: Loads, candidates: list[int], request: Routed) -> list[float]:
        return [float(loads.running(u)) for u in candidates]

    def routed(self, upstream: int, request: Routed) -> None:
        pass


class RoundRobin:
    def __init__(self) -> None:
        self.next = 0  # whose turn it is (modulo the upstreams)

    def score(self, loads: Loads, candidates: list[int], request: Routed) -> list[float]:
        return [float((u - self.next) % loads.num_upstreams) for u in candidates]

    def routed(self, upstream: int, request: Routed) -> None:
        self.next = upstream + 1


class PrefixAffinity:
    def __init__(self, capacity: int = 200_000) -> None:
        self.capacity = capacity
        self.indexes: list[PrefixIndex] = []

    def index(self, upstream: int) -> PrefixIndex:
        while len(self.indexes) <= upstream:
            self.indexes.append(PrefixIndex(self.capacity))
        return self.indexes[upstream]

    def score(self, loads: Loads, candidates: list[int], request: Routed) -> list[float]:
        if not request.prefix:
            return [0.0] * len(candidates)
        running = [loads.running(u) for u in candidates]
        if max(running) - min(running) > MAX_IMBALANCE:
            return [0.0] * len(candidates)
        shares = [self.index(u).match(request.prefix) / len(request.prefix) for u in candidates]
        if max(shares) < MIN_MATCH:
            return [0.0] * len(candidates)
        return [1.0 - share for share in shares]

    def routed(self, upstream: int, request: Routed) -> None:
        if request.prefix:
            self.index(upstream).insert(request.prefix)

    def forget(self, upstream: int) -> None:
        """``upstream`` restarted (a replica Ray brought back): its cache is empty."""
        self.index(upstream).clear()


SCORERS: dict[str, Callable[[], Scorer]] = {
    "least-work": LeastWork,
    "queue-length": QueueLength,
    "round-robin": RoundRobin,
    "prefix-affinity": PrefixAffinity,
}


def parse_routing(spec: str) -> list[tuple[str, float]]:
    """``least-work`` or ``prefix-affinity:2,least-work:1`` as (scorer, weight) pairs."""
    mix: list[tuple[str, float]] = []
    for part in str(spec).split(","):
        name, _, weight = part.strip().partition(":")
        if name not in SCORERS:
            raise ValueError(f"routing ({spec!r}) must be a scorer or a weighted mix of scorers (NAME:WEIGHT,...), "
                             f"the scorers being {', '.join(SCORERS)}; {name!r} is none")  # fmt: skip
        try:
            value = float(weight) if weight else 1.0
        except ValueError:
            value = -1.0
        if not value > 0 or value == float("inf"):
            raise ValueError(f"routing ({spec!r}): the weight of {name} must be a positive number, got {weight!r}")
        if any(name == other for other, _ in mix):
            raise ValueError(f"routing ({spec!r}): {name} is given twice")
        mix.append((name, value))
    return mix


def combine(scores: list[list[float]], weights: list[float]) -> list[float]:
    """One scorer: its own numbers; several: each divided by its largest, weighed, summed."""
    if len(scores) == 1:
        return scores[0]
    total = [0.0] * len(scores[0])
    for values, weight in zip(scores, weights, strict=True):
        top = max(values)
        for i, value in enumerate(values):
            total[i] += weight * (value / top if top > 0 else 0.0)
    return total
