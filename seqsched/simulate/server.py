"""A server under load, simulated: requests arrive over time, wait in a queue, run on
the modelled vLLM scheduler (``simulate/vllm_model.py``). No torch here.

Two shapes of server, as benchmarks/serve_latency.py measures them:
- plain vLLM's server: every request goes straight into vLLM's waiting queue
  (``fcfs``), which runs up to ``max_num_seqs`` at once;
- seqsched serve in front of vLLM: requests wait in seqsched's own queue
  (``schedule/queue.py``: ``sjf`` or ``ljf`` by predicted length, with the aging bound),
  which forwards one whenever fewer than ``max_inflight`` are at vLLM, with the
  prediction as vLLM's ``priority`` (vLLM running the priority policy).
Latency figures are the ones vLLM's benchmark client reports: end-to-end (arrival to
last token), time to first token, time per output token after the first, and
end-to-end per output token; throughput is completed requests over the time from the
start (0) to the last completion.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from seqsched.schedule.config import Policy
from seqsched.schedule.queue import WaitingQueue
from seqsched.simulate.step_cost import ContinuousCost
from seqsched.simulate.vllm_model import SchedulerLimits, SchedulerModel, SimRequest


@dataclass(frozen=True)
class OnlineRequest:
    prompt_tokens: int
    output_tokens: int
    arrival: float
    predicted_len: float = 0.0


@dataclass(frozen=True)
class FrontQueue:
    """seqsched serve's queue in front of vLLM; ``max_inflight`` None: vLLM's max_num_seqs."""

    policy: Policy = "sjf"
    max_bypass: int | None = None
    max_inflight: int | None = None
    send_priority: bool = True


@dataclass(frozen=True)
class Served:
    arrival: float
    first_token: float
    finished: float
    output_tokens: int
    num_preemptions: int

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
    front: FrontQueue | None = None,
) -> list[Served]:
    """Run the arrivals through the server; one :class:`Served` per request, in input order."""
    order = sorted(range(len(requests)), key=lambda i: requests[i].arrival)
    policy = "priority" if front is not None and front.send_priority else limits.policy
    model = SchedulerModel(dataclasses.replace(limits, policy=policy), cost)
    queue: WaitingQueue[int] | None = None
    max_inflight = limits.max_num_seqs
    if front is not None:
        queue = WaitingQueue(front.policy, front.max_bypass)
        max_inflight = front.max_inflight or limits.max_num_seqs
    sims: dict[int, SimRequest] = {}
    inflight = next_arrival = 0

    def forward(i: int) -> None:
        r = requests[i]
        priority = r.predicted_len if front is not None and front.send_priority else r.arrival
        sims[i] = SimRequest(i, r.prompt_tokens, r.output_tokens, priority=priority, arrival=r.arrival)
        model.add(sims[i])

    while next_arrival < len(order) or model.has_unfinished() or (queue is not None and len(queue)):
        while next_arrival < len(order) and requests[order[next_arrival]].arrival <= model.clock:
            i = order[next_arrival]
            next_arrival += 1
            if queue is None:
                forward(i)
            else:
                queue.push(i, requests[i].predicted_len)
        while queue is not None and inflight < max_inflight and (entry := queue.pop()) is not None:
            forward(entry.item)
            inflight += 1
        if not model.has_unfinished():
            model.clock = max(model.clock, requests[order[next_arrival]].arrival)  # idle until the next one
            continue
        record = model.step()
        inflight -= len(record.finished)
    return [_served(sims[i]) for i in range(len(requests))]


def _served(r: SimRequest) -> Served:
    assert r.first_token_at is not None and r.finished_at is not None
    return Served(r.arrival, r.first_token_at, r.finished_at, r.generated, r.num_preemptions)


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
