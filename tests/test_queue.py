"""The server's waiting queue and router, on plain data: no socket, no model."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqsched.schedule.ledger import SlotLedger
from seqsched.schedule.queue import WaitingQueue, bounded_order
from seqsched.schedule.route import Router
from seqsched.schedule.stream import bounded_sort


def _drain(queue: WaitingQueue[str]) -> list[str]:
    out = []
    while (entry := queue.pop()) is not None:
        out.append(entry.item)
    return out


def _filled(policy: str, lengths: list[int], max_bypass: int | None = None) -> WaitingQueue[str]:
    queue: WaitingQueue[str] = WaitingQueue(policy, max_bypass)  # type: ignore[arg-type]
    for i, n in enumerate(lengths):
        queue.push(f"r{i}", n)
    return queue


def test_fcfs_pops_in_arrival_order() -> None:
    assert _drain(_filled("fcfs", [30, 10, 20])) == ["r0", "r1", "r2"]


def test_sjf_pops_the_shortest_prediction_first_ties_in_arrival_order() -> None:
    assert _drain(_filled("sjf", [30, 10, 20, 10, 5])) == ["r4", "r1", "r3", "r2", "r0"]


def test_ljf_pops_the_longest_first_ties_in_arrival_order() -> None:
    assert _drain(_filled("ljf", [30, 10, 30, 20])) == ["r0", "r2", "r3", "r1"]


def test_aging_pops_the_oldest_once_it_was_overtaken_max_bypass_times() -> None:
    # r0 is long; each later arrival is short and overtakes it, twice at most.
    assert _drain(_filled("sjf", [100, 1, 1, 1, 1, 1], max_bypass=2)) == ["r1", "r2", "r0", "r3", "r4", "r5"]
    assert _drain(_filled("sjf", [100, 1, 1, 1], max_bypass=0)) == ["r0", "r1", "r2", "r3"]


def test_a_removed_request_is_never_popped_and_counts_as_gone() -> None:
    queue = _filled("sjf", [5, 1, 3])
    entries = list(queue.waiting())
    assert queue.remove(entries[1])
    assert not queue.remove(entries[1])
    assert len(queue) == 2
    assert _drain(queue) == ["r2", "r0"]


def test_the_queue_refuses_bad_settings() -> None:
    with pytest.raises(ValueError, match="policy \\('lifo'\\)"):
        WaitingQueue("lifo")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_bypass \\(-1\\)"):
        WaitingQueue("sjf", -1)


def test_offline_and_online_order_agree() -> None:
    """The stream plan's bounded sort is this queue filled at once."""
    rng = random.Random(3)
    keys = [float(rng.randint(1, 50)) for _ in range(300)]
    for bound in (0, 1, 7, 64, None):
        expected = sorted(range(300), key=lambda i: (keys[i], i)) if bound is None else bounded_order(keys, bound)
        assert bounded_sort(keys, bound) == expected


@settings(max_examples=200, deadline=None)
@given(
    ops=st.lists(st.one_of(st.integers(1, 500), st.just("pop"), st.just("cancel")), min_size=1, max_size=200),
    bound=st.integers(0, 10),
    policy=st.sampled_from(["sjf", "ljf"]),
)
def test_no_request_is_overtaken_more_than_max_bypass_times(ops: list[object], bound: int, policy: str) -> None:
    """Random arrivals (a predicted length), pops and cancellations: counted from the pop
    order alone, every request is overtaken (a newer one popped first) at most ``bound``
    times, whether it was popped in the end or still waits."""
    queue: WaitingQueue[int] = WaitingQueue(policy, bound)  # type: ignore[arg-type]
    arrived: list[int] = []
    popped: list[int] = []
    entries = []
    rng = random.Random(len(ops))
    for op in ops:
        if op == "pop":
            entry = queue.pop()
            if entry is not None:
                popped.append(entry.item)
        elif op == "cancel":
            waiting = list(queue.waiting())
            if waiting:
                queue.remove(rng.choice(waiting))
        else:
            entries.append(queue.push(len(arrived), float(op)))  # type: ignore[arg-type]
            arrived.append(len(arrived))
    popped.extend(e.item for e in [queue.pop() for _ in range(len(queue))] if e is not None)
    for k, request in enumerate(popped):
        overtakers = [q for q in popped[:k] if q > request]
        assert len(overtakers) <= bound


