"""One front door: the simulator and the running server make the same decisions.

The simulated server (``simulate/server.py``) runs a load on the modelled vLLM; its front
door records every arrival, grant and release. Then the same requests go, over HTTP,
through ``seqsched serve`` to a fake upstream that answers each request only when the
test says: arrivals and completions are replayed in the order the simulation saw them,
and after each the server's own front door must have made exactly the decisions the
simulated one made (which request, which upstream, in which order)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import httpx

from seqsched.schedule.front_door import DoorConfig
from seqsched.serve.app import build_app
from seqsched.serve.config import ServeConfig
from seqsched.simulate.server import OnlineRequest, SimFront, simulate_server
from seqsched.simulate.step_cost import ContinuousCost
from seqsched.simulate.vllm_model import SchedulerLimits
from tests.serve_helpers import FakeUpstream, running

Log = list[tuple[str, str, int | None]]
# (arrival s, output tokens, predicted tokens): a burst that queues, then arrivals while it drains
LOAD = [(0.0, 9, 8), (0.0, 3, 30), (0.5, 6, 5), (0.5, 14, 2), (1.5, 2, 12), (2.5, 11, 4), (3.5, 5, 20),
        (6.5, 4, 7), (6.5, 8, 1), (9.5, 3, 9), (12.5, 7, 3), (13.5, 1, 40)]  # fmt: skip


def _simulated(door: DoorConfig, slots: int) -> Log:
    requests = [OnlineRequest(8, n, arrival=t, predicted_len=p) for t, n, p in LOAD]
    log: Log = []
    limits = SchedulerLimits(max_num_seqs=16, max_num_batched_tokens=256, policy="fcfs")
    simulate_server(requests, limits, ContinuousCost(a=1.0, t=0.0), SimFront(door, max_inflight=slots), log)
    return log


def _served(door: DoorConfig, slots: int, sim: Log) -> Log:
    """Replay the simulation's arrivals and completions through the real server."""
    fake = FakeUpstream(seconds_per_token=0.0)
    with running(fake.app()) as upstream:
        config = ServeConfig(upstreams=(upstream,), policy=door.policy, max_bypass=door.max_bypass,
                             max_inflight=slots)  # fmt: skip
        app = build_app(config, lambda text, _: LOAD[int(text.split("#")[1])][2])
        server = app.state.server
        server.door.decisions = log = []
        with running(app) as url:
            threads = []
            for k, (what, rid, _) in enumerate(sim):
                if what == "arrive":
                    prompt = f"wait:{rid} tokens {LOAD[int(rid)][1]} #{rid}"
                    body = {"model": "fake", "messages": [{"role": "user", "content": prompt}]}
                    options = {"json": body, "timeout": 30, "headers": {"X-Request-Id": rid}}
                    threads.append(threading.Thread(target=httpx.post, args=(f"{url}/v1/chat/completions",),
                                                    kwargs=options))  # fmt: skip
                    threads[-1].start()
                elif what == "release":
                    fake.released.add(rid)
                else:
                    continue
                upto = next((j for j in range(k + 1, len(sim)) if sim[j][0] in ("arrive", "release")), len(sim))
                _wait_for(lambda upto=upto: len(log) >= upto, f"the server to catch up with {sim[:upto][-1:]}")  # type: ignore[misc]
            for t in threads:
                t.join(30)
    return log


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def test_the_server_and_the_simulator_decide_alike() -> None:
    door = DoorConfig(policy="sjf", max_bypass=3)
    sim = _simulated(door, slots=3)
    assert sum(1 for what, *_ in sim if what == "grant") == len(LOAD)
    assert [rid for what, rid, _ in sim if what == "grant"] != [str(i) for i in range(len(LOAD))], "it reorders"
    served = _served(door, 3, sim)
    assert served == sim
