"""Collect a length trace: run a model on each prompt at each temperature and record how
many decode steps each response took (EOS included; a response cut at its limit counts
the limit).

Output, one JSON object per line (the JSONL format ``seqsched.data.traces`` reads):
``{"id", "instruction", "L_t0.0", "L_t0.3", ...}``; ``instruction`` holds the prompt text
(a chat request's contents joined by newlines), so the trace alone can train a predictor.

Prompts come from ``seqsched.data.prompts``. This runs the pipeline, so it is a job, not
data I/O: it sits above the engines, beside ``seqsched.job``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from seqsched.engine.base import Engine
from seqsched.pipeline import Pipeline
from seqsched.predict.constant import ConstantPredictor
from seqsched.request import Request, RequestStatus, SamplingParams
from seqsched.schedule import ScheduleConfig

DEFAULT_TEMPERATURES = (0.0, 0.3, 0.5, 0.7)


@dataclass(frozen=True)
class CollectConfig:
    temperatures: tuple[float, ...] = DEFAULT_TEMPERATURES
    max_new_tokens: int = 512  # limit of prompts that give none
    batch_size: int = 16
    seed: int = 0  # a sampled row of prompt i draws with seed + i

    def __post_init__(self) -> None:
        if not self.temperatures:
            raise ValueError("temperatures must hold at least one temperature")
        bad = [t for t in self.temperatures if not 0 <= t <= 2]
        if bad:
            raise ValueError(f"temperature ({bad[0]}) must be in [0, 2]")
        if len(set(self.temperatures)) != len(self.temperatures):
            raise ValueError(f"temperatures ({self.temperatures}) must be distinct")
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise ValueError(f"max_new_tokens ({self.max_new_tokens}) and batch_size ({self.batch_size}) must be >= 1")
        if self.seed < 0:
            raise ValueError(f"seed ({self.seed}) must be >= 0")


def length_field(temperature: float) -> str:
    """The trace field of a temperature, as the paper names it: 0.3 -> ``L_t0.3``."""
    return f"L_t{float(temperature)}"


def collect_lengths(
    engine: Engine,
    requests: Sequence[Request],
    config: CollectConfig,
    progress: Callable[[int], None] | None = None,
    on_chunk: Callable[[list[dict[str, Any]], list[str]], None] | None = None,
    chunk_size: int | None = None,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Trace records in input order, and one error line per prompt that failed (at any
    temperature: such a prompt is left out of the trace).

    Prompts go in chunks of ``chunk_size`` (default: all at once), every temperature of a
    chunk before the next chunk; ``on_chunk`` gets each chunk's records and errors as soon
    as they exist, so a caller can save them and a killed collection loses one chunk."""
    size = chunk_size or max(1, len(requests))
    records: list[dict[str, Any]] = []
    errors: list[str] = []
    for start in range(0, len(requests), size):
        chunk_records, chunk_errors = _collect_chunk(engine, requests[start : start + size], config, progress)
        if on_chunk is not None:
            on_chunk(chunk_records, chunk_errors)
        records += chunk_records
        errors += chunk_errors
    return records, errors


def _collect_chunk(
    engine: Engine, requests: Sequence[Request], config: CollectConfig, progress: Callable[[int], None] | None
) -> tuple[list[dict[str, Any]], list[str]]:
    lengths: dict[int, dict[str, int]] = {r.index: {} for r in requests}
    errors: dict[int, str] = {}
    schedule = ScheduleConfig(batch_size=config.batch_size, group_size=max(1, len(requests)))
    for temperature in config.temperatures:
        runs = [_fresh(r, temperature, config.seed) for r in requests]
        report = Pipeline(engine, ConstantPredictor(), schedule, progress).run(runs)
        for result in report.results:
            index = result.request.index
            if result.status == RequestStatus.FINISHED_ERROR:
                errors.setdefault(index, f"{result.request.request_id}: {result.request.error}")
            else:
                lengths[index][length_field(temperature)] = result.num_output_tokens
    records = [
        {"id": r.request_id, "instruction": r.text, **lengths[r.index]} for r in requests if r.index not in errors
    ]
    return records, list(errors.values())


def _fresh(request: Request, temperature: float, seed: int) -> Request:
    """A new request object per run: the pipeline mutates status and predictions."""
    sampling = SamplingParams(
        temperature=temperature,
        top_p=request.sampling.top_p,
        seed=None if temperature == 0 else seed + request.index,
    )
    return dataclasses.replace(
        request,
        sampling=sampling,
        status=RequestStatus.WAITING,
        error=None,
        predicted_len=None,
        target_len=None,
    )
