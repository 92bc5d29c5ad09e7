"""What a micro-batch does when each request's output length is known in advance.

Shared by the simulator (which adds a cost model) and checked against trace replay
(which forces the same lengths on a real model), so both agree step for step.
"""

from __future__ import annotations

from collections.abc import Sequence

from seqsched.request import Outcome, Request
from seqsched.schedule import MicroBatch

# Stand-in token id for simulated output: only counts matter without a model.
SIMULATED_TOKEN = 0


def require_target_lengths(requests: Sequence[Request]) -> None:
    """Fail each request that has no length to force (the simulators run nothing else)."""
    for r in requests:
        if r.target_len is None:
            r.fail("the simulator needs a target length (target_len) for every request")
        elif r.target_len < 1:
            r.fail(f"target_len ({r.target_len}) must be >= 1")


def trace_outcomes(batch: MicroBatch, requests: Sequence[Request]) -> list[Outcome]:
    """Rows stop at their target length (finished) or at min(cap, own limit) (cut).
    The batch runs until its longest row stops; every row is charged those steps.
    A row that resumes after kept tokens has that many fewer left to produce."""
    produced = []
    for r in requests:
        assert r.target_len is not None, f"request {r.request_id!r} has no target length"
        left = r.target_len - len(r.output_prefix)
        assert left >= 1, f"request {r.request_id!r} kept {len(r.output_prefix)} of its {r.target_len} tokens"
        stop = min(batch.max_new_tokens, r.remaining_tokens)
        produced.append((min(left, stop), left <= stop))
    num_steps = max(n for n, _ in produced)
    return [
        Outcome(index=r.index, token_ids=[SIMULATED_TOKEN] * n, finished=done, num_steps=num_steps)
        for r, (n, done) in zip(requests, produced, strict=True)
    ]
