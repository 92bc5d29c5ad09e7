"""The library entry point: answer a request file with a scheduling strategy.

``seqsched.run("requests.jsonl", "results.jsonl", model="...", predictor="my-predictor")``
reads the requests, predicts their lengths, runs them through the scheduler and an
engine, and writes the answers in input order. With a predictor it does what
``seqsched run`` does with one: VBS (the paper's table), resuming FCR, and ``sjf`` on a
continuous engine (``seqsched.config.job_schedule``). The job itself, with its journal,
resume and error file, is ``seqsched/job.py``. Nothing here imports torch until a model
is loaded.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from seqsched.build import resolve_model
from seqsched.config import EngineKind, JobStrategy, Progress, RayConfig, RunConfig, job_schedule
from seqsched.engine.config import EngineConfig, VLLMConfig
from seqsched.job import RunSummary, execute
from seqsched.schedule import ScheduleConfig

__all__ = ["RunSummary", "run", "run_config"]


def run(
    input_path: str | Path, output_path: str | Path, *, progress: Progress | None = None, **options: Any
) -> RunSummary:
    """Answer ``input_path`` into ``output_path``. The keyword options are those of
    :func:`run_config` (``model``, ``predictor``, ``strategy``, ``engine="vllm"``, ...):
    :class:`RunConfig` fields (``max_new_tokens``, ``resume``, ``overwrite``,
    ``vllm=VLLMConfig(...)``, ``ray=RayConfig(...)``, ...), :class:`ScheduleConfig` fields
    (``batch_size``, ``vbs``, ``fcr_mode``, ``policy``, ...) and ``EngineConfig`` fields
    (``device``, ``dtype``, ...)."""
    return execute(run_config(input_path, output_path, **options), progress)


_JOB_KEYS = {"max_new_tokens", "resume", "overwrite", "margin_scale", "margin_add", "errors_path", "max_line_bytes"}


def run_config(
    input_path: str | Path,
    output_path: str | Path,
    *,
    model: str | Path | None = None,
    strategy: JobStrategy | None = None,
    predictor: str | Path | None = None,
    oracle_lengths: str | Path | None = None,
    engine: EngineKind = "hf",
    vllm: VLLMConfig | None = None,
    ray: RayConfig | None = None,
    **options: Any,
) -> RunConfig:
    """The :class:`RunConfig` that :func:`run` executes, defaults resolved as the CLI's."""
    schedule_keys = {f.name for f in dataclasses.fields(ScheduleConfig)} | {"fcr_mode", "fcr"}
    engine_keys = {f.name for f in dataclasses.fields(EngineConfig)} - {"model"}
    unknown = set(options) - schedule_keys - engine_keys - _JOB_KEYS
    if unknown:
        raise TypeError(f"unknown option(s): {', '.join(sorted(unknown))}")
    learned = predictor is not None or oracle_lengths is not None
    if "errors_path" in options and options["errors_path"] is not None:
        options["errors_path"] = Path(options["errors_path"])
    return RunConfig(
        input_path=Path(input_path),
        output_path=Path(output_path),
        engine=EngineConfig(model=str(resolve_model(model)), **{k: v for k, v in options.items() if k in engine_keys}),
        strategy=strategy,
        predictor=Path(predictor) if predictor is not None else None,
        oracle_lengths=Path(oracle_lengths) if oracle_lengths is not None else None,
        ray=ray,
        engine_kind=engine,
        vllm=vllm or VLLMConfig(),
        schedule=job_schedule(learned, **{k: v for k, v in options.items() if k in schedule_keys}),
        **{k: v for k, v in options.items() if k in _JOB_KEYS},
    )
