"""Side-by-side runs: several strategies, one process, the same engine, the same requests.

NOTE on fair timing. Every strategy runs on the same engine object, so the model, its
weights and its allocator are shared. A warm-up comes first. With ``repeat > 1`` the
strategies are interleaved per repeat (vanilla, oracle, vanilla, oracle, ...) so that
slow drift (thermal, other load) hits all of them alike, and the repeat with the median
wall time stands for each strategy. Requests are mutable (status, predicted_len), so
every run gets fresh copies of the pristine inputs, which are never run themselves.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from seqsched.bench.names import StrategyName, parse_strategy
from seqsched.engine.base import Engine
from seqsched.engine.stream import StreamEngine
from seqsched.metrics import Metrics, compute_metrics
from seqsched.pipeline import Pipeline, RunReport
from seqsched.predict.base import LengthPredictor
from seqsched.predict.constant import ConstantPredictor
from seqsched.request import Request
from seqsched.schedule import ScheduleConfig

# A predictor, or a factory called once, just before the strategy's first run, with the
# reports of the strategies that already ran (by name): the live oracle reads vanilla's.
PredictorSource = LengthPredictor | Callable[[Mapping[str, RunReport]], LengthPredictor]
PIPELINE_WARMUP_TOKENS = 16  # a pipeline warm-up: enough decode steps to warm kernels and the allocator


class Bar(Protocol):
    """One run's progress bar (a ``tqdm`` is one)."""

    def update(self, n: int = 1) -> Any: ...

    def close(self) -> Any: ...


@dataclass
class Strategy:
    name: str
    predictor: PredictorSource
    schedule: ScheduleConfig
    description: str = ""
    engine: Engine | StreamEngine | None = None  # None: the bench's engine


@dataclass
class StrategyResult:
    strategy: Strategy
    metrics: Metrics  # of the median run
    report: RunReport  # the median run
    wall_seconds: list[float]  # one per repeat, in run order
    predictor: LengthPredictor  # as the strategy made it (e.g. the live oracle's lengths)
    runs: list[Metrics] = dataclasses.field(default_factory=list)  # one per repeat, in run order

    def spread(self, key: str) -> tuple[float, float]:
        """(min, max) over the repeats of a metric, e.g. ``requests_per_second``."""
        values = [getattr(m, key) for m in self.runs] or [getattr(self.metrics, key)]
        return min(values), max(values)


@dataclass
class BenchResult:
    """``baseline`` names the plain run of static strategies (vanilla). A continuous
    engine's policies are compared with its plain run (``vllm+sjf`` with ``vllm``), and the
    plain run with vanilla when vanilla ran (else with itself)."""

    results: list[StrategyResult]
    baseline: str = "vanilla"
    repeat: int = 1

    def baseline_of(self, name: str) -> str:
        parsed = _kind(name)
        if parsed.stream and parsed.switches:
            return parsed.base
        ran = {r.strategy.name for r in self.results}
        return self.baseline if self.baseline in ran or not parsed.stream else name

    def significant(self, name: str, key: str = "requests_per_second") -> bool | None:
        """Whether ``name``'s repeats and its baseline's do not overlap on ``key``; None with
        one repeat or no baseline (nothing to tell noise from a difference with)."""
        by_name = {r.strategy.name: r for r in self.results}
        base = by_name.get(self.baseline_of(name))
        if self.repeat < 2 or base is None or base.strategy.name == name:
            return None
        lo, hi = by_name[name].spread(key)
        base_lo, base_hi = base.spread(key)
        return hi < base_lo or lo > base_hi

    def identical_plans(self) -> list[list[str]]:
        """Groups of strategies that ran exactly the same plan on the same engine: any
        difference between their figures is noise."""
        groups: dict[object, list[str]] = {}
        for r in self.results:
            key = (_kind(r.strategy.name).engine, r.strategy.schedule.admission, r.report.plan_signature())
            groups.setdefault(key, []).append(r.strategy.name)
        return [names for names in groups.values() if len(names) > 1]

    def ratio(self, name: str) -> float | None:
        """Throughput (requests/s) of ``name`` over its baseline's; None without one."""
        pair = self._pair(name)
        if pair is None or pair[1].requests_per_second == 0:
            return None
        return pair[0].requests_per_second / pair[1].requests_per_second

    def latency_ratio(self, name: str) -> float | None:
        """Mean completion time of ``name`` over its baseline's; None without one."""
        pair = self._pair(name)
        if pair is None or pair[1].latency_mean == 0:
            return None
        return pair[0].latency_mean / pair[1].latency_mean

    def _pair(self, name: str) -> tuple[Metrics, Metrics] | None:
        by_name = {r.strategy.name: r.metrics for r in self.results}
        base = by_name.get(self.baseline_of(name))
        return None if base is None else (by_name[name], base)


