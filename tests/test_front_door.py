"""The front door's decisions on plain data: no socket, no model, no clock."""

from __future__ import annotations

import pytest

from seqsched.schedule.batch_lane import BatchGovernor, BatchLaneConfig
from seqsched.schedule.batch_queue import BatchQueue
from seqsched.schedule.front_door import DoorConfig, FrontDoor, Ticket


def _door(slots: list[int], **batch: object) -> FrontDoor:
    return FrontDoor(DoorConfig(policy="sjf", max_bypass=None, batch=BatchLaneConfig(**batch)), slots)  # type: ignore[arg-type]


def _arrive(door: FrontDoor, name: str, predicted: int, lane: str = "interactive", now: float = 0.0) -> Ticket:
    ticket = Ticket(name, predicted, lane=lane)  # type: ignore[arg-type]
    door.arrive(ticket, now)
    return ticket


def _granted(door: FrontDoor, now: float = 0.0) -> list[str]:
    return [t.request_id for t, _ in door.schedule(now).grants]


def test_interactive_requests_go_before_batch_ones() -> None:
    door = _door([2])
    _arrive(door, "b1", 5, "batch")
    _arrive(door, "b2", 5, "batch")
    _arrive(door, "i1", 50)
    assert _granted(door) == ["i1", "b1"]
    assert door.waiting_in("batch") == 1


def test_headroom_keeps_slots_free_for_interactive_arrivals() -> None:
    door = _door([4, 4], headroom=1)
    for k in range(10):
        _arrive(door, f"b{k}", 10, "batch")
    assert len(_granted(door)) == 6  # 3 a server: one free slot each
    assert door.ledger.free(0) == door.ledger.free(1) == 1
    _arrive(door, "i", 10)
    assert _granted(door) == ["i"] and door.schedule(0.0).preempted == []


def test_an_interactive_arrival_preempts_the_batch_request_with_the_most_work_left() -> None:
    door = _door([3])
    a, b, c = (_arrive(door, name, n, "batch") for name, n in (("a", 100), ("b", 60), ("c", 80)))
    assert len(_granted(door)) == 3
    door.progress(a, 50)  # a: 50 left; b: 60; c: 80
    _arrive(door, "i", 10)
    plan = door.schedule(0.0)
    assert [t.request_id for t in plan.preempted] == ["c"]
    assert [(t.request_id, u) for t, u in plan.grants] == [("i", 0)]
    assert c.waiting and c.lease is None and c.num_preemptions == 1
    door.release(b.lease)
    assert _granted(door) == ["c"], "the preempted request is continued first"
    assert c.generated == 0 and door.ledger.get(c.lease) is not None  # type: ignore[arg-type]


def test_a_preempted_request_keeps_its_progress_for_the_ledger() -> None:
    door = _door([1])
    b = _arrive(door, "b", 100, "batch")
    _granted(door)
    door.progress(b, 30)
    _arrive(door, "i", 5)
    door.schedule(0.0)
    i_lease = next(door.ledger.holders()).number
    door.release(i_lease)
    assert _granted(door) == ["b"]
    assert door.ledger.work(0) == 70


def test_a_late_release_of_an_old_lease_never_frees_the_new_one() -> None:
    door = _door([1])
    b = _arrive(door, "b", 100, "batch")
    _granted(door)
    old = b.lease
    _arrive(door, "i", 5)
    interactive_lease = door.schedule(0.0).grants[0][0].lease
    door.release(interactive_lease)
    assert _granted(door) == ["b"]
    assert not door.release(old), "the stopped call's release comes late: nothing happens"
    assert b.lease is not None and door.ledger.running() == 1


def test_without_preemption_an_interactive_request_waits() -> None:
    door = _door([1], preempt=False)
    _arrive(door, "b", 100, "batch")
    _granted(door)
    _arrive(door, "i", 5)
    assert door.schedule(0.0).grants == []
    assert door.waiting_in("interactive") == 1


def test_no_batch_request_is_granted_in_a_decision_that_preempted() -> None:
    door = _door([1, 4], headroom=0)
    bs = [_arrive(door, f"b{k}", 100 - k, "batch") for k in range(5)]
    assert len(_granted(door)) == 5
    _arrive(door, "b5", 1, "batch")
    for k in range(2):
        _arrive(door, f"i{k}", 5)
    plan = door.schedule(0.0)
    assert [t.request_id for t, _ in plan.grants] == ["i0", "i1"]
    assert [t.request_id for t in plan.preempted] == ["b0", "b1"]
    assert all(not b.waiting for b in bs[2:])


def test_the_lane_keeps_submission_order_by_default() -> None:
    door = _door([1])
    for name, n in (("mid", 50), ("short", 10), ("long", 90)):
        _arrive(door, name, n, "batch")
    granted = []
    for now in (0.0, 1.0, 2.0):
        granted += _granted(door, now=now)
        door.release(next(door.ledger.holders()).number)
    assert granted == ["mid", "short", "long"]


def test_auto_goes_shortest_first_with_interactive_traffic_and_longest_first_when_quiet() -> None:
    door = _door([1], quiet_s=5.0, order="auto")
    for name, n in (("mid", 50), ("short", 10), ("long", 90)):
        _arrive(door, name, n, "batch")
    assert _granted(door, now=0.0) == ["long"], "no interactive traffic yet: longest first"
    _arrive(door, "i", 5, now=1.0)
    door.release(next(door.ledger.holders()).number)
    assert _granted(door, now=1.0) == ["i"]
    door.release(next(door.ledger.holders()).number)
    assert _granted(door, now=2.0) == ["short"], "interactive traffic 1 s ago: shortest first"
    door.release(next(door.ledger.holders()).number)
    assert _granted(door, now=9.0) == ["mid"]


