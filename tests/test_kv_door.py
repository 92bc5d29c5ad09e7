"""KV-aware admission at the front door, on plain data: a request whose predicted need does
not fit what is free waits (first in line, in the door's order), one that fits goes, a slot
given back makes room, and the first request on an empty upstream always goes."""

from __future__ import annotations

import pytest

from seqsched.schedule.front_door import DoorConfig, FrontDoor, Ticket
from seqsched.schedule.kv_door import DoorKV


def test_a_request_that_does_not_fit_waits_and_one_that_fits_goes() -> None:
    kv = DoorKV(1, blocks=10, block_size=16)  # 160 tokens
    assert kv.fits(0, 500, 500), "an empty upstream takes anything (its engine must make progress)"
    kv.admit(0, 1, prompt_tokens=100, predicted_len=40)
    assert not kv.fits(0, 50, 20), "100 + 50 held, both growing: over 160 before the first ends"
    assert kv.fits(0, 5, 5)
    kv.grow(1, 30)  # the first is near its end now: 130 held, 10 to go
    assert kv.used(0) == 130
    kv.release(1)
    assert kv.fits(0, 50, 20) and kv.used(0) == 0


def test_the_door_holds_back_what_would_make_vllm_preempt_and_keeps_its_order() -> None:
    door = FrontDoor(DoorConfig("fcfs", None, kv_blocks=10, block_size=16), [4])
    big, mid, small = (Ticket("big", 40, prompt_tokens=100), Ticket("mid", 20, prompt_tokens=50),
                       Ticket("small", 5, prompt_tokens=5))  # fmt: skip
    for i, ticket in enumerate((big, mid, small)):
        door.arrive(ticket, float(i))
    plan = door.schedule(3.0)
    assert [t.request_id for t, _ in plan.grants] == ["big"], "mid does not fit; small waits behind it (fcfs)"
    assert door.num_waiting == 2 and door.num_held_for_kv >= 1 and door.ledger.free_slots() == 3
    door.release(big.lease)
    plan = door.schedule(4.0)
    assert [t.request_id for t, _ in plan.grants] == ["mid", "small"]


def test_without_kv_blocks_the_door_forwards_by_slots_alone() -> None:
    door = FrontDoor(DoorConfig("fcfs", None), [4])
    for i in range(3):
        door.arrive(Ticket(f"r{i}", 400, prompt_tokens=4000), float(i))
    assert len(door.schedule(3.0).grants) == 3
    with pytest.raises(ValueError, match="kv_blocks"):
        DoorConfig(kv_blocks=0)


def test_seqsched_serve_holds_back_at_the_door_what_its_kv_cache_cannot_take() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from tests.serve_helpers import FakeUpstream, chat, metric, serving, wait_for

    fake = FakeUpstream(seconds_per_token=0.001)
    long_prompt = "hold tokens 3 " + "words " * 40  # about 70 tokens at the door's estimate
    with serving(fake, max_inflight=8, door_kv_blocks=5) as url, ThreadPoolExecutor(3) as pool:  # 80 tokens
        answers = [pool.submit(chat, url, long_prompt + str(i)) for i in range(3)]
        wait_for(lambda: len(fake.received) == 1, "the first request upstream")
        wait_for(lambda: metric(url, "seqsched_held_for_kv") > 0, "the others held at the door")
        assert len(fake.received) == 1 and metric(url, "seqsched_queue_length") == 2
        fake.gate.set()
        assert [a.result(timeout=30).status_code for a in answers] == [200] * 3


def test_metrics_show_each_vllm_upstreams_own_preemptions() -> None:
    import httpx

    from tests.serve_helpers import FakeUpstream, serving

    first, second = FakeUpstream(preemptions=7), FakeUpstream(preemptions=2)
    with serving(first, second) as url:
        text = httpx.get(f"{url}/metrics").text
    counts = [line for line in text.splitlines() if line.startswith("seqsched_upstream_preemptions{")]
    assert sorted(float(line.split()[-1]) for line in counts) == [2.0, 7.0]
