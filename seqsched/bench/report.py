"""The paper's throughput table, and the JSON a bench leaves next to its results."""

from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import json
import os
import platform
from pathlib import Path
from typing import Any

from seqsched.bench.runner import BenchResult
from seqsched.threads import load_average

_COLUMNS = (
    ("strategy", "{}"),
    ("req/s", "{:.3f}"),
    ("min-max", "{}"),
    ("tok/s", "{:.1f}"),
    ("avg len", "{:.1f}"),
    ("eff %", "{:.1f}"),
    ("fail %", "{:.1f}"),
    ("lost %", "{:.1f}"),
    ("pred s", "{:.2f}"),
    ("wall s", "{:.2f}"),
    ("mean s", "{:.2f}"),
    ("p90 s", "{:.2f}"),
    ("preempt", "{}"),
    ("x base", "{}"),
    ("lat x", "{}"),
)


def table_rows(bench: BenchResult) -> list[list[str]]:
    rows = []
    for res in bench.results:
        name = res.strategy.name
        m, ratio, latency = res.metrics, bench.ratio(name), bench.latency_ratio(name)
        preemptions = res.report.num_preemptions
        low, high = res.spread("requests_per_second")
        noise = "~" if bench.significant(name) is False else ""
        latency_noise = "~" if bench.significant(name, "latency_mean") is False else ""
        values = (
            name,
            m.requests_per_second,
            f"{low:.2f}-{high:.2f}" if len(res.runs) > 1 else "-",
            m.output_tokens_per_second,
            m.average_length,
            100 * m.effective_token_ratio,
            100 * m.failure_ratio,
            100 * m.discarded_ratio,
            m.predictor_seconds,
            m.wall_seconds,
            m.latency_mean,
            m.latency_p90,
            "-" if preemptions is None else str(preemptions),
            "-" if ratio is None else f"{noise}{ratio:.2f}",
            "-" if latency is None else f"{latency_noise}{latency:.2f}",
        )
        rows.append([fmt.format(v) for (_, fmt), v in zip(_COLUMNS, values, strict=True)])
    return rows


def format_table(bench: BenchResult, simulated: str | None = None) -> str:
    """One aligned plain-text table: a row per strategy, in run order. ``simulated`` names
    the cost model when the seconds are modelled, not measured."""
    header = [name for name, _ in _COLUMNS]
    if simulated is not None:
        header = ["sim s" if h == "wall s" else h for h in header]
    rows = table_rows(bench)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    rule = "  ".join("-" * w for w in widths)
    notes = [
        "mean s / p90 s: completion time of a request from the start of the run; x base: throughput, and lat x: "
        f"mean completion time, over the baseline's ({bench.baseline} for static strategies and plain engines, "
        "the plain engine for its policies)"
    ]
    if bench.repeat > 1:
        notes.append(
            f"median of {bench.repeat} interleaved repeats; min-max: req/s over the repeats; ~: the repeats overlap "
            "the baseline's, so the ratio is not significant"
        )
    if simulated is not None:
        notes.append(
            f"SIMULATED: seconds are modelled by the cost model {simulated}, not measured; pred s is the "
            "predictor's real time on this machine and is not in sim s"
        )
    for names in bench.identical_plans():
        notes.append(f"{', '.join(names)}: the same plan, so their differences are noise")
    return "\n".join([line(header), rule, *(line(r) for r in rows), *notes])


def environment(engine: object | None = None) -> dict[str, Any]:
    """Where the numbers came from. Reads package versions without importing torch."""
    env: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_average_at_end": load_average(),
    }
    for package in ("seqsched", "torch", "transformers", "numpy"):
        try:
            env[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            env[package] = None
    if engine is not None:
        env["engine"] = getattr(engine, "name", type(engine).__name__)
        config = getattr(engine, "config", None)
        model = getattr(engine, "model", None)
        resolved = {  # what the engine really runs on, over what its config asked for ("auto")
            "device": getattr(engine, "device", None),
            "dtype": getattr(model, "dtype", None),
            "model": getattr(config, "model", None),
        }
        for key, value in resolved.items():
            value = value if value is not None else getattr(config, key, None)
            env[key] = None if value is None else str(value).removeprefix("torch.")
        cost_model = getattr(engine, "cost_model", None)
        if cost_model is not None:
            env["cost_model"] = cost_model.to_dict()
    return env


def to_json(bench: BenchResult, config: dict[str, Any], env: dict[str, Any]) -> dict[str, Any]:
    """Figures, the resolved configuration (the bench's and each strategy's), and the
    environment, so a result can be read, compared and re-run on its own."""
    return {
        "config": config,
        "environment": env,
        "baseline": bench.baseline,
        "repeat": bench.repeat,
        "strategies": [
            {
                "name": res.strategy.name,
                "description": res.strategy.description,
                "schedule": dataclasses.asdict(res.strategy.schedule),
                "metrics": res.metrics.to_dict(),
                "baseline": bench.baseline_of(res.strategy.name),
                "throughput_ratio": bench.ratio(res.strategy.name),
                "latency_ratio": bench.latency_ratio(res.strategy.name),
                "num_preemptions": res.report.num_preemptions,
                "wall_seconds_per_repeat": res.wall_seconds,
                "num_batches": len(res.report.batches),
                "num_retry_batches": sum(b.is_retry for b in res.report.batches),
            }
            for res in bench.results
        ],
    }


def write_json(bench: BenchResult, path: str | Path, config: dict[str, Any], env: dict[str, Any]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(to_json(bench, config, env), indent=2, default=str) + "\n")
