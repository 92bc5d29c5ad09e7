"""Strategies for `bench` and `simulate`: a parsed name (``bench/names.py``, where the
grammar is) made into a predictor plus a schedule.

A bare ``oracle``, ``seqsch`` or ``pia`` means the paper's full pipeline, ``+vbs+fcr``;
``oracle+sort`` and ``seqsch+sort`` are the paper's plain ``gt`` and ``seqsch`` (sorted
fixed batches, each run to its longest row's limit); with switches, exactly those apply
(``oracle+fcr`` is fixed batches with FCR, and ``seqsch+vbs+resume`` the paper's pipeline
with resuming FCR). ``vanilla`` predicts every request at its limit.

On a continuous engine, ``+kv`` adds KV-cache admission; ``+oracle`` plans with true
lengths (the trace's, or those of an earlier run of the same bench) instead of the
predictor's. ``vllm`` alone is plain vLLM, ``vllm+sjf`` shortest predicted first.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seqsched.bench.names import StrategyName, parse_strategy
from seqsched.bench.runner import Strategy
from seqsched.engine.stream import StreamEngine
from seqsched.pipeline import RunReport
from seqsched.predict.base import LengthPredictor
from seqsched.predict.constant import ConstantPredictor
from seqsched.predict.oracle import OraclePredictor
from seqsched.request import RequestStatus
from seqsched.schedule import ScheduleConfig
from seqsched.schedule.config import FCRMode, Policy, VBSMode

PAPER_SWITCHES = ("vbs", "fcr")


@dataclass(frozen=True)
class StrategyContext:
    """What strategies may need: the base schedule, the engine (LLM-based predictors share
    its model), known lengths, a saved predictor, and a safety margin for learned ones."""

    schedule: ScheduleConfig
    engine: Any = None
    oracle_lengths: Mapping[str, int] | None = None
    predictor_path: str | Path | None = None
    margin_scale: float = 1.0
    margin_add: float = 0.0
    stream_engines: Mapping[str, StreamEngine] = dataclasses.field(default_factory=dict)  # by base name


def make_strategy(name: str | StrategyName, ctx: StrategyContext) -> Strategy:
    parsed = name if isinstance(name, StrategyName) else parse_strategy(name)
    name, base, switches = str(parsed), parsed.base, list(parsed.switches)
    if parsed.stream:
        return _stream(name, base, switches, ctx)
    if base == "vanilla":
        return Strategy(name, ConstantPredictor(), dataclasses.replace(ctx.schedule, vbs="off", fcr=False), "limit")
    on = [] if switches == ["sort"] else switches or list(PAPER_SWITCHES)
    vbs: VBSMode = "paper" if "vbs" in on else "budget" if "budget" in on else "off"
    fcr_mode: FCRMode = "resume" if "resume" in on else "restart"
    schedule = dataclasses.replace(ctx.schedule, vbs=vbs, fcr="fcr" in on or "resume" in on, fcr_mode=fcr_mode)
    detail = f"VBS {vbs}, FCR {fcr_mode if schedule.fcr else 'off'}"
    if base == "oracle":
        if ctx.oracle_lengths is not None:
            return Strategy(name, OraclePredictor(ctx.oracle_lengths), schedule, f"true lengths, {detail}")
        return Strategy(name, _oracle_from_vanilla, schedule, f"lengths of the vanilla run, {detail}")
    return Strategy(name, _learned(base, ctx), schedule, f"{_source(base, ctx)}, {detail}")


def _stream(name: str, base: str, switches: list[str], ctx: StrategyContext) -> Strategy:
    engine = ctx.stream_engines.get(base)
    if engine is None:
        engine = _continuous_engine(name, ctx) if base == "continuous" else None
    if engine is None:
        raise ValueError(f"strategy {name!r} needs the {base} engine: run the bench with --engine {base}")
    if "kv" in switches and engine.kv_capacity is None:  # refused before any strategy runs
        raise ValueError(
            f"strategy {name!r} admits by KV cache, and the {base} engine's capacity is unknown: give "
            "--num-gpu-blocks (and --block-size)"
        )
    policy: Policy = "sjf" if "sjf" in switches else "ljf" if "ljf" in switches else "fcfs"
    schedule = dataclasses.replace(ctx.schedule, policy=policy, admission="kv" if "kv" in switches else "none")
    detail = f"{engine.name}, {policy}" + (", kv admission" if "kv" in switches else "")
    if not switches:
        return Strategy(name, ConstantPredictor(), schedule, f"{detail} (plain)", engine=engine)
    if "oracle" in switches:
        if ctx.oracle_lengths is not None:
            return Strategy(name, OraclePredictor(ctx.oracle_lengths), schedule, f"{detail}, true lengths", engine)
        source = _oracle_from_earlier_run(("vanilla", base))
        return Strategy(name, source, schedule, f"{detail}, lengths of an earlier run", engine=engine)
    return Strategy(name, _learned("seqsch", ctx), schedule, f"{detail}, {_source('seqsch', ctx)}", engine=engine)


def _continuous_engine(name: str, ctx: StrategyContext) -> StreamEngine:
    if getattr(ctx.engine, "model", None) is None:
        raise ValueError(f"strategy {name!r} runs continuous batching on a model: it needs one (not the simulator)")
    from seqsched.build import build_engine

    return build_engine(ctx.engine.config, "continuous", hf=ctx.engine)  # sized as VLLMConfig's defaults


def lengths_from_report(report: RunReport) -> dict[str, int]:
    """Each request's real output length in a run: the live oracle's ground truth."""
    return {
        res.request.request_id: max(1, res.num_output_tokens)
        for res in report.results
        if res.status != RequestStatus.FINISHED_ERROR
    }


def _learned(base: str, ctx: StrategyContext) -> LengthPredictor:
    model = getattr(ctx.engine, "model", None)
    tokenizer = getattr(ctx.engine, "tokenizer", None)
    if base == "pia":
        if model is None:
            raise ValueError("strategy 'pia' asks the serving model: it needs a model (not the simulator)")
        from seqsched.predict.pia import PiAPredictor

        return PiAPredictor(model, tokenizer)
    if ctx.predictor_path is None:
        raise ValueError("strategy 'seqsch' needs a saved predictor (--predictor PATH)")
    from seqsched.build import load_saved_predictor

    return load_saved_predictor(ctx.predictor_path, ctx.engine, ctx.margin_scale, ctx.margin_add)


def _source(base: str, ctx: StrategyContext) -> str:
    if base == "pia":
        return "PiA prompting"
    margin = "" if (ctx.margin_scale, ctx.margin_add) == (1.0, 0.0) else f" x{ctx.margin_scale:g}+{ctx.margin_add:g}"
    return f"{ctx.predictor_path}{margin}"


def _oracle_from_vanilla(done: Mapping[str, RunReport]) -> LengthPredictor:
    if "vanilla" not in done:
        raise ValueError(
            "the live oracle takes its lengths from the vanilla run: list vanilla before oracle, or give a length file"
        )
    return OraclePredictor(lengths_from_report(done["vanilla"]))


def _oracle_from_earlier_run(sources: tuple[str, ...]) -> Callable[[Mapping[str, RunReport]], LengthPredictor]:
    """True lengths from the first of ``sources`` that already ran (greedy runs agree)."""

    def make(done: Mapping[str, RunReport]) -> LengthPredictor:
        for source in sources:
            if source in done:
                return OraclePredictor(lengths_from_report(done[source]))
        raise ValueError(f"+oracle takes its lengths from an earlier run: list one of {', '.join(sources)} before it")

    return make
