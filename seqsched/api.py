"""The library entry point: answer a request file with a scheduling strategy.

``seqsched.run("requests.jsonl", "results.jsonl", model="...", strategy="seqsch",
predictor="my-predictor", fcr=True)`` reads the requests, predicts their lengths, runs
them through the scheduler and an engine, and writes the answers in input order (the
job itself, with its journal, resume and error file, is ``seqsched/job.py``). Nothing
here imports torch until a model is loaded.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from seqsched.data.batch_input import DEFAULT_MAX_LINE_BYTES
from seqsched.data.traces import read_length_map
from seqsched.distributed import RayConfig
from seqsched.engine.config import VLLMConfig
from seqsched.job import RunSummary, execute
from seqsched.predict.base import LengthPredictor
from seqsched.predict.constant import ConstantPredictor
from seqsched.predict.margin import with_margin
from seqsched.predict.oracle import OraclePredictor
from seqsched.predict.registry import load_predictor
from seqsched.schedule import ScheduleConfig

if TYPE_CHECKING:
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
    errors_path: Path | None = None  # failed lines; default: OUTPUT.errors.jsonl
    overwrite: bool = False  # replace an existing output and journal
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES

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
        if self.resume and self.overwrite:
            raise ValueError("choose one of resume (continue the job) and overwrite (start afresh)")
        if self.max_line_bytes < 1:
            raise ValueError(f"max_line_bytes ({self.max_line_bytes}) must be >= 1")


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
    overwrite: bool = False,
    progress: Progress | None = None,
    ray: RayConfig | None = None,
    engine: EngineKind = "hf",
    vllm: VLLMConfig | None = None,
    **options: Any,
) -> RunSummary:
    """Answer ``input_path`` into ``output_path``. Other keyword options are fields of
    :class:`ScheduleConfig` (``batch_size``, ``fcr``, ``policy``, ``admission``, ...) or of
    ``EngineConfig`` (``device``, ``dtype``, ...). ``engine="vllm"`` (or ``"continuous"``)
    runs on a continuous-batching engine sized by ``vllm=VLLMConfig(...)``;
    ``ray=RayConfig(num_workers=4)`` runs on Ray replicas."""
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
        overwrite=overwrite,
        ray=ray,
        engine_kind=engine,
        vllm=vllm or VLLMConfig(),
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
