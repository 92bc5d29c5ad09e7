"""The routing scorers' registry on plain data: each scorer alone, a weighted mix, the
prefix index and its guard, and ``--routing``'s errors."""

from __future__ import annotations

import pytest

from seqsched.schedule.ledger import SlotLedger
from seqsched.schedule.prefix import PrefixIndex, prefix_blocks
from seqsched.schedule.route import Router
from seqsched.schedule.scorers import MAX_IMBALANCE, Routed, parse_routing

SYSTEM = "You are a terse assistant for a bank; answer in one sentence, never more. " * 4


def test_prefix_blocks_chain_so_equal_keys_mean_equal_prefixes() -> None:
    a, b = prefix_blocks(SYSTEM + "What is a loan?"), prefix_blocks(SYSTEM + "What is a bond?")
    assert len(a) == len(SYSTEM + "What is a loan?") // 64 and a[:4] == b[:4]
    assert prefix_blocks("x" * 64 + SYSTEM)[1:] != prefix_blocks(SYSTEM)[: len(prefix_blocks(SYSTEM)) - 1]
    assert prefix_blocks("short") == ()


def test_the_prefix_index_matches_leading_blocks_and_forgets_the_least_recent() -> None:
    index = PrefixIndex(capacity=6)
    first = prefix_blocks(SYSTEM + "q1")
    index.insert(first)
    assert index.match(prefix_blocks(SYSTEM + "q2")) == 4
    assert index.match(prefix_blocks("other" * 40)) == 0
    index.insert(prefix_blocks("other" * 40))  # 3 blocks: the oldest of the first go
    assert len(index) == 6 and index.match(first) == 0


def _router_at(routing: str, slots: list[int], running: list[tuple[int, int]]) -> tuple[Router, SlotLedger]:
    ledger, router = SlotLedger(slots), Router(routing)
    for number, (upstream, predicted) in enumerate(running):
        ledger.take(number, upstream, "interactive", predicted)
    return router, ledger


def test_least_work_and_queue_length_disagree_where_lengths_differ() -> None:
    running = [(0, 1000), (1, 5), (1, 5), (1, 5)]  # upstream 0: one long; upstream 1: three short
    least, ledger = _router_at("least-work", [8, 8], running)
    assert least.pick(ledger) == 1
    queue, ledger = _router_at("queue-length", [8, 8], running)
    assert queue.pick(ledger) == 0


def test_prefix_affinity_beats_a_little_more_work_in_a_mix_but_not_an_imbalance() -> None:
    router, ledger = _router_at("prefix-affinity:2,least-work:1", [32, 32], [])
    asked = Routed(5, prefix_blocks(SYSTEM + "first"))
    assert router.pick(ledger, request=asked) == 0  # nothing anywhere: the first
    ledger.take(100, 0, "interactive", 50)  # upstream 0 is busier now
    again = Routed(5, prefix_blocks(SYSTEM + "second"))
    assert router.pick(ledger, request=again) == 0, "the prefix's cache outweighs 50 tokens of work"
    assert Router("least-work").pick(ledger, request=again) == 1
    for number in range(MAX_IMBALANCE + 1):  # far busier by count: the guard turns affinity off
        ledger.take(200 + number, 0, "interactive", 1)
    assert router.pick(ledger, request=Routed(5, prefix_blocks(SYSTEM + "third"))) == 1


def test_round_robin_keeps_its_turn_through_the_registry() -> None:
    ledger, router = SlotLedger([1, 5, 5]), Router("round-robin")
    picks = []
    for number in range(5):
        pick = router.pick(ledger)
        assert pick is not None
        ledger.take(number, pick, "interactive", 10)
        picks.append(pick)
    assert picks == [0, 1, 2, 1, 2]


@pytest.mark.parametrize(
    ("spec", "message"),
    [("random", "'random' is none"), ("least-work:0", "positive number"), ("least-work:x", "positive number"),
     ("least-work,least-work", "given twice"), ("", "'' is none")],
)  # fmt: skip
def test_routing_specs_are_checked_with_a_clear_error(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_routing(spec)
    assert parse_routing("prefix-affinity:2, least-work") == [("prefix-affinity", 2.0), ("least-work", 1.0)]