def _kind(name: str) -> StrategyName:
    """A strategy's parsed name; one made by hand under another name is static."""
    try:
        return parse_strategy(name)
    except ValueError:
        return StrategyName(name)


def fresh_copies(requests: Sequence[Request]) -> list[Request]:
    """Shallow copies: a run mutates status and predicted_len, never the lists inside."""
    return [dataclasses.replace(r) for r in requests]


def run_strategies(
    engine: Engine | StreamEngine,
    requests: Sequence[Request],
    strategies: Sequence[Strategy],
    repeat: int = 1,
    warmup: bool = True,
    on_run: Callable[[str, int, Metrics], None] | None = None,
    progress: Callable[[str], Bar] | None = None,
    on_partial: Callable[[BenchResult], None] | None = None,
    on_repeat: Callable[[BenchResult], None] | None = None,
) -> BenchResult:
    """Run every strategy ``repeat`` times, interleaved; return medians. ``progress(label)``
    makes a bar for one run (a ``tqdm`` is one); it is told of every finished request.
    ``on_partial`` gets the figures so far after every run (a caller saves them, so a
    stopped bench keeps what it measured); ``on_repeat`` the figures after each full
    repeat but the last (a caller shows a first table long before the final one)."""
    if repeat < 1:
        raise ValueError(f"repeat ({repeat}) must be >= 1")
    if not strategies:
        raise ValueError("no strategies to run")
    names = [s.name for s in strategies]
    if len(set(names)) != len(names):
        raise ValueError(f"strategy names must be unique, got {names}")
    if warmup:
        _warmup(engine, requests, strategies[0].schedule)
        for own in {id(s.engine): s.engine for s in strategies if s.engine is not None}.values():
            assert own is not None
            own.warmup(requests)
    predictors: dict[str, LengthPredictor] = {}
    runs: dict[str, list[RunReport]] = {name: [] for name in names}
    for rep in range(repeat):
        for s in strategies:
            if s.name not in predictors:
                done = {name: reports[0] for name, reports in runs.items() if reports}
                source = s.predictor
                predictors[s.name] = source if isinstance(source, LengthPredictor) else source(done)
            bar = progress(f"{s.name} ({rep + 1}/{repeat})") if progress is not None else None
            update = bar.update if bar is not None else None
            try:
                runs_on = s.engine if s.engine is not None else engine
                report = Pipeline(runs_on, predictors[s.name], s.schedule, update).run(fresh_copies(requests))
            finally:
                if bar is not None:
                    bar.close()
            runs[s.name].append(report)
            if on_run is not None:
                on_run(s.name, rep, compute_metrics(report))
            if on_partial is not None:
                ran = [x for x in strategies if runs[x.name]]
                on_partial(BenchResult([_median(x, runs[x.name], predictors[x.name]) for x in ran], repeat=rep + 1))
        if on_repeat is not None and rep + 1 < repeat:
            on_repeat(BenchResult([_median(s, runs[s.name], predictors[s.name]) for s in strategies], repeat=rep + 1))
    return BenchResult([_median(s, runs[s.name], predictors[s.name]) for s in strategies], repeat=repeat)


def _warmup(engine: Engine | StreamEngine, requests: Sequence[Request], schedule: ScheduleConfig) -> None:
    """The engine's own hook, then one short untimed batch through the whole pipeline."""
    sample = [
        dataclasses.replace(r, max_new_tokens=min(r.max_new_tokens, PIPELINE_WARMUP_TOKENS))
        for r in requests[: schedule.batch_size]
    ]
    engine.warmup(sample)
    Pipeline(engine, ConstantPredictor(), dataclasses.replace(schedule, vbs="off", fcr=False)).run(fresh_copies(sample))


def _median(strategy: Strategy, reports: list[RunReport], predictor: LengthPredictor) -> StrategyResult:
    walls = [r.wall_seconds for r in reports]
    middle = sorted(range(len(reports)), key=lambda i: walls[i])[(len(reports) - 1) // 2]
    runs = [compute_metrics(r) for r in reports]
    return StrategyResult(strategy, runs[middle], reports[middle], walls, predictor, runs)


def differing_outputs(bench: BenchResult) -> list[str]:
    """Ids of greedy requests whose tokens differ between strategies. Scheduling must not
    change what a request generates: this should always be empty."""
    by_strategy = [{r.request.request_id: r for r in res.report.results} for res in bench.results]
    first, *others = by_strategy
    return [
        request_id
        for request_id, result in first.items()
        if result.request.sampling.greedy and any(o[request_id].token_ids != result.token_ids for o in others)
    ]
