"""The library entry point: answer a request file with a scheduling strategy.

``seqsched.run("requests.jsonl", "results.jsonl", model="...", strategy="seqsch",
predictor="my-predictor", fcr=True)`` reads the requests, predicts their lengths, runs
them through the scheduler and the HF engine, and writes one OpenAI Batch output line
per input line, in input order. Nothing here imports torch until a model is loaded.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from seqsched.bench.metrics import Metrics, compute_metrics
from seqsched.data.batch_io import (
    error_line,
    is_answered,
    read_answered,
    read_requests,
    result_line,
    write_jsonl,
)
from seqsched.data.traces import read_length_map
from seqsched.distributed import RayConfig
from seqsched.engine.config import VLLMConfig
from seqsched.pipeline import Pipeline, RunReport
from seqsched.predict.base import LengthPredictor
from seqsched.predict.constant import ConstantPredictor
from seqsched.predict.margin import with_margin
from seqsched.predict.oracle import OraclePredictor
from seqsched.predict.registry import load_predictor
from seqsched.request import Request, Result
from seqsched.schedule import ScheduleConfig

if TYPE_CHECKING:
    from seqsched.data.batch_io import InputError
    from seqsched.engine.base import Engine
    from seqsched.engine.config import EngineConfig
    from seqsched.engine.stream import StreamEngine

Strategy = Literal["vanilla", "oracle", "seqsch"]
STRATEGIES: tuple[Strategy, ...] = ("vanilla", "oracle", "seqsch")
EngineKind = Literal["hf", "continuous", "vllm"]
ENGINE_KINDS: tuple[EngineKind, ...] = ("hf", "continuous", "vllm")
DEFAULT_MODEL = Path(__file__).parent / "assets" / "default_model"
DEFAULT_PREDICTOR = Path(__file__).parent / "assets" / "default_predictor"  # trained on DEFAULT_MODEL
# A text proxy trained on the same lengths: the default for continuous engines, where the
# probe would need a second copy of the serving model, and where its cost is paid by every
# request's completion time (0.26 ms a prompt against the probe's 3.7 ms, and a better
# ranking on the default workload: Kendall tau 0.62 against 0.54).
DEFAULT_PROXY = Path(__file__).parent / "assets" / "default_proxy"
_log = logging.getLogger(__name__)


class Progress(Protocol):
    """What a progress bar offers (a ``tqdm`` is one): a total and an ``update``."""

    total: Any

    def update(self, n: int = 1) -> Any: ...

    def refresh(self) -> Any: ...


@dataclass(frozen=True)
class RunConfig:
    """One ``seqsched run``. ``strategy=None`` is inferred: ``seqsch`` with a predictor,
    ``oracle`` with oracle lengths, else ``vanilla``. ``engine_kind`` picks static batching
    (``hf``), transformers' continuous batching or vLLM; the continuous ones follow
    ``schedule.policy`` / ``admission`` (a ``vanilla`` job on them is plain fcfs)."""

    input_path: Path
    output_path: Path
    engine: EngineConfig
    strategy: Strategy | None = None
    predictor: Path | None = None  # a saved predictor directory
    oracle_lengths: Path | None = None  # a trace, {id, length} JSONL, or a previous output
    max_new_tokens: int = 512  # for lines that give no max_tokens
    resume: bool = False
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    margin_scale: float = 1.0  # safety margin on a learned predictor: ceil(scale * p + add)
    margin_add: float = 0.0
    ray: RayConfig | None = None  # None: run in this process; else replicas on Ray
    engine_kind: EngineKind = "hf"
    vllm: VLLMConfig = field(default_factory=VLLMConfig)  # sizes for the continuous engines

    def __post_init__(self) -> None:
        if self.engine_kind not in ENGINE_KINDS:
            raise ValueError(f"engine_kind ({self.engine_kind!r}) must be one of {', '.join(ENGINE_KINDS)}")
        if self.strategy is None:
            inferred = "seqsch" if self.predictor else "oracle" if self.oracle_lengths else "vanilla"
            object.__setattr__(self, "strategy", inferred)
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy ({self.strategy!r}) must be one of {', '.join(STRATEGIES)}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens ({self.max_new_tokens}) must be >= 1")
        if self.strategy == "seqsch" and (self.predictor is None or self.oracle_lengths is not None):
            raise ValueError("strategy 'seqsch' needs a predictor directory, and no oracle lengths")
        if self.strategy == "oracle" and (self.predictor is None) == (self.oracle_lengths is None):
            raise ValueError("strategy 'oracle' needs oracle lengths (or an oracle predictor directory)")
        if self.strategy == "vanilla" and (self.predictor or self.oracle_lengths):
            raise ValueError("strategy 'vanilla' takes no predictor and no oracle lengths")
        if Path(self.input_path).resolve() == Path(self.output_path).resolve():
            raise ValueError(f"output ({self.output_path}) would overwrite the input")


@dataclass(frozen=True)
class RunSummary:
    metrics: Metrics  # over the requests run this time
    num_lines: int  # lines written
    num_answered: int  # new answers
    num_resumed: int  # answers kept from a previous output
    num_input_errors: int
    output_path: Path


def run(
    input_path: str | Path,
    output_path: str | Path,
    *,
    model: str | Path | None = None,
    strategy: Strategy | None = None,
    predictor: str | Path | None = None,
    oracle_lengths: str | Path | None = None,
    max_new_tokens: int = 512,
    resume: bool = False,
    progress: Progress | None = None,
    ray: RayConfig | None = None,
    **options: Any,
) -> RunSummary:
    """Answer ``input_path`` into ``output_path``. Other keyword options are fields of
    :class:`ScheduleConfig` (``batch_size``, ``fcr``, ...) or of ``EngineConfig``
    (``device``, ``dtype``, ...). ``ray=RayConfig(num_workers=4)`` runs on Ray replicas."""
    from seqsched.engine.config import EngineConfig

    schedule_keys = {f.name for f in dataclasses.fields(ScheduleConfig)}
    engine_keys = {f.name for f in dataclasses.fields(EngineConfig)} - {"model"}
    unknown = set(options) - schedule_keys - engine_keys
    if unknown:
        raise TypeError(f"unknown option(s): {', '.join(sorted(unknown))}")
    config = RunConfig(
        input_path=Path(input_path),
        output_path=Path(output_path),
        engine=EngineConfig(model=str(resolve_model(model)), **{k: v for k, v in options.items() if k in engine_keys}),
        strategy=strategy,
        predictor=Path(predictor) if predictor is not None else None,
        oracle_lengths=Path(oracle_lengths) if oracle_lengths is not None else None,
        max_new_tokens=max_new_tokens,
        resume=resume,
        ray=ray,
        schedule=ScheduleConfig(**{k: v for k, v in options.items() if k in schedule_keys}),
    )
    return execute(config, progress)


def resolve_model(model: str | Path | None) -> str | Path:
    """The given model, or the built-in default one."""
    if model is not None:
        return model
    if not DEFAULT_MODEL.is_dir():
        raise FileNotFoundError(f"no model given, and no built-in default model at {DEFAULT_MODEL}")
    return DEFAULT_MODEL


def execute(config: RunConfig, progress: Progress | None = None) -> RunSummary:
    """Run a resolved config. Bad input lines become error lines; requests answered in
    a previous output are kept under ``resume``; if the run crashes, what finished is
    written before the error propagates, so ``resume`` can pick up from there."""
    requests, errors = read_requests(config.input_path, config.max_new_tokens)
    journal = journal_path(config.output_path)
    answered: dict[str, dict[str, Any]] = {}
    if config.resume:
        for path in (config.output_path, journal):
            if path.exists():
                answered.update(read_answered(path))
    todo = [r for r in requests if r.request_id not in answered]
    _check_oracle(config, todo)  # before the model loads: fail fast
    model_name = _model_name(config.engine.model)
    report = RunReport(results=[])
    finished: list[Result] = []
    if todo:
        run_requests = _local_runner(config, todo) if config.ray is None else _ray_runner(config)
        if progress is not None:
            progress.total = len(todo)
            progress.refresh()
        # Without --resume a journal left by an earlier job is stale: start it afresh.
        with journal.open("a" if config.resume else "w", encoding="utf-8") as log:

            def save(result: Result) -> None:
                # Each final answer is on disk the moment it exists: a killed job loses nothing.
                finished.append(result)
                line = result_line(result, model_name)
                if is_answered(line):
                    log.write(json.dumps(line, ensure_ascii=False) + "\n")
                    log.flush()

            try:
                report = run_requests(todo, progress.update if progress else None, save)
            except BaseException:
                write_jsonl(config.output_path, _lines(requests, errors, answered, finished, model_name))
                raise
    lines = _lines(requests, errors, answered, report.results, model_name)
    write_jsonl(config.output_path, lines)
    journal.unlink(missing_ok=True)
    metrics = compute_metrics(report)
    return RunSummary(
        metrics=metrics,
        num_lines=len(lines),
        num_answered=metrics.num_requests,
        num_resumed=len(requests) - len(todo),
        num_input_errors=len(errors),
        output_path=config.output_path,
    )


RunRequests = Callable[[list[Request], Callable[[int], None] | None, Callable[[Result], None]], RunReport]


def _local_runner(config: RunConfig, todo: list[Request]) -> RunRequests:
    """The pipeline in this process. The model loads now, before any output is touched."""
    engine = build_engine(config.engine, config.engine_kind, config.vllm)
    predictor = build_predictor(config, engine)
    engine.warmup(todo)  # so the first micro-batch's timing is not the kernels' start-up

    def run_requests(
        requests: list[Request], progress: Callable[[int], None] | None, on_result: Callable[[Result], None]
    ) -> RunReport:
        return Pipeline(engine, predictor, config.schedule, progress, on_result=on_result).run(requests)

    return run_requests


def _ray_runner(config: RunConfig) -> RunRequests:
    """Replicas on Ray (``seqsched.distributed``); each worker loads its own model."""
    from seqsched.distributed import run_on_ray

    assert config.ray is not None
    return functools.partial(run_on_ray, config, config.ray)


def journal_path(output_path: Path) -> Path:
    """Where answers are appended as they finish, until the ordered output is written."""
    return output_path.with_name(output_path.name + ".partial")


def _check_oracle(config: RunConfig, todo: list[Request]) -> None:
    if config.oracle_lengths is None:
        return
    lengths = read_length_map(config.oracle_lengths)
    missing = [r.request_id for r in todo if r.request_id not in lengths]
    if missing:
        shown = ", ".join(repr(m) for m in missing[:5])
        raise ValueError(f"{config.oracle_lengths}: no length for {len(missing)} request(s): {shown}")


def build_predictor(config: RunConfig, engine: Engine | StreamEngine) -> LengthPredictor:
    """The job's predictor: constant (vanilla), oracle lengths, or a saved one with a margin."""
    if config.strategy == "vanilla":
        return ConstantPredictor()
    if config.oracle_lengths is not None:
        return OraclePredictor(read_length_map(config.oracle_lengths))
    assert config.predictor is not None
    # LLM-based predictors share the serving model instead of loading a second copy.
    predictor = load_predictor(
        config.predictor, model=getattr(engine, "model", None), tokenizer=getattr(engine, "tokenizer", None)
    )
    return with_margin(predictor, config.margin_scale, config.margin_add)