def _take(ledger: SlotLedger, router: Router, number: int, predicted: int, **how: object) -> int | None:
    upstream = router.pick(ledger, **how)  # type: ignore[arg-type]
    if upstream is not None:
        ledger.take(number, upstream, "interactive", predicted)
    return upstream


def test_least_work_routes_to_the_upstream_with_the_least_predicted_tokens_left() -> None:
    ledger, router = SlotLedger([2, 2]), Router()
    assert _take(ledger, router, 1, 100) == 0
    assert _take(ledger, router, 2, 10) == 1  # upstream 0 has 100 tokens to go
    assert _take(ledger, router, 3, 10) == 1  # 10 against 100
    assert _take(ledger, router, 4, 10) == 0  # upstream 1 is full
    assert _take(ledger, router, 5, 10) is None
    ledger.progress(1, 95)  # upstream 0: 5 + 10 left
    ledger.give_back(2)
    ledger.give_back(4)  # upstream 0: 5 left, upstream 1: 10 left
    assert _take(ledger, router, 6, 50) == 0


def test_round_robin_takes_turns_among_free_upstreams() -> None:
    ledger, router = SlotLedger([1, 5, 5]), Router("round-robin")
    assert [_take(ledger, router, i, 10) for i in range(5)] == [0, 1, 2, 1, 2]
    ledger.give_back(0)
    assert _take(ledger, router, 9, 10) == 0


def test_a_request_past_its_prediction_still_counts_and_exclusions_hold_while_another_will_do() -> None:
    ledger, router = SlotLedger([4, 4]), Router()
    _take(ledger, router, 1, 10)
    ledger.progress(1, 50)  # outran its prediction
    assert ledger.work(0) == 1
    assert _take(ledger, router, 2, 10, exclude=frozenset({0})) == 1
    assert _take(ledger, router, 3, 1, exclude=frozenset({1})) == 0
    # every free upstream failed it once: one is tried again rather than none
    assert router.pick(ledger, exclude=frozenset({0, 1})) in (0, 1)


def test_headroom_keeps_free_slots_out_of_reach() -> None:
    ledger, router = SlotLedger([3, 2]), Router()
    assert router.pick(ledger, headroom=2) == 0
    ledger.take(7, 0, "batch", 5)
    assert router.pick(ledger, headroom=2) is None
    assert router.pick(ledger, headroom=1) == 1  # both have two free: the one with no work


def test_the_ledger_gives_a_slot_back_once() -> None:
    ledger = SlotLedger([1])
    ledger.take(1, 0, "batch", 5)
    assert ledger.running(lane="batch") == 1 and ledger.free_slots() == 0
    assert ledger.give_back(1) is not None
    assert ledger.give_back(1) is None
    assert ledger.free_slots() == 1 and ledger.running(lane="batch") == 0


def test_the_router_and_ledger_refuse_bad_settings() -> None:
    with pytest.raises(ValueError, match="at least one upstream"):
        SlotLedger([])
    with pytest.raises(ValueError, match="at least one slot"):
        SlotLedger([0])
    with pytest.raises(ValueError, match="routing \\('random'\\)"):
        Router("random")  # type: ignore[arg-type]


def test_a_request_put_back_goes_first_and_does_not_count_as_overtaking() -> None:
    queue = _filled("sjf", [100, 1, 1, 1], max_bypass=2)
    assert queue.pop().item == "r1"  # type: ignore[union-attr]
    queue.push_front("back", 50)
    assert len(queue) == 4
    # r0 was overtaken once (by r1); the put-back one does not overtake it again
    assert _drain(queue) == ["back", "r2", "r0", "r3"]
