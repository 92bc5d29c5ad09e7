"""The ``deadline`` order on plain data: shortest predicted first among equal waits, arrival
order among equal predictions, and its bound in time under adversarial arrivals (an endless
stream of short requests); at the door, its key goes to vLLM as ``priority``."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqsched.schedule.front_door import DoorConfig, FrontDoor, Ticket
from seqsched.schedule.queue import WaitingQueue


def _drain(queue: WaitingQueue[str]) -> list[str]:
    order = []
    while (entry := queue.pop()) is not None:
        order.append(entry.item)
    return order


def test_equal_waits_go_shortest_predicted_first_and_equal_predictions_in_arrival_order() -> None:
    queue: WaitingQueue[str] = WaitingQueue("deadline", None, slack_s=0.01)
    for name, length in [("long", 900), ("short", 10), ("mid", 300)]:
        queue.push(name, length, now=5.0)
    assert _drain(queue) == ["short", "mid", "long"]
    for i in range(4):
        queue.push(f"same{i}", 100, now=5.0 + i)
    assert _drain(queue) == ["same0", "same1", "same2", "same3"]


def test_a_shorter_request_that_arrives_later_by_more_than_the_slack_does_not_overtake() -> None:
    queue: WaitingQueue[str] = WaitingQueue("deadline", None, slack_s=0.01)
    queue.push("long", 1000, now=0.0)  # key 10 s
    queue.push("soon", 10, now=9.0)  # key 9.1: overtakes
    queue.push("late", 10, now=10.5)  # key 10.6: arrived after the long one's key
    assert _drain(queue) == ["soon", "long", "late"]
    fcfs: WaitingQueue[str] = WaitingQueue("deadline", None, slack_s=0.0)
    for i, length in enumerate([500, 5, 50]):
        fcfs.push(f"r{i}", length, now=float(i))
    assert _drain(fcfs) == ["r0", "r1", "r2"], "slack 0 is fcfs"


def test_the_bound_holds_against_an_endless_stream_of_short_requests() -> None:
    """One slot; a short request arrives every 0.5 s and each takes 1 s to serve, forever (the
    queue grows without end). Under sjf the long request would never run; under deadline it
    is overtaken only by those that arrive within slack x its length of it."""
    slack, long_len = 0.01, 2000  # its key: 20 s after it arrives
    for policy in ("sjf", "deadline"):
        queue: WaitingQueue[str] = WaitingQueue(policy, None, slack_s=slack)  # type: ignore[arg-type]
        queue.push("long", long_len, now=1.0)
        arrivals = iter(range(10_000))
        clock, overtaken, started = 0.0, 0, None
        next_arrival = 0.0
        while clock < 500 and started is None:
            while next_arrival <= clock:
                queue.push(f"short{next(arrivals)}", 5, now=next_arrival)
                next_arrival += 0.5
            entry = queue.pop()
            assert entry is not None
            if entry.item == "long":
                started = clock
            else:
                overtaken += int(entry.item != "short0" or clock > 1.0)
                clock += 1.0
        if policy == "sjf":
            assert started is None, "sjf starves the long request"
        else:
            assert started is not None and overtaken <= (slack * long_len + 1) / 0.5 + 2
            assert started <= 1.0 + 2 * (slack * long_len + 1) + 1


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 50), st.integers(1, 4000)), min_size=1, max_size=60), st.floats(0, 0.1))
def test_no_request_is_overtaken_by_one_that_arrived_after_its_key(arrivals: list[tuple[float, int]],
                                                                  slack: float) -> None:  # fmt: skip
    queue: WaitingQueue[int] = WaitingQueue("deadline", None, slack_s=slack)
    rng = random.Random(len(arrivals))
    order: list[int] = []
    for i, (at, length) in enumerate(sorted(arrivals)):
        queue.push(i, length, now=at)
        if rng.random() < 0.4:  # pops between arrivals
            entry = queue.pop()
            if entry is not None:
                order.append(entry.item)
    order += _drain(queue)  # type: ignore[arg-type]
    times = sorted(arrivals)
    for pos, i in enumerate(order):
        key = times[i][0] + slack * times[i][1]
        for j in order[:pos]:  # popped before i
            if j > i:  # arrived after i
                assert times[j][0] <= key + 1e-9, "only requests arriving within slack x L overtake"


def test_the_door_sends_the_key_to_vllm_as_priority() -> None:
    door = FrontDoor(DoorConfig("deadline", None, slack_s=0.01), [1])
    first, second = Ticket("a", 500), Ticket("b", 20)
    door.arrive(first, 100.0)
    door.arrive(second, 102.0)
    assert (first.priority, second.priority) == (105_000, 102_200)
    with pytest.raises(ValueError, match="slack_s"):
        DoorConfig("deadline", slack_s=-1)
