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
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from seqsched.schedule.batch_lane import BATCH_PRIORITY
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
    (None: vLLM's max_num_seqs), whether the prediction goes to vLLM as its priority, and
    which ``lanes`` pass the door (a request of another lane goes straight to vLLM)."""

    door: DoorConfig = field(default_factory=DoorConfig)
    max_inflight: int | None = None
    send_priority: bool = True
    lanes: tuple[Lane, ...] = LANES


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
        self.model = SchedulerModel(dataclasses.replace(limits, policy=policy), cost)
        self.door: FrontDoor | None = None
        if front is not None:
            self.door = FrontDoor(front.door, [front.max_inflight or limits.max_num_seqs])
            self.door.decisions = decisions
        self.runs: list[list[SimRequest]] = [[] for _ in requests]  # each request's runs at vLLM
        self.base = [0] * len(requests)  # tokens a request had when its current run began
        self.tickets: dict[int, Ticket] = {}  # request -> its ticket at the door
        self.owner: dict[int, int] = {}  # a run's rid -> its request

    def run(self) -> list[Served]:
        """Events in time order, as the server meets them: each arrival, and each request
        a step finishes, is decided on at once (the door runs between vLLM's steps); a
        request forwarded while a step runs joins vLLM's queue for the next."""
        self.order = sorted(range(len(self.requests)), key=lambda i: self.requests[i].arrival)
        model, door, self.nxt = self.model, self.door, 0
        while self.nxt < len(self.order) or model.has_unfinished() or (door is not None and door.num_waiting):
            self._arrivals_until(model.clock)
            if not model.has_unfinished():
                self._idle(door)
                continue
            finished = model.step().finished
            self._arrivals_until(model.clock)  # they came while the step ran: before its outputs
            for sim in finished:
                self._finished(sim)
        return [self._served(i) for i in range(len(self.requests))]

    def _arrivals_until(self, clock: float) -> None:
        while self.nxt < len(self.order) and self.requests[self.order[self.nxt]].arrival <= clock:
            self._arrive(self.order[self.nxt])
            self.nxt += 1

    def _idle(self, door: FrontDoor | None) -> None:
        """Nothing runs: wait for the next arrival (or, with batch work held back, for the
        governor's next interval)."""
        upcoming = self.requests[self.order[self.nxt]].arrival if self.nxt < len(self.order) else None
        if door is not None and door.num_waiting:
            later = self.model.clock + door.config.batch.adapt_interval_s
            self.model.clock = later if upcoming is None else min(upcoming, later)
            self._decide(door, self.model.clock)
            return
        assert upcoming is not None, "requests wait with every slot free"
        self.model.clock = max(self.model.clock, upcoming)

    def _arrive(self, i: int) -> None:
        r = self.requests[i]
        if self.door is None or self.front is None or r.lane not in self.front.lanes:
            self._forward(i, r.priority if r.priority is not None else r.arrival)
            return
        ticket = Ticket(str(i), max(1, round(r.predicted_len)), lane=r.lane, group=r.group)
        self.tickets[i] = ticket
        now = max(r.arrival, 0.0)
        self.door.arrive(ticket, now)
        self._decide(self.door, now)

    def _decide(self, door: FrontDoor, now: float) -> None:
        if door.wants_progress():  # the victim is chosen by work left: bring it up to date
            for ticket in door.running("batch"):
                i = int(ticket.request_id)
                door.progress(ticket, self.base[i] + self.model.generated(self.runs[i][-1]))
        plan = door.schedule(now)
        for ticket in plan.preempted:
            i = int(ticket.request_id)
            if self.runs[i][-1].state == "done":  # it ended in this very step: nothing to stop
                door.leave(ticket)
                continue
            door.progress(ticket, self.base[i] + self.model.abort(self.runs[i][-1]))
        for ticket, _ in plan.grants:
            i = int(ticket.request_id)
            priority = None
            if self.front is not None and self.front.send_priority:  # as seqsched serve sends it
                priority = self.requests[i].predicted_len + (BATCH_PRIORITY if ticket.lane == "batch" else 0)
            self._forward(i, priority, ticket.generated)

    def _forward(self, i: int, priority: float | None, generated: int = 0) -> None:
        """Send request ``i`` to vLLM; a continuation carries the ``generated`` tokens it has."""
        r, runs = self.requests[i], self.runs[i]
        rid = i if not runs else len(self.requests) + len(self.owner)
        sim = SimRequest(rid, r.prompt_tokens + generated, r.output_tokens - generated, arrival=r.arrival,
                         priority=priority if priority is not None else r.arrival)  # fmt: skip
        if runs:  # vLLM's prefix cache still holds the blocks the last run computed
            sim.cached_blocks, sim.cache_stamp = runs[-1].cached_blocks, runs[-1].cache_stamp
        runs.append(sim)
        self.owner[rid] = i
        self.base[i] = generated
        self.model.add(sim)

    def _finished(self, sim: SimRequest) -> None:
        i = self.owner[sim.rid]
        ticket = self.tickets.get(i)
        if self.door is None or ticket is None:
            return  # it went straight to vLLM
        if ticket.lane == "interactive" and sim.generated > 1:
            assert sim.first_token_at is not None and sim.finished_at is not None
            self.door.observe_interactive((sim.finished_at - sim.first_token_at) / (sim.generated - 1))
        self.door.release(ticket.lease)
        self._decide(self.door, self.model.clock)

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
