"""The front door: the one object that decides, for ``seqsched serve`` and for the
simulated server alike, which waiting request takes which upstream slot, and which batch
request gives its slot up. No torch, no I/O, no clock of its own: the caller says ``now``.

NOTE on a decision (``schedule``), in order:
1. **Interactive first.** While interactive requests wait, each takes a free slot, in the
   interactive queue's order (``queue.py``: fcfs, sjf or ljf by predicted length, with the
   aging bound), on the upstream the router picks (``route.py``). When no slot is free
   and batch work holds one, the batch request with the most predicted work left is
   preempted (``batch_lane.py``): its slot goes to the interactive request at once, and
   it goes back to the front of the batch lane with the tokens it has, to be continued.
2. **Then batch work**, in what is left: an upstream with more than ``headroom`` free
   slots, while fewer batch requests run than the governor's cap; shortest or longest
   predicted first by traffic (``batch_queue.py``). No batch request is granted in a
   decision that preempted one: interactive demand has just outrun the free slots.

Every grant is a *lease*, numbered; the ledger (``ledger.py``) holds leases, and
``release(lease)`` is idempotent. A request preempted and granted again holds a new lease,
so a late release of the old one can never free the new one. The caller applies a
:class:`DoorPlan` (forward the grants, stop the preempted calls) and reports back: a
request done (``release``), its progress (``progress``), an interactive request's time per
output token (``observe_interactive``), a client gone while waiting (``leave``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from seqsched.schedule.batch_lane import BatchGovernor, BatchLaneConfig
from seqsched.schedule.batch_queue import BatchQueue, Queued
from seqsched.schedule.config import DEFAULT_SLACK_S, ONLINE_POLICIES, OnlinePolicy
from seqsched.schedule.kv_door import DoorKV
from seqsched.schedule.ledger import LANES, Held, Lane, SlotLedger
from seqsched.schedule.prefix import Blocks
from seqsched.schedule.queue import Waiting, WaitingQueue
from seqsched.schedule.route import Router, Routing
from seqsched.schedule.scorers import Routed, parse_routing


@dataclass(frozen=True)
class DoorConfig:
    """The interactive queue's ``policy`` and aging bound ``max_bypass`` (and, for
    ``deadline``, ``slack_s``: seconds of waiting one predicted token is worth); ``routing``
    across upstreams; the batch lane's rules (``batch_lane.py``)."""

    policy: OnlinePolicy = "sjf"
    max_bypass: int | None = 128
    routing: Routing = "least-work"
    batch: BatchLaneConfig = field(default_factory=BatchLaneConfig)
    slack_s: float = DEFAULT_SLACK_S
    kv_blocks: int | None = None  # each upstream's KV cache, in blocks: KV-aware admission (``kv_door.py``)
    block_size: int = 16
    kv_margin: float = 1.0

    def __post_init__(self) -> None:
        if self.policy not in ONLINE_POLICIES:
            raise ValueError(f"policy ({self.policy!r}) must be one of {', '.join(ONLINE_POLICIES)}")
        if not self.slack_s >= 0 or self.slack_s == float("inf"):
            raise ValueError(f"slack_s ({self.slack_s}) must be a number of seconds >= 0")
        if self.kv_blocks is not None and (self.kv_blocks < 1 or self.block_size < 1 or not self.kv_margin > 0):
            raise ValueError(f"KV admission needs kv_blocks >= 1, block_size >= 1 and kv_margin > 0, got "
                             f"{self.kv_blocks}, {self.block_size} and {self.kv_margin}")  # fmt: skip
        if self.max_bypass is not None and self.max_bypass < 0:
            raise ValueError(f"max_bypass ({self.max_bypass}) must be >= 0 or None")
        parse_routing(self.routing)  # a clear error for a bad name or weight


@dataclass(eq=False)
class Ticket:
    """One request at the door. ``generated``: tokens it has so far (a preempted batch
    request keeps them); ``group``: its batch (earlier batches go first); ``preemptible``:
    whether it may be stopped and continued (a batch request that cannot be continued
    exactly is never chosen)."""

    request_id: str
    predicted_len: int
    lane: Lane = "interactive"
    group: int = 0
    generated: int = 0
    exclude: frozenset[int] = frozenset()  # upstreams that already failed it
    arrived_at: float = 0.0
    granted_at: float | None = None
    upstream: int | None = None
    lease: int | None = None  # the slot it holds now
    num_preemptions: int = 0
    preemptible: bool = True
    prefix: Blocks = ()  # its prompt's block keys, when routing wants prefix affinity
    prompt_tokens: int = 0  # what KV admission charges for its prompt
    priority: int | None = None  # vLLM's priority, when not the predicted length (``deadline``: its key in ms)
    entry: Waiting[Ticket] | Queued[Ticket] | None = None

    def __post_init__(self) -> None:
        if self.lane not in LANES:
            raise ValueError(f"lane ({self.lane!r}) must be one of {', '.join(LANES)}")

    @property
    def waiting(self) -> bool:
        return self.entry is not None and self.entry.state == "waiting"


