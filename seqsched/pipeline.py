"""The top-level loop: predict lengths -> plan -> run -> collect failures -> re-run them
-> restore input order.

The same loop drives every engine, so a simulated number and a measured one come from
the same schedule. A static engine (HF ``generate``, trace replay, the simulator) gets
micro-batches, group by group, and FCR re-runs; a continuous-batching engine (vLLM,
transformers' continuous batching, the simulated one) gets one stream plan (an order,
priorities, an admission rule) and reports each request as it finishes.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from seqsched.engine.base import BatchRun, Engine, OutOfMemory
from seqsched.engine.prompts import text_before_stop
from seqsched.engine.stream import StreamEngine
from seqsched.predict.base import LengthPredictor
from seqsched.request import Outcome, Request, RequestStatus, Result
from seqsched.schedule import (
    MicroBatch,
    ScheduleConfig,
    groups,
    is_failure,
    plan_group,
    plan_retries,
    plan_stream,
)


@dataclass(frozen=True)
class BatchRecord:
    """What one micro-batch did, for metrics and plots."""

    batch_size: int
    max_new_tokens: int
    num_steps: int
    num_output_tokens: int  # tokens kept or discarded, as generated
    is_retry: bool
    num_failures: int
    seconds: float
    num_discarded_tokens: int = 0  # tokens of FCR failures thrown away (restart; resume keeps them)
    indices: tuple[int, ...] = ()  # its rows, by input index: two runs with equal batches ran one plan


@dataclass
class RunReport:
    results: list[Result]  # input order
    batches: list[BatchRecord] = field(default_factory=list)
    wall_seconds: float = 0.0
    predictor_seconds: float = 0.0
    num_preemptions: int | None = None  # continuous engines that count them
    num_oom_splits: int = 0  # micro-batches halved after the engine ran out of memory
    num_error_splits: int = 0  # micro-batches halved after the engine raised
    num_engine_errors: int = 0  # requests that failed alone in the engine (FINISHED_ERROR)
    num_replica_retries: int = 0  # groups re-run after their Ray replica died
    stream_order: tuple[int, ...] | None = None  # a continuous engine's admission order
    stream_reserve: tuple[tuple[int, int], ...] | None = None  # its KV reservations, by index

    def plan_signature(self) -> tuple[object, ...]:
        """Equal for two runs that ran the same plan (batches and caps, or order and reservations)."""
        if self.stream_order is not None:
            return ("stream", self.stream_order, self.stream_reserve)
        return ("static", tuple((b.indices, b.max_new_tokens, b.is_retry) for b in self.batches))

    @property
    def num_failures(self) -> int:
        return sum(b.num_failures for b in self.batches)


class Pipeline:
    """Runs a list of requests through a predictor, the scheduler and an engine."""

    def __init__(
        self,
        engine: Engine | StreamEngine,
        predictor: LengthPredictor,
        config: ScheduleConfig,
        progress: Callable[[int], None] | None = None,
        on_result: Callable[[Result], None] | None = None,
    ) -> None:
        """``progress(n)`` is told each time ``n`` more requests are done; ``on_result`` gets
        each request's final result as soon as it is known (a writer can save it at once)."""
        self.engine = engine
        self.predictor = predictor
        self.config = config
        self.progress = progress
        self.on_result = on_result

    def run(self, requests: Sequence[Request]) -> RunReport:
        indices = [r.index for r in requests]
        assert len(set(indices)) == len(indices), "request indices must be unique"
        self._clock = 0.0
        self._by_index = {r.index: r for r in requests}
        self._report = RunReport(results=[Result(request=r) for r in requests])
        self._results = {res.request.index: res for res in self._report.results}
        self.engine.prepare(requests)
        rejected = [res for res in self._report.results if res.status.is_finished]
        for res in rejected:
            self._finish(res)
        self._progress(len(rejected))
        runnable = [r for r in requests if not r.status.is_finished]
        if isinstance(self.engine, StreamEngine):
            self._run_stream(self.engine, runnable)
        else:
            for group in groups(runnable, self.config.group_size):
                self._predict(group)
                failed = [f for batch in plan_group(group, self.config) for f in self._run(self.engine, batch)]
                for batch in plan_retries(failed, self.config):
                    assert not self._run(self.engine, batch), "a full-limit re-run cannot fail"
        self._report.wall_seconds = self._clock
        return self._report

    def _run_stream(self, engine: StreamEngine, requests: list[Request]) -> None:
        """Continuous batching: predict (unless the plan is plain fcfs), plan one order for
        the whole stream, and let the engine run it; each answer is final when it comes."""
        if not requests:
            return
        if self.config.policy != "fcfs" or self.config.admission != "none":
            for group in groups(requests, self.config.group_size):
                self._predict(group)
        plan = plan_stream(requests, self.config, engine.kv_capacity, engine.block_size)
        self._report.stream_order = plan.order
        self._report.stream_reserve = None if plan.reserve is None else tuple(sorted(plan.reserve.items()))
        started = self._clock

        def record(outcome: Outcome) -> None:
            request, result = self._by_index[outcome.index], self._results[outcome.index]
            result.scheduled_at = started + outcome.scheduled_at
            result.num_runs = 1
            result.length = outcome.num_steps
            self._complete(request, result, outcome, started + outcome.completed_at)
            self._progress(1)

        def fail(index: int, message: str) -> None:
            self._by_index[index].fail(message)
            self._finish(self._results[index])
            self._progress(1)

        run = engine.run_stream(plan, requests, record, fail)
        self._clock = started + run.seconds
        self._report.num_preemptions = run.num_preemptions

    def _predict(self, group: list[Request]) -> None:
        start = time.perf_counter()
        predicted = self.predictor.predict_requests(group)
        seconds = time.perf_counter() - start
        assert len(predicted) == len(group), "a predictor must return one length per request"
        for request, length in zip(group, predicted, strict=True):
            request.predicted_len = int(length)
        if not self.engine.modelled_time:  # real seconds never join modelled ones
            self._clock += seconds
        self._report.predictor_seconds += seconds

    def _run(self, engine: Engine, batch: MicroBatch) -> list[Request]:
        """Run one micro-batch; return its FCR failures."""
        rows = [self._by_index[i] for i in batch.indices]
        for r in rows:
            r.status = RequestStatus.RUNNING
        started = self._clock
        run = self._run_halving(engine, batch, rows)
        for r in rows:
            if r.status == RequestStatus.FINISHED_ERROR:
                self._finish(self._results[r.index])
                self._progress(1)
        rows = [r for r in rows if r.status != RequestStatus.FINISHED_ERROR]
        assert [o.index for o in run.outcomes] == [r.index for r in rows], "outcomes out of row order"
        self._clock += run.seconds
        if not rows:
            return []
        failed_outcomes = [o for r, o in zip(rows, run.outcomes, strict=True) if self._record(r, o, batch, started)]
        failed = [self._by_index[o.index] for o in failed_outcomes]
        resumed = self.config.fcr_mode == "resume"
        self._report.batches.append(
            BatchRecord(
                batch_size=batch.batch_size,
                max_new_tokens=batch.max_new_tokens,
                num_steps=max(o.num_steps for o in run.outcomes),
                num_output_tokens=sum(o.num_output_tokens for o in run.outcomes),
                is_retry=batch.is_retry,
                num_failures=len(failed),
                seconds=run.seconds,
                num_discarded_tokens=0 if resumed else sum(o.num_output_tokens for o in failed_outcomes),
                indices=tuple(batch.indices),
            )
        )
        self._progress(len(rows) - len(failed))
        return failed

    def _run_halving(self, engine: Engine, batch: MicroBatch, rows: list[Request]) -> BatchRun:
        """Run a micro-batch. If the engine runs out of memory, or raises for any other
        reason, run each half in turn (a row's tokens do not depend on its batch mates, so
        the outcomes are the same): one poison row fails alone, as FINISHED_ERROR with the
        engine's message, and the rest of its batch is answered. No outcome is returned for
        a failed row."""
        try:
            return engine.run(batch, rows)
        except OutOfMemory:
            if len(rows) == 1:
                raise
            self._report.num_oom_splits += 1
        except Exception as e:  # not Stopped or KeyboardInterrupt: those end the job
            if len(rows) == 1:
                rows[0].fail(f"the engine failed on this request: {type(e).__name__}: {e}")
                self._report.num_engine_errors += 1
                return BatchRun([], 0.0)
            self._report.num_error_splits += 1
        half = len(rows) // 2
        runs = [
            self._run_halving(engine, MicroBatch(batch.indices[part], batch.max_new_tokens, batch.is_retry), rows[part])
            for part in (slice(0, half), slice(half, None))
        ]
        outcomes = [o for run in runs for o in run.outcomes]
        num_steps = max((o.num_steps for o in outcomes), default=0)
        return BatchRun([dataclasses.replace(o, num_steps=num_steps) for o in outcomes], sum(r.seconds for r in runs))

    def _record(self, request: Request, outcome: Outcome, batch: MicroBatch, started: float) -> bool:
        """Fold one outcome into its result; return True when it is an FCR failure."""
        result = self._results[request.index]
        if result.num_runs == 0:
            result.scheduled_at = started
        result.num_runs += 1
        result.length += outcome.num_steps
        if is_failure(request, batch, outcome.finished, outcome.num_output_tokens):
            if self.config.fcr_mode == "resume":
                request.output_prefix += tuple(outcome.token_ids)
            else:
                result.num_wasted_steps += outcome.num_steps
            request.status = RequestStatus.WAITING
            return True
        self._complete(request, result, outcome, self._clock)
        return False

    def _complete(self, request: Request, result: Result, outcome: Outcome, completed_at: float) -> None:
        result.token_ids = [*request.output_prefix, *outcome.token_ids]
        result.text = text_before_stop(self.engine.decode(result.token_ids), request.stop)
        result.completed_at = completed_at
        request.status = RequestStatus.FINISHED_STOPPED if outcome.finished else RequestStatus.FINISHED_LENGTH
        self._finish(result)

    def _finish(self, result: Result) -> None:
        if self.on_result is not None:
            self.on_result(result)

    def _progress(self, num_done: int) -> None:
        if self.progress is not None and num_done:
            self.progress(num_done)
