"""The bench driver: strategies built from options, run side by side, then a table, JSON
and a plot. `seqsched bench` and `seqsched simulate` both end here; they differ only in
the engine and the requests they hand over.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from seqsched.bench.names import StrategyName
from seqsched.bench.runner import BenchResult, Strategy
from seqsched.engine.base import Engine
from seqsched.engine.stream import StreamEngine
from seqsched.metrics import Metrics
from seqsched.request import Request
from seqsched.schedule import ScheduleConfig
from seqsched.threads import ThreadChoice


@dataclass(frozen=True)
class BenchOptions:
    """What a bench runs and where its figures go.

    - ``strategies``: run in this order, ``repeat`` times, interleaved.
    - ``schedule``: the schedule every strategy starts from (its switches change it).
    - ``predictor``, ``margin_scale``, ``margin_add``: the learned predictor of ``seqsch``.
    - ``output``: JSON of the figures, written after every run (``-``: stdout at the end).
    - ``simulated``: the cost model's name when the seconds are modelled, not measured.
    - ``compare_cost_model``: also simulate the same plans with this cost model.
    """

    command: str
    strategies: tuple[StrategyName, ...]
    schedule: ScheduleConfig
    max_new_tokens: int
    predictor: Path | None = None
    margin_scale: float = 1.0
    margin_add: float = 0.0
    repeat: int = 1
    output: Path | None = None
    plot: Path | None = None
    simulated: str | None = None
    compare_cost_model: str | None = None
    threads: ThreadChoice | None = None

    def __post_init__(self) -> None:
        if not self.strategies:
            raise ValueError("no strategies to run")
        if self.repeat < 1:
            raise ValueError(f"repeat ({self.repeat}) must be >= 1")

    @property
    def to_file(self) -> bool:
        return self.output is not None and str(self.output) != "-"


def run_bench(
    options: BenchOptions,
    engine: Engine | StreamEngine,
    requests: list[Request],
    oracle_lengths: Mapping[str, int] | None,
    config: dict[str, Any],
    title: str = "",
    stream_engines: Mapping[str, StreamEngine] | None = None,
) -> int:
    """Build the strategies, run them, print the table (a first one after the first
    repeat), and save the JSON and the plot."""
    from seqsched.bench.report import environment, format_table, to_json, write_json
    from seqsched.bench.runner import differing_outputs, run_strategies
    from seqsched.bench.strategies import StrategyContext, make_strategy

    ctx = StrategyContext(
        schedule=options.schedule,
        engine=engine,
        oracle_lengths=oracle_lengths,
        predictor_path=options.predictor,
        margin_scale=options.margin_scale,
        margin_add=options.margin_add,
        stream_engines=stream_engines or {},
    )
    strategies = [make_strategy(name, ctx) for name in options.strategies]
    live = getattr(engine, "name", "") in ("hf", "vllm")  # the simulator needs no bar
    _warn_small(options, len(requests))
    config = {
        **config,
        "strategies": [str(n) for n in options.strategies],
        "predictor": options.predictor,
        "repeat": options.repeat,
        "schedule": dataclasses.asdict(options.schedule),
        "max_new_tokens": options.max_new_tokens,
    }
    if options.threads is not None:
        config["threads"] = options.threads.to_dict()
    # With -o -, stdout carries the JSON alone and the table goes to stderr.
    human = sys.stderr if options.output is not None and not options.to_file else sys.stdout

    def save(partial: BenchResult) -> None:  # after every run: a stopped bench keeps what it measured
        assert options.output is not None
        write_json(partial, options.output, {**config, "complete": False}, environment(engine))

    def first_table(partial: BenchResult) -> None:
        if partial.repeat == 1:
            print(f"\nafter repeat 1 of {options.repeat} (the final table, with min-max, follows):", file=human)
            print(format_table(partial, simulated=options.simulated) + "\n", file=human, flush=True)

    bench = run_strategies(
        engine,
        requests,
        strategies,
        repeat=options.repeat,
        on_run=lambda name, rep, m: _show_run(name, rep, options.repeat, m),
        progress=(lambda label: _bar(label, len(requests))) if live else None,
        on_partial=save if options.to_file else None,
        on_repeat=first_table,
    )
    print(format_table(bench, simulated=options.simulated), file=human)
    differing = differing_outputs(bench)
    if len(strategies) > 1 and live:
        verdict = "yes" if not differing else f"NO, {len(differing)} differ (e.g. {differing[0]!r})"
        print(f"greedy outputs identical across strategies: {verdict}", file=human)
    if options.compare_cost_model is not None:
        _compare(options.compare_cost_model, bench, engine, requests, strategies, human)
    config |= {"greedy_outputs_differing": differing, "complete": True}
    if options.output is not None:
        if options.to_file:
            write_json(bench, options.output, config, environment(engine))
            print(f"wrote {options.output}", file=human)
        else:
            sys.stdout.write(json.dumps(to_json(bench, config, environment(engine)), indent=2, default=str) + "\n")
    if options.plot is not None:
        from seqsched.bench.plots import plot_bench

        plot_bench(bench, options.plot, title=title, subtitle=_subtitle(options, config))
        print(f"wrote {options.plot}", file=human)
    return 0


def _show_run(name: str, rep: int, repeat: int, m: Metrics) -> None:
    print(
        f"  {name} (repeat {rep + 1}/{repeat}): {m.requests_per_second:.3f} req/s, "
        f"eff {m.effective_token_ratio:.1%}, {m.wall_seconds:.2f} s",
        file=sys.stderr,
    )


def _bar(label: str, total: int) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=label, unit="req", file=sys.stderr, mininterval=2.0)


def _compare(
    cost_model_name: str,
    bench: BenchResult,
    engine: Engine | StreamEngine,
    requests: Sequence[Request],
    strategies: Sequence[Strategy],
    human: IO[str],
) -> None:
    from seqsched.bench.compare import compare_with_simulation, format_comparison
    from seqsched.simulate.cost_model import load_cost_model

    if not isinstance(engine, Engine):
        raise ValueError("--compare-cost-model simulates static plans: it needs a static engine (--engine hf)")
    comparison = compare_with_simulation(bench, engine, requests, strategies, load_cost_model(cost_model_name))
    print(f"\nsimulated with {cost_model_name}, the same requests and plans:", file=human)
    print(format_comparison(comparison), file=human)


def _warn_small(options: BenchOptions, num_requests: int) -> None:
    """Say when there are too few requests for the static plans to differ."""
    static = [n for n in options.strategies if not n.stream]
    group_size = options.schedule.group_size
    if len(static) > 1 and num_requests < group_size:
        print(
            f"seqsched {options.command}: note: {num_requests} requests, fewer than one scheduling group "
            f"(--group-size {group_size}): bins stay under-filled, VBS has little to merge, and static "
            "strategies may run the same plan",
            file=sys.stderr,
        )


def _subtitle(options: BenchOptions, config: dict[str, Any]) -> str:
    """The configuration a plot was made with, in one line."""
    engine = config.get("engine") or {}
    model = Path(str(engine.get("model", ""))).name or "model"
    parts = [
        f"simulated, cost model {options.simulated}" if options.simulated else f"model {model}",
        f"{config['num_requests']} requests",
        f"limit {options.max_new_tokens}",
        f"batch {options.schedule.batch_size}",
        f"group {options.schedule.group_size}",
    ]
    if options.threads is not None:
        threads = options.threads.threads
        parts.append(f"{threads} thread{'s' if threads != 1 else ''}")
    parts.append(f"{options.repeat} repeat{'s' if options.repeat != 1 else ''}")
    return ", ".join(parts)