def test_earlier_batches_go_first() -> None:
    door = _door([1], order="sjf")
    door.arrive(Ticket("first-long", 99, lane="batch", group=7), 0.0)
    door.arrive(Ticket("second-short", 1, lane="batch", group=8), 0.0)
    door.arrive(Ticket("first-short", 5, lane="batch", group=7), 0.0)
    order = []
    for _ in range(3):
        order += _granted(door)
        door.release(next(door.ledger.holders()).number)
    assert order == ["first-short", "first-long", "second-short"]


def test_a_client_that_leaves_while_waiting_is_never_granted() -> None:
    door = _door([1])
    _arrive(door, "b", 5, "batch")
    _granted(door)
    gone = _arrive(door, "gone", 1)
    assert door.leave(gone) and not door.leave(gone)
    _arrive(door, "i", 9)
    plan = door.schedule(0.0)
    assert [t.request_id for t, _ in plan.grants] == ["i"]


def test_the_governor_starts_slow_backs_off_over_the_target_and_grows_under_it() -> None:
    governor = BatchGovernor(BatchLaneConfig(tpot_target_s=0.05, adapt_interval_s=1.0, backoff=0.5), max_running=8)
    assert governor.limit == 1, "slow start: one step (a 20th of the slots, at least 1)"
    governor.cap = 8
    governor.adapt(0.0)
    assert governor.limit == 8
    governor.observe(0.08)
    governor.adapt(1.0)
    assert governor.limit == 4
    governor.observe(0.09)
    governor.adapt(1.5)
    assert governor.limit == 4, "not before an interval has passed"
    governor.adapt(2.0)
    assert governor.limit == 2
    governor.observe(0.01)
    governor.adapt(3.0)
    assert governor.limit == 3
    governor.adapt(4.0)  # no interactive request finished: grow
    assert governor.limit == 4


def test_the_governor_caps_batch_work_at_the_door() -> None:
    door = _door([8], tpot_target_s=0.05, adapt_interval_s=1.0, backoff=0.5)
    door.governor.cap = 8
    for k in range(20):
        _arrive(door, f"b{k}", 10, "batch")
    assert len(_granted(door, now=0.0)) == 8
    door.observe_interactive(0.2)
    plan = door.schedule(1.0)
    assert door.governor.limit == 4
    assert len(plan.preempted) == 4 and plan.grants == [], "over the lower cap: stopped now, not as they end"
    assert door.ledger.running(lane="batch") == 4
    for held in list(door.ledger.holders())[:3]:
        door.release(held.number)
    assert len(_granted(door, now=1.5)) == 3, "1 runs, the cap is 4"


def test_batch_queue_pops_from_either_end_and_skips_what_left() -> None:
    queue: BatchQueue[str] = BatchQueue()
    entries = {n: queue.push(f"r{n}", n) for n in (30, 10, 20, 40)}
    assert queue.pop("sjf").item == "r10"  # type: ignore[union-attr]
    assert queue.pop("ljf").item == "r40"  # type: ignore[union-attr]
    assert queue.remove(entries[20]) and not queue.remove(entries[20])
    queue.push_front("back", 99)
    assert queue.pop("sjf").item == "back"  # type: ignore[union-attr]
    assert queue.pop("fcfs").item == "r30"  # type: ignore[union-attr]
    assert queue.pop("sjf") is None and len(queue) == 0


def test_the_door_refuses_bad_settings() -> None:
    with pytest.raises(ValueError, match="headroom \\(-1\\)"):
        BatchLaneConfig(headroom=-1)
    with pytest.raises(ValueError, match="tpot_target_s \\(nan\\)"):
        BatchLaneConfig(tpot_target_s=float("nan"))
    with pytest.raises(ValueError, match="order \\('random'\\)"):
        BatchLaneConfig(order="random")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="policy"):
        DoorConfig(policy="lifo")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lane \\('bulk'\\)"):
        Ticket("x", 1, lane="bulk")  # type: ignore[arg-type]


def test_a_batch_request_that_cannot_be_continued_is_never_preempted() -> None:
    door = _door([2])
    fixed = Ticket("fixed", 500, lane="batch", preemptible=False)
    door.arrive(fixed, 0.0)
    _arrive(door, "small", 5, "batch")
    assert len(_granted(door)) == 2
    _arrive(door, "i", 5)
    plan = door.schedule(0.0)
    assert [t.request_id for t in plan.preempted] == ["small"], "the one with less work left, as the other cannot"


def test_without_a_target_the_lane_takes_every_slot_at_once() -> None:
    assert BatchGovernor(BatchLaneConfig(), max_running=40).limit == 40
    assert BatchGovernor(BatchLaneConfig(tpot_target_s=0.1), max_running=40).limit == 2


def test_an_upstream_taken_out_of_routing_is_never_where_a_slot_is_freed_for_interactive_work() -> None:
    """A replica that died keeps its batch requests' slots until their calls fail; stopping
    one of those frees nothing usable, so the door stops one on a live upstream instead."""
    from seqsched.schedule.front_door import DoorConfig, FrontDoor, Ticket

    door = FrontDoor(DoorConfig("sjf", None), [2, 2])
    for i, work in enumerate([900, 800, 100, 50]):
        door.arrive(Ticket(f"b{i}", work, lane="batch"), float(i))
    plan = door.schedule(4.0)
    where = {t.request_id: u for t, u in plan.grants}
    dead = where["b0"]
    door.ledger.set_slots(dead, 0)  # the replica died: out of routing
    asker = Ticket("chat", 10)
    door.arrive(asker, 5.0)
    plan = door.schedule(5.0)
    assert [t.request_id for t, _ in plan.grants] == ["chat"] and plan.grants[0][1] != dead
    assert [where[t.request_id] for t in plan.preempted] == [1 - dead]