def build_engine(
    config: EngineConfig, kind: EngineKind = "hf", vllm: VLLMConfig | None = None
) -> Engine | StreamEngine:
    """Load the serving model into the engine of that kind; a bad model path raises
    FileNotFoundError."""
    vllm = vllm or VLLMConfig()
    try:
        if kind == "vllm":
            from seqsched.engine.vllm_engine import VLLMEngine

            return VLLMEngine(config, vllm)
        from seqsched.engine.hf import HFEngine  # imports torch

        engine = HFEngine(config)
        if kind == "continuous":
            from seqsched.engine.continuous import HFContinuousEngine

            return HFContinuousEngine(engine, max_requests=vllm.max_num_seqs, num_blocks=vllm.num_gpu_blocks)
        return engine
    except OSError as e:  # the loaders' errors name the model and what is wrong
        raise FileNotFoundError(str(e)) from e


def _model_name(model: str | Path) -> str:
    path = Path(model).expanduser()
    return path.name if path.exists() else str(model)


def _lines(
    requests: list[Request],
    errors: list[InputError],
    answered: dict[str, dict[str, Any]],
    results: list[Result],
    model_name: str,
) -> list[dict[str, Any]]:
    """Output lines in input order; requests that have not finished get no line."""
    done = {res.request.index: res for res in results if res.status.is_finished}
    placed = [(e.line, error_line(e.custom_id, e.message)) for e in errors]
    for r in requests:
        if r.request_id in answered:
            placed.append((r.index + 1, answered[r.request_id]))
        elif r.index in done:
            placed.append((r.index + 1, result_line(done[r.index], model_name)))
    ids = {r.request_id for r in requests}
    orphans = [line for custom_id, line in answered.items() if custom_id not in ids]
    if orphans:
        _log.warning("keeping %d answer(s) whose custom_id is not in the input, at the end", len(orphans))
    return [line for _, line in sorted(placed, key=lambda p: p[0])] + orphans
