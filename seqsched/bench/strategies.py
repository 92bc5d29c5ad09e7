"""Strategy names for `bench` and `simulate`: a predictor plus scheduler switches.

Static batching (HF ``generate``, replay, the simulator):

    name     := base ("+" switch)*
    base     := vanilla | oracle | seqsch | pia
    switch   := vbs (the paper's VBS table) | budget (token-budget VBS) | fcr
              | resume (FCR that keeps a failure's tokens and continues after them)
              | sort (sort by predicted length only: no VBS, no FCR)

A bare ``oracle``, ``seqsch`` or ``pia`` means the paper's full pipeline, ``+vbs+fcr``;
``oracle+sort`` and ``seqsch+sort`` are the paper's plain ``gt`` and ``seqsch`` (sorted
fixed batches, each run to its longest row's limit);
with switches, exactly those apply (``oracle+fcr`` is fixed batches with FCR, and
``seqsch+vbs+resume`` the paper's pipeline with resuming FCR). ``vanilla`` predicts
every request at its limit and takes no switches.

Continuous batching (a stream plan, ``schedule/stream.py``):

    name     := engine ("+" policy)? ("+kv")? ("+oracle")?
    engine   := continuous (transformers' continuous batching on the serving model)
              | vllm (vLLM's offline engine)
    policy   := sjf | ljf   (none: fcfs, the plain engine)

``+kv`` adds KV-cache admission; ``+oracle`` plans with true lengths (the trace's, or
those of an earlier run of the same bench) instead of the predictor's. ``vllm`` alone is
plain vLLM, ``vllm+sjf`` shortest predicted first.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seqsched.bench.runner import STREAM_BASES, Strategy
from seqsched.engine.stream import StreamEngine
from seqsched.pipeline import RunReport
from seqsched.predict.base import LengthPredictor
from seqsched.predict.constant import ConstantPredictor
from seqsched.predict.margin import with_margin
from seqsched.predict.oracle import OraclePredictor
from seqsched.request import RequestStatus
from seqsched.schedule import ScheduleConfig
from seqsched.schedule.config import FCRMode, Policy, VBSMode

BASES = ("vanilla", "oracle", "seqsch", "pia")
SWITCHES = ("vbs", "budget", "fcr", "resume", "sort")
PAPER_SWITCHES = ("vbs", "fcr")
STREAM_ENGINES = STREAM_BASES
STREAM_SWITCHES = ("sjf", "ljf", "kv", "oracle")


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


def check_name(name: str) -> None:
    """Raise ValueError naming what is wrong with a strategy name (no engine needed)."""
    base, *switches = name.split("+")
    if base in STREAM_ENGINES:
        _stream_switches(name, switches)
        return
    if base not in BASES:
        choices = ", ".join(BASES + STREAM_ENGINES)
        raise ValueError(f"strategy {name!r}: unknown base {base!r}; choose from {choices}")
    unknown = [s for s in switches if s not in SWITCHES]
    if unknown:
        raise ValueError(f"strategy {name!r}: unknown switch {unknown[0]!r}; choose from {', '.join(SWITCHES)}")
    if base == "vanilla" and switches:
        raise ValueError(f"strategy {name!r}: {base} takes no switches")
    if "vbs" in switches and "budget" in switches:
        raise ValueError(f"strategy {name!r}: choose one of vbs and budget")
    if "fcr" in switches and "resume" in switches:
        raise ValueError(f"strategy {name!r}: choose one of fcr (restart) and resume")
    if "sort" in switches and len(switches) > 1:
        raise ValueError(f"strategy {name!r}: sort means sorted fixed batches alone; it takes no other switch")


def make_strategy(name: str, ctx: StrategyContext) -> Strategy:
    check_name(name)
    base, *switches = name.split("+")
    if base in STREAM_ENGINES:
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


def _stream_switches(name: str, switches: list[str]) -> None:
    unknown = [s for s in switches if s not in STREAM_SWITCHES]
    if unknown:
        choices = ", ".join(STREAM_SWITCHES)
        raise ValueError(f"strategy {name!r}: unknown switch {unknown[0]!r}; choose from {choices}")
    if "sjf" in switches and "ljf" in switches:
        raise ValueError(f"strategy {name!r}: choose one of sjf and ljf")
    if len(set(switches)) != len(switches):
        raise ValueError(f"strategy {name!r}: a switch is given twice")
    if switches == ["oracle"]:
        raise ValueError(f"strategy {name!r}: +oracle needs a policy or +kv to use the lengths for")


def _stream(name: str, base: str, switches: list[str], ctx: StrategyContext) -> Strategy:
    engine = ctx.stream_engines.get(base)
    if engine is None:
        engine = _continuous_engine(name, ctx) if base == "continuous" else None
    if engine is None:
        raise ValueError(f"strategy {name!r} needs the {base} engine: run the bench with --engine {base}")
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
    from seqsched.engine.continuous import HFContinuousEngine

    return HFContinuousEngine(ctx.engine, max_requests=ctx.schedule.max_batch_size)


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
    from seqsched.predict.registry import load_predictor

    predictor = load_predictor(ctx.predictor_path, model=model, tokenizer=tokenizer)
    return with_margin(predictor, ctx.margin_scale, ctx.margin_add)


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