@dataclass
class DoorPlan:
    grants: list[tuple[Ticket, int]] = field(default_factory=list)  # (ticket, upstream)
    preempted: list[Ticket] = field(default_factory=list)  # stop upstream; they wait again

    def __bool__(self) -> bool:
        return bool(self.grants or self.preempted)


class FrontDoor:
    def __init__(self, config: DoorConfig, slots: list[int]) -> None:
        self.config = config
        self.ledger = SlotLedger(slots)
        self.router = Router(config.routing)
        self.interactive: WaitingQueue[Ticket] = WaitingQueue(config.policy, config.max_bypass, config.slack_s)
        self.batch: BatchQueue[Ticket] = BatchQueue()
        headroom = config.batch.headroom
        self.governor = BatchGovernor(config.batch, sum(max(0, n - headroom) for n in slots))
        self.num_preemptions = 0
        kv_blocks = config.kv_blocks
        self.kv = DoorKV(len(slots), kv_blocks, config.block_size, config.kv_margin) if kv_blocks else None
        self.num_held_for_kv = 0  # decisions that kept a request waiting for KV room
        # Set to [] to record: ("arrive" | "grant" | "preempt" | "release", request id, upstream).
        self.decisions: list[tuple[str, str, int | None]] | None = None
        self._leases = itertools.count()
        self._holder: dict[int, Ticket] = {}  # lease -> ticket

    # -- what the caller reports ------------------------------------------------------

    def arrive(self, ticket: Ticket, now: float) -> None:
        """``ticket`` waits in its lane from ``now``."""
        assert ticket.lease is None and not ticket.waiting, f"{ticket.request_id} is already at the door"
        ticket.arrived_at = now
        self._record("arrive", ticket, None)
        if ticket.lane == "interactive":
            self.governor.interactive_arrived(now)
            ticket.entry = self.interactive.push(ticket, ticket.predicted_len, now)
            if self.config.policy == "deadline" and ticket.priority is None:  # vLLM's queue ages the same way
                ticket.priority = round(ticket.entry.key * 1000)
        else:
            ticket.entry = self.batch.push(ticket, ticket.predicted_len, ticket.group)

    def leave(self, ticket: Ticket) -> bool:
        """A waiting ticket leaves (its client went); False if it was not waiting."""
        entry = ticket.entry
        if entry is None:
            return False
        if isinstance(entry, Waiting):
            return self.interactive.remove(entry)
        return self.batch.remove(entry)

    def release(self, lease: int | None) -> bool:
        """The slot of ``lease`` is free (the request ended, however); idempotent."""
        if lease is None:
            return False
        held = self.ledger.give_back(lease)
        if self.kv is not None:
            self.kv.release(lease)
        ticket = self._holder.pop(lease, None)
        if ticket is not None and ticket.lease == lease:
            ticket.lease = ticket.upstream = None
        if held is not None and ticket is not None:
            self._record("release", ticket, held.upstream)
        return held is not None

    def progress(self, ticket: Ticket, generated: int) -> None:
        """``ticket`` has ``generated`` tokens so far (across continuations)."""
        ticket.generated = generated
        if ticket.lease is not None:
            self.ledger.progress(ticket.lease, generated)
            if self.kv is not None:
                self.kv.grow(ticket.lease, generated)

    def observe_interactive(self, tpot_s: float) -> None:
        self.governor.observe(tpot_s)

    # -- the decision ------------------------------------------------------------------

    @property
    def num_waiting(self) -> int:
        return len(self.interactive) + len(self.batch)

    def waiting_in(self, lane: Lane) -> int:
        return len(self.interactive) if lane == "interactive" else len(self.batch)

    def running(self, lane: Lane | None = None) -> list[Ticket]:
        """The tickets holding a slot (in ``lane``), in grant order."""
        return [self._holder[h.number] for h in self.ledger.holders() if lane is None or h.lane == lane]

    def wants_progress(self) -> bool:
        """Whether the next decision may preempt (so batch progress should be current)."""
        return bool(len(self.interactive)) and self.ledger.free_slots() == 0 and self.ledger.running(lane="batch") > 0

    def schedule(self, now: float) -> DoorPlan:
        plan = DoorPlan()
        self._admit_interactive(plan, now)
        if not plan.preempted:
            self.governor.adapt(now)
            self._enforce_cap(plan)
            self._admit_batch(plan, now)
        return plan

    def _enforce_cap(self, plan: DoorPlan) -> None:
        """With a TPOT target, batch requests over the governor's cap are stopped (most
        work left first), so a lower cap acts now rather than as long answers end."""
        if not self.governor.enforced:
            return
        while self.ledger.running(lane="batch") > self.governor.limit and self._preempt_one(plan):
            pass

    def _admit_interactive(self, plan: DoorPlan, now: float) -> None:
        while len(self.interactive):
            if self.ledger.free_slots() == 0 and not self._preempt_one(plan):
                return
            entry = self.interactive.pop()
            assert entry is not None
            ticket = entry.item
            routed = Routed(ticket.predicted_len, ticket.prefix)
            upstream = self.router.pick(self.ledger, ticket.exclude, request=routed, only=self._kv_room(ticket))
            if upstream is None:  # a slot, but no KV room for it anywhere: it waits, first in line
                ticket.entry = self.interactive.push_front(ticket, ticket.predicted_len)
                self.num_held_for_kv += 1
                return
            self._grant(ticket, upstream, plan, now)

    def _admit_batch(self, plan: DoorPlan, now: float) -> None:
        headroom = self.config.batch.headroom
        while len(self.batch) and self.ledger.running(lane="batch") < self.governor.limit:
            if not any(self.ledger.free(u) > headroom for u in range(self.ledger.num_upstreams)):
                return
            entry = self.batch.pop(self.governor.order(now, self.ledger.running(lane="interactive")))
            assert entry is not None
            ticket = entry.item
            routed = Routed(ticket.predicted_len, ticket.prefix)
            upstream = self.router.pick(self.ledger, ticket.exclude, headroom, routed, self._kv_room(ticket))
            if upstream is None:  # no KV room for it: batch work waits (first in its lane)
                ticket.entry = self.batch.push_front(ticket, ticket.predicted_len, ticket.group)
                self.num_held_for_kv += 1
                return
            self._grant(ticket, upstream, plan, now)

    def _preempt_one(self, plan: DoorPlan) -> bool:
        """Free a slot for a waiting interactive request by stopping the batch request
        with the most predicted work left (the latest granted among equals)."""
        if not self.config.batch.preempt:
            return False
        ledger = self.ledger  # only where stopping one frees a usable slot (not on an upstream that is down)
        victims = [h for h in ledger.holders() if h.lane == "batch" and self._holder[h.number].preemptible
                   and ledger.free(h.upstream) >= 0]  # fmt: skip
        if not victims:
            return False
        held: Held = max(victims, key=lambda h: (h.work_left, h.number))
        ticket = self._holder[held.number]
        self.ledger.give_back(held.number)
        if self.kv is not None:
            self.kv.release(held.number)
        del self._holder[held.number]
        ticket.lease = ticket.upstream = None
        ticket.num_preemptions += 1
        self.num_preemptions += 1
        ticket.entry = self.batch.push_front(ticket, ticket.predicted_len, ticket.group)
        plan.preempted.append(ticket)
        self._record("preempt", ticket, held.upstream)
        return True

    def _kv_room(self, ticket: Ticket) -> frozenset[int] | None:
        """The upstreams with KV room for ``ticket`` (None: no KV admission)."""
        if self.kv is None:
            return None
        kv = self.kv
        return frozenset(u for u in range(self.ledger.num_upstreams)
                         if kv.fits(u, ticket.prompt_tokens, ticket.predicted_len, ticket.generated))  # fmt: skip

    def _grant(self, ticket: Ticket, upstream: int, plan: DoorPlan, now: float) -> None:
        lease = next(self._leases)
        if self.kv is not None:
            self.kv.admit(upstream, lease, ticket.prompt_tokens, ticket.predicted_len, ticket.generated)
        if ticket.granted_at is None:
            ticket.granted_at = now
        self.ledger.take(lease, upstream, ticket.lane, ticket.predicted_len, ticket.generated)
        self._holder[lease] = ticket
        ticket.lease, ticket.upstream, ticket.entry = lease, upstream, None
        plan.grants.append((ticket, upstream))
        self._record("grant", ticket, upstream)

    def _record(self, what: str, ticket: Ticket, upstream: int | None) -> None:
        if self.decisions is not None:
            self.decisions.append((what, ticket.request_id, upstream))
