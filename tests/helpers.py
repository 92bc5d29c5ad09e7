"""Plain-data helpers for scheduler and pipeline tests: no model, no torch."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from seqsched.engine.base import BatchRun, Engine
from seqsched.request import Request
from seqsched.schedule import MicroBatch
from seqsched.simulate.trace import trace_outcomes


def create_requests(
    predicted: Sequence[int],
    actual: Sequence[int] | None = None,
    max_new_tokens: int = 512,
) -> list[Request]:
    actual = actual if actual is not None else predicted
    return [
        Request(
            index=i,
            request_id=f"r{i}",
            prompt=f"prompt {i}",
            max_new_tokens=max_new_tokens,
            predicted_len=p,
            target_len=a,
        )
        for i, (p, a) in enumerate(zip(predicted, actual, strict=True))
    ]


class StepCountingEngine(Engine):
    """Runs micro-batches from target lengths; one modelled second per decode step."""

    modelled_time = True  # the predictor's real microseconds must not join the modelled clock

    def __init__(self) -> None:
        self.batches: list[MicroBatch] = []

    def run(self, batch: MicroBatch, requests: Sequence[Request]) -> BatchRun:
        self.batches.append(batch)
        outcomes = trace_outcomes(batch, requests)
        return BatchRun(outcomes, float(outcomes[0].num_steps))


def write_lines(path: Path, lines: list[Any]) -> Path:
    """A JSONL file of ``lines``: objects dumped, strings written as they are (bad lines)."""
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]
