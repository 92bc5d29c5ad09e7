"""The model of vLLM's scheduler, on plain data: hand-worked steps, and step-for-step
agreement with a naive reference that loops over every request every step."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from seqsched.simulate.step_cost import ContinuousCost, StepShape
from seqsched.simulate.vllm_model import SchedulerLimits, SchedulerModel, SimRequest

UNIT = ContinuousCost(a=1.0, t=0.0)  # every step costs one second


def _run(limits: SchedulerLimits, requests: list[SimRequest]) -> tuple[SchedulerModel, list[StepShape]]:
    model = SchedulerModel(limits, UNIT)
    for r in requests:
        model.add(r)
    shapes = []
    while model.has_unfinished():
        shapes.append(model.step().shape)
    return model, shapes


def test_prefill_samples_the_first_token_and_decodes_follow() -> None:
    reqs = [SimRequest(i, prompt=5, target=t) for i, t in enumerate([3, 1, 4])]
    model, shapes = _run(SchedulerLimits(max_num_seqs=2, max_num_batched_tokens=16, block_size=4), reqs)
    # step 1: both prompts (first tokens; request 1 is done); step 2: request 0 decodes, request 2 prefills
    assert shapes[0] == StepShape(seqs=2, tokens=10, decode_context=0, prefill_attention=50)
    assert shapes[1] == StepShape(seqs=2, tokens=6, decode_context=6, prefill_attention=25)
    assert shapes[2] == StepShape(seqs=2, tokens=2, decode_context=7 + 6, prefill_attention=0)
    assert [(r.first_token_at, r.finished_at) for r in reqs] == [(1.0, 3.0), (1.0, 1.0), (2.0, 5.0)]
    assert model.num_steps == 5 and all(r.generated == r.target for r in reqs)


def test_a_long_prompt_is_chunked_under_the_token_budget() -> None:
    reqs = [SimRequest(0, prompt=20, target=2), SimRequest(1, prompt=3, target=1)]
    _, shapes = _run(SchedulerLimits(max_num_seqs=4, max_num_batched_tokens=8), reqs)
    assert [s.tokens for s in shapes] == [8, 8, 4 + 3, 1]  # 8 + 8 + 4 of the prompt; request 1 joins step 3
    assert reqs[0].first_token_at == 3.0 and reqs[1].finished_at == 3.0


def test_waiting_requests_are_admitted_in_priority_order() -> None:
    reqs = [SimRequest(i, prompt=4, target=2, priority=p, arrival=i) for i, p in enumerate([3, 1, 2])]
    _run(SchedulerLimits(max_num_seqs=1, max_num_batched_tokens=16, policy="priority"), reqs)
    assert sorted(reqs, key=lambda r: r.finished_at or 0) == [reqs[1], reqs[2], reqs[0]]


@pytest.mark.parametrize("policy", ["fcfs", "priority"])
def test_a_full_cache_preempts_and_recomputes(policy: str) -> None:
    # 5 blocks of 4 tokens (one is the null block); three requests of 4 + 6 tokens cannot all grow at once.
    reqs = [SimRequest(i, prompt=4, target=6, priority=i, arrival=i) for i in range(3)]
    model, shapes = _run(SchedulerLimits(8, 64, num_blocks=5, block_size=4, policy=policy), reqs)  # type: ignore[arg-type]
    assert model.num_preemptions >= 1
    assert all(r.generated == 6 for r in reqs)
    # the last admitted (also the lowest priority) goes first; the first admitted never does
    assert reqs[2].num_preemptions >= 1 and reqs[0].num_preemptions == 0
    # the victim's readmission prefills its prompt and every token it had made
    assert any(s.prefill_attention and s.tokens > 4 for s in shapes)


def test_bad_limits_and_requests_are_refused() -> None:
    with pytest.raises(ValueError, match="max_num_batched_tokens"):
        SchedulerLimits(max_num_seqs=16, max_num_batched_tokens=8)
    with pytest.raises(ValueError, match="policy"):
        SchedulerLimits(policy="lifo")  # type: ignore[arg-type]
    model = SchedulerModel(SchedulerLimits(num_blocks=2, block_size=4), UNIT)
    with pytest.raises(ValueError, match="never fit the KV cache of 4"):  # one block is vLLM's null block
        model.add(SimRequest(0, prompt=3, target=3))
    with pytest.raises(ValueError, match="must be >= 1"):
        model.add(SimRequest(1, prompt=0, target=3))


# -- a naive reference: every request updated every step -------------------------------


@dataclass
class _Ref:
    rid: int
    prompt: int
    target: int
    priority: float
    arrival: float
    generated: int = 0
    computed: int = 0
    blocks: int = 0
    finished_at: int | None = None
    prefilled: bool = False


def _reference(limits: SchedulerLimits, specs: list[tuple[int, int, float]]) -> tuple[list[StepShape], list[int], int]:
    """The same rules, written plainly: decodes, then running prefills, then waiting."""
    bs, cap = limits.block_size, limits.usable_blocks
    reqs = [_Ref(i, p, t, pr, i) for i, (p, t, pr) in enumerate(specs)]
    waiting = list(reqs)
    running: list[_Ref] = []
    used = preemptions = step = 0
    shapes = []

    def blocks(n: int) -> int:
        return -(-n // bs)

    def key(r: _Ref) -> tuple[float, float]:
        return (r.priority, r.arrival)

    def order_waiting() -> None:
        if limits.policy == "priority":
            waiting.sort(key=key)

    def preempt(victim: _Ref) -> None:
        nonlocal used, preemptions
        running.remove(victim)
        used -= victim.blocks
        victim.blocks = victim.computed = 0
        victim.prefilled = False
        waiting.insert(0, victim)
        order_waiting()
        preemptions += 1

    def victim() -> _Ref:
        return max(running, key=key) if limits.policy == "priority" else running[-1]

    order_waiting()
    while waiting or running:
        step += 1
        budget, preempted, chunks = limits.max_num_batched_tokens, 0, []
        decoding = [r for r in running if r.prefilled]
        if cap is not None:
            while sum(1 for r in decoding if blocks(r.computed + 1) > r.blocks) > cap - used and running:
                v = victim()
                preempt(v)
                preempted += 1
                decoding = [r for r in decoding if r is not v]
            for r in decoding:
                extra = blocks(r.computed + 1) - r.blocks
                r.blocks += extra
                used += extra
        budget -= len(decoding)
        for r in [r for r in running if r not in decoding]:
            if budget <= 0:
                break
            if r not in running:
                continue
            n = min(r.prompt + r.generated - r.computed, budget)
            extra = blocks(r.computed + n) - r.blocks
            ok = True
            while cap is not None and extra > cap - used:
                v = victim()
                preempt(v)
                preempted += 1
                if v is r:
                    ok = False
                    break
                decoding = [d for d in decoding if d is not v]
            if not ok:
                break
            r.blocks += extra
            used += extra
            chunks.append((r, n))
            budget -= n
        while not preempted and budget > 0 and waiting and len(running) < limits.max_num_seqs:
            r = waiting[0]
            n = min(r.prompt + r.generated, budget)
            extra = blocks(n)
            if cap is not None and blocks(r.prompt + r.generated) > cap - used:  # all its tokens must fit
                break
            waiting.pop(0)
            running.append(r)
            r.blocks, used = extra, used + extra
            chunks.append((r, n))
            budget -= n
        decoding = [r for r in decoding if r in running]
        chunks = [(r, n) for r, n in chunks if r in running]
        single = [(r, n) for r, n in chunks if n == 1 and r.computed > 0]  # reads as a decode
        shapes.append(StepShape(
            seqs=len(decoding) + len(chunks),
            tokens=len(decoding) + sum(n for _, n in chunks),
            decode_context=sum(r.computed + 1 for r in decoding) + sum(r.computed + 1 for r, _ in single),
            prefill_attention=sum(n * (r.computed + n) for r, n in chunks if (r, n) not in single),
        ))  # fmt: skip
        for r in decoding:
            r.computed += 1
            r.generated += 1
        for r, n in chunks:
            r.computed += n
            if r.computed == r.prompt + r.generated:
                r.generated += 1
                r.prefilled = True
        for r in [r for r in running if r.generated >= r.target]:
            running.remove(r)
            used -= r.blocks
            r.finished_at = step
    return shapes, [r.finished_at or 0 for r in reqs], preemptions


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("policy", ["fcfs", "priority"])
def test_matches_the_naive_reference_step_for_step(seed: int, policy: str) -> None:
    rng = random.Random(seed)
    num_blocks = rng.choice([None, 24, 60])
    limits = SchedulerLimits(
        max_num_seqs=rng.choice([2, 8, 32]),
        max_num_batched_tokens=rng.choice([32, 64, 2048]),
        num_blocks=num_blocks,
        block_size=rng.choice([4, 16]),
        policy=policy,  # type: ignore[arg-type]
        prefix_caching=False,  # the reference recomputes everything; tests/test_vllm_model_vs_vllm.py has the cache
    )
    specs = [(rng.randint(1, 40), rng.randint(1, 60), rng.random()) for _ in range(rng.randint(20, 80))]
    if num_blocks is not None:
        specs = [(p, t, pr) for p, t, pr in specs if p + t <= (num_blocks - 1) * limits.block_size]
    want_shapes, want_finish, want_preemptions = _reference(limits, specs)
    reqs = [SimRequest(i, p, t, priority=pr, arrival=i) for i, (p, t, pr) in enumerate(specs)]
    model, shapes = _run(limits, reqs)
    assert shapes == want_shapes
    assert [int(r.finished_at or 0) for r in reqs] == want_finish
    assert model.num_preemptions == want_preemptions
    if num_blocks is None:
        assert want_preemptions == 0
