"""Data-parallel scale-out on Ray: one engine replica per worker, scheduling groups dealt out.

NOTE on why groups are the unit of work. The scheduler plans each ``group_size`` window
on its own (sort, bins, VBS, FCR re-runs at the end of the group), so a group is
self-contained: sent whole to any replica, it gets exactly the micro-batches it gets in
one process. A Ray run therefore returns the same tokens and the same length metrics as
a local run of the same config; only wall time changes. Groups are handed to whichever
replica is free, so a replica that drew short groups takes more of them.

Each replica loads the model and the predictor once (an actor), and its results come
back group by group: the caller's ``on_result`` (the job's journal) sees every finished
answer as soon as its group is done, so a failure on one replica never loses the
groups that finished.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from seqsched.pipeline import Pipeline, RunReport
from seqsched.request import Request, Result
from seqsched.schedule import groups

if TYPE_CHECKING:
    from seqsched.api import RunConfig


@dataclass(frozen=True)
class RayConfig:
    """``num_workers`` replicas of the engine, each reserving ``num_cpus`` and
    ``num_gpus`` from Ray. ``address``: an existing cluster (``"auto"``, ``"ray://..."``);
    None starts a local Ray on this machine."""

    num_workers: int = 2
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    address: str | None = None

    def __post_init__(self) -> None:
        if self.num_workers < 1:
            raise ValueError(f"num_workers ({self.num_workers}) must be >= 1")
        if self.num_cpus <= 0:
            raise ValueError(f"num_cpus ({self.num_cpus}) must be > 0")
        if self.num_gpus < 0:
            raise ValueError(f"num_gpus ({self.num_gpus}) must be >= 0")


class Replica:
    """One engine and predictor, built from the job's config on its worker (a Ray actor)."""

    def __init__(self, config: RunConfig) -> None:
        from seqsched.api import build_engine, build_predictor

        self.config = config
        self._error: Exception | None = None
        try:
            self.engine = build_engine(config.engine, config.engine_kind, config.vllm)
            self.predictor = build_predictor(config, self.engine)
        except Exception as e:  # raised from warmup: Ray hands a method's error back intact
            self._error = e

    def warmup(self, requests: list[Request]) -> None:
        if self._error is not None:
            raise self._error
        self.engine.warmup(requests)

    def run(self, requests: list[Request]) -> RunReport:
        return Pipeline(self.engine, self.predictor, self.config.schedule).run(requests)


def run_on_ray(
    config: RunConfig,
    ray_config: RayConfig,
    requests: Sequence[Request],
    progress: Callable[[int], None] | None = None,
    on_result: Callable[[Result], None] | None = None,
) -> RunReport:
    """Run ``requests`` on ``ray_config.num_workers`` replicas; results in input order."""
    import ray

    if not ray.is_initialized():
        ray.init(address=ray_config.address, include_dashboard=False, log_to_driver=False)
    actor: Any = ray.remote(num_cpus=ray_config.num_cpus, num_gpus=ray_config.num_gpus)(Replica)
    replicas: list[Any] = [actor.remote(config) for _ in range(ray_config.num_workers)]
    todo = deque(groups(list(requests), config.schedule.group_size))
    pending: dict[Any, tuple[Any, float]] = {}  # ref -> (replica, seconds into the run when sent)
    idle = list(replicas)
    done: dict[int, Result] = {}
    report = RunReport(results=[])
    try:
        # Replicas load and warm up before the clock starts, as the local run does.
        _get(ray, [replica.warmup.remote(list(requests[:2])) for replica in replicas])
        start = time.perf_counter()
        while todo or pending:
            while idle and todo:
                replica = idle.pop()
                pending[replica.run.remote(todo.popleft())] = (replica, time.perf_counter() - start)
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            replica, sent = pending.pop(ref)
            idle.append(replica)
            part: RunReport = _get(ray, ref)  # a replica's error is raised here, after the groups before it
            report.batches.extend(part.batches)
            report.predictor_seconds += part.predictor_seconds
            for result in part.results:
                # A replica's clock starts at its group; the job's starts at the first group.
                result.scheduled_at += sent
                result.completed_at += sent
                done[result.request.index] = result
                if on_result is not None:
                    on_result(result)
            if progress is not None:
                progress(len(part.results))
    finally:
        for replica in replicas:
            ray.kill(replica)
    report.wall_seconds = time.perf_counter() - start
    report.results = [done[r.index] for r in requests]
    return report


def _get(ray: Any, refs: Any) -> Any:
    """``ray.get``, raising a replica's own exception (e.g. a bad model path) rather than
    Ray's wrapper, so errors read the same as in a local run."""
    try:
        return ray.get(refs)
    except ray.exceptions.RayTaskError as e:
        cause = getattr(e, "cause", None)
        if isinstance(cause, Exception):
            raise cause from None
        raise
