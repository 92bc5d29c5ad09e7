"""Strategy names for `bench` and `simulate`: a predictor plus scheduler switches.

    name     := base ("+" switch)*
    base     := vanilla | oracle | seqsch | pia | continuous
    switch   := vbs (the paper's VBS table) | budget (token-budget VBS) | fcr
              | resume (FCR that keeps a failure's tokens and continues after them)

A bare ``oracle``, ``seqsch`` or ``pia`` means the paper's full pipeline, ``+vbs+fcr``;
with switches, exactly those apply (``oracle+fcr`` is fixed batches with FCR, and
``seqsch+vbs+resume`` the paper's pipeline with resuming FCR). ``vanilla`` predicts
every request at its limit and takes no switches. ``continuous`` is not static batching at
all: transformers' continuous batching on the serving model (``engine/continuous.py``), the
baseline of today's serving engines; it takes no switches either.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seqsched.bench.runner import Strategy
from seqsched.pipeline import RunReport
from seqsched.predict.base import LengthPredictor
from seqsched.predict.constant import ConstantPredictor
from seqsched.predict.margin import with_margin
from seqsched.predict.oracle import OraclePredictor
from seqsched.request import RequestStatus
from seqsched.schedule import ScheduleConfig
from seqsched.schedule.config import FCRMode, VBSMode

BASES = ("vanilla", "oracle", "seqsch", "pia", "continuous")
SWITCHES = ("vbs", "budget", "fcr", "resume")
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


def make_strategy(name: str, ctx: StrategyContext) -> Strategy:
    base, *switches = name.split("+")
    if base not in BASES:
        raise ValueError(f"strategy {name!r}: unknown base {base!r}; choose from {', '.join(BASES)}")
    unknown = [s for s in switches if s not in SWITCHES]
    if unknown:
        raise ValueError(f"strategy {name!r}: unknown switch {unknown[0]!r}; choose from {', '.join(SWITCHES)}")
    if base in ("vanilla", "continuous") and switches:
        raise ValueError(f"strategy {name!r}: {base} takes no switches")
    if base == "continuous":
        return _continuous(name, ctx)
    if base == "vanilla":
        return Strategy(name, ConstantPredictor(), dataclasses.replace(ctx.schedule, vbs="off", fcr=False), "limit")
    if "vbs" in switches and "budget" in switches:
        raise ValueError(f"strategy {name!r}: choose one of vbs and budget")
    if "fcr" in switches and "resume" in switches:
        raise ValueError(f"strategy {name!r}: choose one of fcr (restart) and resume")
    on = switches or list(PAPER_SWITCHES)
    vbs: VBSMode = "paper" if "vbs" in on else "budget" if "budget" in on else "off"
    fcr_mode: FCRMode = "resume" if "resume" in on else "restart"
    schedule = dataclasses.replace(ctx.schedule, vbs=vbs, fcr="fcr" in on or "resume" in on, fcr_mode=fcr_mode)
    detail = f"VBS {vbs}, FCR {fcr_mode if schedule.fcr else 'off'}"
    if base == "oracle":
        if ctx.oracle_lengths is not None:
            return Strategy(name, OraclePredictor(ctx.oracle_lengths), schedule, f"true lengths, {detail}")
        return Strategy(name, _oracle_from_vanilla, schedule, f"lengths of the vanilla run, {detail}")
    return Strategy(name, _learned(base, ctx), schedule, f"{_source(base, ctx)}, {detail}")


def _continuous(name: str, ctx: StrategyContext) -> Strategy:
    if getattr(ctx.engine, "model", None) is None:
        raise ValueError(f"strategy {name!r} runs continuous batching on a model: it needs one (not the simulator)")
    from seqsched.engine.continuous import ContinuousBatching

    runner = ContinuousBatching(ctx.engine, max_requests=ctx.schedule.max_batch_size)
    return Strategy(name, ConstantPredictor(), ctx.schedule, "transformers continuous batching", runner=runner)


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
