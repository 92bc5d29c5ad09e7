"""A server under load, simulated: requests arrive over time, pass the front door, run on
the modelled vLLM scheduler (``simulate/vllm_model.py``). No torch here.

The shapes of server, as benchmarks/serve_latency.py and benchmarks/mixed_traffic.py
measure them:
- plain vLLM's server: every request goes straight into vLLM's waiting queue (``fcfs``,
  or ``priority`` with each request's own ``priority``), which runs up to
  ``max_num_seqs`` at once;
- seqsched serve in front of vLLM: requests pass the **same** front door object the
  server uses (``schedule/front_door.py``): interactive ones in its queue by predicted
  length with the aging bound, batch ones in the batch lane after them, forwarded while
  fewer than ``max_inflight`` are at vLLM, with the prediction as vLLM's ``priority``.
  A batch request the door preempts is aborted in vLLM and later continued as a new
  request whose prompt is its prompt and the tokens it had (vLLM's prefix cache keeps
  their blocks), as ``seqsched serve`` continues it from token ids.
Latency figures are the ones vLLM's benchmark client reports: end-to-end (arrival to
last token), time to first token, time per output token after the first, and
end-to-end per output token; throughput is completed requests over the time from the
start (0) to the last completion.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from seqsched.schedule.batch_lane import vllm_priority
from seqsched.schedule.front_door import DoorConfig, FrontDoor, Ticket
from seqsched.schedule.ledger import LANES, Lane
from seqsched.simulate.step_cost import ContinuousCost
from seqsched.simulate.vllm_model import SchedulerLimits, SchedulerModel, SimRequest


@dataclass(frozen=True)
class OnlineRequest:
    """One arrival. ``priority``: vLLM's priority when it goes straight to vLLM (None: its
    arrival time, which is fcfs); ``group``: its batch, for the batch lane."""

    prompt_tokens: int
    output_tokens: int
    arrival: float
    predicted_len: float = 0.0
    lane: Lane = "interactive"
    priority: float | None = None
    group: int = 0


@dataclass(frozen=True)
class SimFront:
    """seqsched serve in front of vLLM: the front door's ``door`` config, ``max_inflight``
    (None: vLLM's max_num_seqs), whether the prediction goes to vLLM as its priority, which
    ``lanes`` pass the door (a request of another lane goes straight to the first replica),
    and how many ``replicas`` it routes between (``door.routing``)."""

    door: DoorConfig = field(default_factory=DoorConfig)
    max_inflight: int | None = None
    send_priority: bool = True
    lanes: tuple[Lane, ...] = LANES
    replicas: int = 1  # vLLM servers behind the door, each of the engine's size

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise ValueError(f"replicas ({self.replicas}) must be >= 1")


def front_queue(policy: str = "sjf", max_bypass: int | None = None, max_inflight: int | None = None) -> SimFront:
    """The interactive front door alone, as ``seqsched serve`` runs without batches."""
    return SimFront(DoorConfig(policy=policy, max_bypass=max_bypass), max_inflight)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Served:
    arrival: float
    first_token: float
    finished: float
    output_tokens: int
    num_preemptions: int
    lane: Lane = "interactive"
    num_recomputed: int = 0  # tokens prefilled again after a preemption (vLLM's or the door's)

    @property
    def e2e(self) -> float:
        return self.finished - self.arrival

    @property
    def ttft(self) -> float:
        return self.first_token - self.arrival


def simulate_server(
    requests: Sequence[OnlineRequest],
    limits: SchedulerLimits,
    cost: ContinuousCost,
    front: SimFront | None = None,
    decisions: list[tuple[str, str, int | None]] | None = None,
) -> list[Served]:
    """Run the arrivals through the server; one :class:`Served` per request, in input order.
    ``decisions``, when given, receives the front door's decisions as they are made."""
    return _Server(requests, limits, cost, front, decisions).run()


class _Server:
    def __init__(
        self,
        requests: Sequence[OnlineRequest],
        limits: SchedulerLimits,
        cost: ContinuousCost,
        front: SimFront | None,
        decisions: list[tuple[str, str, int | None]] | None,
    ) -> None:
        self.requests = requests
        self.front = front
        policy = "priority" if front is not None and front.send_priority else limits.policy
        replicas = front.replicas if front is not None else 1
        self.models = [SchedulerModel(dataclasses.replace(limits, policy=policy), cost) for _ in range(replicas)]
        self.door: FrontDoor | None = None
        if front is not None:
            self.door = FrontDoor(front.door, [front.max_inflight or limits.max_num_seqs] * replicas)
            self.door.decisions = decisions
        self.runs: list[list[SimRequest]] = [[] for _ in requests]  # each request's runs at vLLM
        self.where = [0] * len(requests)  # the replica of a request's current run
        self.base = [0] * len(requests)  # tokens a request had when its current run began
        self.tickets: dict[int, Ticket] = {}  # request -> its ticket at the door
        self.owner: dict[int, int] = {}  # a run's rid -> its request
        self.ended: list[tuple[float, int, SimRequest]] = []  # completions not yet met, by time
        self.now = 0.0  # the time of the last event met

    def run(self) -> list[Served]:
        """Events in time order, as the server meets them: each arrival, and each request a
        step finishes, is decided on at once (the door runs between vLLM's steps); a request
        forwarded while a step runs joins its replica's queue for the next. Replicas step on
        clocks of their own; an event is met once every busy replica's clock has passed it,
        so the door sees them in the order they happen."""
        self.order = sorted(range(len(self.requests)), key=lambda i: self.requests[i].arrival)
        self.nxt, seq = 0, 0
        while True:
            if not any(m.has_unfinished() for m in self.models):
                if not self._idle():
                    break
                continue
            self._events_until(min(m.clock for m in self.models if m.has_unfinished()))
            model = min((m for m in self.models if m.has_unfinished()), key=lambda m: m.clock)
            for sim in model.step().finished:
                seq += 1
                heapq.heappush(self.ended, (model.clock, seq, sim))
        return [self._served(i) for i in range(len(self.requests))]

    def _events_until(self, clock: float) -> None:
        """Arrivals and completions up to ``clock``, in time order (an arrival first at a tie:
        it came while the step ran, before its outputs)."""
        while True:
            arrival = self.requests[self.order[self.nxt]].arrival if self.nxt < len(self.order) else math.inf
            ended = self.ended[0][0] if self.ended else math.inf
            if min(arrival, ended) > clock:
                return
            if arrival <= ended:
                self.now = max(self.now, arrival)
                self.nxt += 1
                self._arrive(self.order[self.nxt - 1])
            else:
                self.now = max(self.now, ended)
                self._finished(heapq.heappop(self.ended)[2])

    def _idle(self) -> bool:
        """Nothing runs: wait for the next arrival (or, with batch work held back, for the
        governor's next interval); False when there is nothing left."""
        if self.ended:  # a step's outputs not yet met: they come first
            self._events_until(self.ended[0][0])
            return True
        upcoming = self.requests[self.order[self.nxt]].arrival if self.nxt < len(self.order) else None
        door = self.door
        if door is not None and door.num_waiting:
            later = self.now + door.config.batch.adapt_interval_s
            self.now = later if upcoming is None else min(upcoming, later)
            self._decide(door, self.now)
            return True
        if upcoming is None:
            return False
        self._events_until(upcoming)
        return True

    def _arrive(self, i: int) -> None:
        r = self.requests[i]
        if self.door is None or self.front is None or r.lane not in self.front.lanes:
            self._forward(i, 0, r.priority if r.priority is not None else r.arrival)
            return
        ticket = Ticket(str(i), max(1, round(r.predicted_len)), lane=r.lane, group=r.group,
                        prompt_tokens=r.prompt_tokens)  # fmt: skip
        self.tickets[i] = ticket
        now = max(r.arrival, 0.0)
        self.door.arrive(ticket, now)
        self._decide(self.door, now)

    def _decide(self, door: FrontDoor, now: float) -> None:
        if door.wants_progress():  # the victim is chosen by work left: bring it up to date
            for ticket in door.running("batch"):
                i = int(ticket.request_id)
                door.progress(ticket, self.base[i] + self.models[self.where[i]].generated(self.runs[i][-1]))
        plan = door.schedule(now)
        for ticket in plan.preempted:
            i = int(ticket.request_id)
            if self.runs[i][-1].state == "done":  # it ended in this very step: nothing to stop
                door.leave(ticket)
                continue
            door.progress(ticket, self.base[i] + self.models[self.where[i]].abort(self.runs[i][-1]))
        for ticket, upstream in plan.grants:
            i = int(ticket.request_id)
            priority = None
            if self.front is not None and self.front.send_priority:  # as seqsched serve sends it
                priority = vllm_priority(ticket.predicted_len, ticket.lane, ticket.priority)  # as the door rounds it
            self._forward(i, upstream, priority, ticket.generated)

    def _forward(self, i: int, replica: int, priority: float | None, generated: int = 0) -> None:
        """Send request ``i`` to a replica; a continuation carries the ``generated`` tokens it has."""
        r, runs, model = self.requests[i], self.runs[i], self.models[replica]
        rid = i if not runs else len(self.requests) + len(self.owner)
        sim = SimRequest(rid, r.prompt_tokens + generated, r.output_tokens - generated, arrival=r.arrival,
                         priority=priority if priority is not None else r.arrival)  # fmt: skip
        if runs and self.where[i] == replica:  # that replica's prefix cache still holds the last run's blocks
            sim.cached_blocks, sim.cache_stamp = runs[-1].cached_blocks, runs[-1].cache_stamp
        runs.append(sim)
        self.owner[rid] = i
        self.base[i], self.where[i] = generated, replica
        if not model.has_unfinished():
            model.clock = max(model.clock, self.now)  # idle until now
        model.add(sim)

    def _finished(self, sim: SimRequest) -> None:
        i = self.owner[sim.rid]
        ticket = self.tickets.get(i)
        if self.door is None or ticket is None:
            return  # it went straight to vLLM
        if ticket.lane == "interactive" and sim.generated > 1:
            assert sim.first_token_at is not None and sim.finished_at is not None
            self.door.observe_interactive((sim.finished_at - sim.first_token_at) / (sim.generated - 1))
        self.door.release(ticket.lease)
        self._decide(self.door, self.now)

    def _served(self, i: int) -> Served:
        runs = self.runs[i]
        last = runs[-1]
        firsts = [r.first_token_at for r in runs if r.first_token_at is not None]
        assert firsts and last.finished_at is not None, f"request {i} did not finish"
        return Served(
            arrival=self.requests[i].arrival,
            first_token=min(firsts),
            finished=last.finished_at,
            output_tokens=self.base[i] + last.generated,
            num_preemptions=sum(r.num_preemptions for r in runs) + len(runs) - 1,
            lane=self.requests[i].lane,
            num_recomputed=sum(r.prompt - r.cache_hit_tokens for r in runs[1:]),
        )


@dataclass(frozen=True)
class LatencySummary:
    """What vLLM's benchmark client reports for one run (seconds)."""

    completed: int
    throughput: float
    e2e_mean: float
    e2e_median: float
    e2e_p99: float
    ttft_mean: float
    tpot_mean: float
    per_token_mean: float
    num_preemptions: int

    @classmethod
    def of(cls, served: Sequence[Served]) -> LatencySummary:
        e2e = [s.e2e for s in served]
        tpots = [(s.e2e - s.ttft) / (s.output_tokens - 1) for s in served if s.output_tokens > 1]
        return cls(
            completed=len(served),
            throughput=len(served) / max(s.finished for s in served),
            e2e_mean=statistics.fmean(e2e),
            e2e_median=statistics.median(e2e),
            e2e_p99=quantile(e2e, 0.99),
            ttft_mean=statistics.fmean(s.ttft for s in served),
            tpot_mean=statistics.fmean(tpots) if tpots else 0.0,
            per_token_mean=statistics.fmean(s.e2e / max(1, s.output_tokens) for s in served),
            num_preemptions=sum(s.num_preemptions for s in served),
        )


def quantile(values: Sequence[float], q: float) -> float:
    """The same rank rule as benchmarks/serve_latency.py: sorted[int(q * n)]."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
