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

A replica that dies (its process killed, its node lost) loses only the group it was
running: that group goes back to the front of the queue, a replacement replica is
started, and the job goes on, as Ray Data retries a failed task. A group is retried at
most ``MAX_GROUP_RETRIES`` times. Replicas that the cluster cannot place (more CPUs or
GPUs asked than it has) are refused at once instead of waiting forever.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from seqsched.pipeline import Pipeline, RunReport
from seqsched.request import Request, RequestStatus, Result
from seqsched.schedule import groups

if TYPE_CHECKING:
    from seqsched.config import RayConfig, RunConfig

MAX_GROUP_RETRIES = 3
_log = logging.getLogger(__name__)


class Replica:
    """One engine and predictor, built from the job's config on its worker (a Ray actor)."""

    def __init__(self, config: RunConfig) -> None:
        from seqsched.build import build_engine, build_predictor

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
    _check_placeable(ray, ray_config)
    actor: Any = ray.remote(num_cpus=ray_config.num_cpus, num_gpus=ray_config.num_gpus, max_restarts=0)(Replica)
    replicas: list[Any] = [actor.remote(config) for _ in range(ray_config.num_workers)]
    todo = deque(groups(list(requests), config.schedule.group_size))
    pending: dict[Any, tuple[Any, list[Request], float]] = {}  # ref -> (replica, group, seconds in when sent)
    retries: dict[int, int] = {}  # first request index of a group -> times retried
    idle = list(replicas)
    done: dict[int, Result] = {}
    report = RunReport(results=[])
    try:
        # Replicas load and warm up before the clock starts, as the local run does.
        _get(ray, [replica.warmup.remote(list(requests[:2])) for replica in replicas])
        start = time.perf_counter()
        while todo or pending:
            while idle and todo:
                replica, group = idle.pop(), todo.popleft()
                pending[replica.run.remote(group)] = (replica, group, time.perf_counter() - start)
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            replica, group, sent = pending.pop(ref)
            try:
                part: RunReport = _get(ray, ref)  # a replica's error is raised here, after the groups before it
            except ray.exceptions.RayActorError as e:  # the replica died: retry its group on a new one
                key = group[0].index
                retries[key] = retries.get(key, 0) + 1
                if retries[key] > MAX_GROUP_RETRIES:
                    raise RuntimeError(f"a group of {len(group)} requests failed {retries[key]} times: {e}") from e
                _log.warning("a replica died (%s); retrying its group of %d requests", type(e).__name__, len(group))
                replicas.remove(replica)
                replacement = actor.remote(config)
                _get(ray, replacement.warmup.remote(list(requests[:2])))
                replicas.append(replacement)
                idle.append(replacement)
                todo.appendleft(_fresh(group))
                report.num_replica_retries += 1
                continue
            idle.append(replica)
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


def _fresh(group: list[Request]) -> list[Request]:
    """The group as it was sent: a dead replica's changes never came back, but be sure."""
    return [dataclasses.replace(r, status=RequestStatus.WAITING, output_prefix=(), predicted_len=None) for r in group]


def _check_placeable(ray: Any, ray_config: RayConfig) -> None:
    """Refuse replicas the cluster cannot place, instead of waiting for them forever."""
    total = ray.cluster_resources()
    for what, each in (("CPU", ray_config.num_cpus), ("GPU", ray_config.num_gpus)):
        need, have = each * ray_config.num_workers, float(total.get(what, 0.0))
        if need > have:
            raise ValueError(
                f"{ray_config.num_workers} replicas x {each:g} {what} = {need:g} {what}s, but the Ray cluster has "
                f"{have:g}: use fewer --workers or a smaller --worker-{what.lower()}s"
            )


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
