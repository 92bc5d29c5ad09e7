"""Running a job's requests: the pipeline in this process or on Ray replicas, each answer
journaled the moment it exists, with progress and a time left by predicted lengths."""

from __future__ import annotations

import functools
from array import array
from collections.abc import Callable
from typing import TYPE_CHECKING

from seqsched.data.batch_io import is_answered, result_line
from seqsched.data.journal import Journal
from seqsched.eta import PredictedEta, format_seconds
from seqsched.pipeline import Pipeline, RunReport
from seqsched.request import Request, Result

if TYPE_CHECKING:
    from seqsched.config import Progress, RunConfig

RunRequests = Callable[[list[Request], Callable[[int], None] | None, Callable[[Result], None]], RunReport]


def runner(config: RunConfig, todo: list[Request], oracle: dict[str, int] | None) -> RunRequests:
    """What runs the requests. The local pipeline loads its model and predictor here, before
    the job creates any file, so a model that fails to load leaves nothing behind; Ray's
    replicas load theirs when they start."""
    if config.ray is not None:
        from seqsched.distributed import run_on_ray

        return functools.partial(run_on_ray, config, config.ray)
    from seqsched.build import build_engine, build_predictor

    engine = build_engine(config.engine, config.engine_kind, config.vllm)
    predictor = build_predictor(config, engine, oracle)
    engine.warmup(todo)  # so the first micro-batch's timing is not the kernels' start-up

    def run_requests(
        requests: list[Request], progress: Callable[[int], None] | None, on_result: Callable[[Result], None]
    ) -> RunReport:
        return Pipeline(engine, predictor, config.schedule, progress, on_result=on_result).run(requests)

    return run_requests


def run(
    config: RunConfig,
    run_requests: RunRequests,
    todo: list[Request],
    journal: Journal,
    where: array[int],
    progress: Progress | None,
) -> RunReport:
    """Run ``todo``; each answer's journal offset goes to ``where[request.index]``."""
    if not todo:
        return RunReport(results=[])
    model = _model_name(config)
    if progress is not None:
        progress.total = len(todo)
        progress.refresh()
    eta = PredictedEta(todo)
    how = "by predicted lengths" if config.learned else "at each request's limit"

    def save(result: Result) -> None:
        line = result_line(result, model)
        if is_answered(line):
            line["seqsched"]["fingerprint"] = result.request.fingerprint
            where[result.request.index] = journal.append(line)
        eta.finished(result.request)
        left = eta.seconds_left()
        if progress is not None and left is not None and hasattr(progress, "set_postfix_str"):
            progress.set_postfix_str(f"{format_seconds(left)} left {how}", refresh=False)

    return run_requests(todo, progress.update if progress else None, save)


def _model_name(config: RunConfig) -> str:
    from pathlib import Path

    path = Path(config.engine.model).expanduser()
    return path.name if path.exists() else str(config.engine.model)
