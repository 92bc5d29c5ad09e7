"""A job's configuration: what to answer, with which engine, predictor and schedule.

Everything here is a typed, checked dataclass or a pure function of options; nothing
loads a model. The library (``seqsched.run``) and the CLI (``seqsched run``) both build a
:class:`RunConfig` through :func:`job_schedule`, so the same options make the same job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from seqsched.data.batch_input import DEFAULT_MAX_LINE_BYTES
from seqsched.engine.config import EngineConfig, VLLMConfig
from seqsched.schedule.config import Policy, ScheduleConfig, VBSMode

JobStrategy = Literal["vanilla", "oracle", "seqsch"]
JOB_STRATEGIES: tuple[JobStrategy, ...] = ("vanilla", "oracle", "seqsch")
EngineKind = Literal["hf", "continuous", "vllm"]
ENGINE_KINDS: tuple[EngineKind, ...] = ("hf", "continuous", "vllm")
FCRChoice = Literal["off", "restart", "resume"]
FCR_CHOICES: tuple[FCRChoice, ...] = ("off", "restart", "resume")


class Progress(Protocol):
    """What a progress bar offers (a ``tqdm`` is one)."""

    total: Any

    def update(self, n: int = 1) -> Any: ...

    def refresh(self) -> Any: ...


@dataclass(frozen=True)
class RayConfig:
    """``num_workers`` replicas of the engine, each reserving ``num_cpus`` and
    ``num_gpus`` from Ray. ``address``: an existing cluster (``"auto"``, ``"ray://..."``);
    None starts a local Ray on this machine."""

    num_workers: int = 2
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    address: str | None = None

    def __post_init__(self) -> None:
        if self.num_workers < 1:
            raise ValueError(f"num_workers ({self.num_workers}) must be >= 1")
        if self.num_cpus <= 0:
            raise ValueError(f"num_cpus ({self.num_cpus}) must be > 0")
        if self.num_gpus < 0:
            raise ValueError(f"num_gpus ({self.num_gpus}) must be >= 0")


def job_schedule(
    learned: bool,
    *,
    vbs: VBSMode | None = None,
    fcr_mode: FCRChoice | None = None,
    fcr: bool | None = None,
    policy: Policy | None = None,
    **fields: Any,
) -> ScheduleConfig:
    """A job's schedule. What is not given follows from whether lengths are known
    (``learned``: a predictor or oracle lengths): VBS (the paper's table), resuming FCR
    and ``sjf``, the strategy the bench recommends; else no VBS, no FCR and ``fcfs``.
    ``fcr=True`` alone is the paper's restarting FCR, ``fcr=False`` turns FCR off."""
    if fcr_mode is None:
        fcr_mode = "restart" if fcr else "off" if fcr is False else "resume" if learned else "off"
    elif fcr_mode not in FCR_CHOICES:
        raise ValueError(f"fcr_mode ({fcr_mode!r}) must be one of {', '.join(FCR_CHOICES)}")
    elif fcr is False and fcr_mode != "off":
        raise ValueError(f"fcr=False contradicts fcr_mode {fcr_mode!r}")
    return ScheduleConfig(
        vbs=vbs if vbs is not None else "paper" if learned else "off",
        fcr=fcr_mode != "off",
        fcr_mode="resume" if fcr_mode == "resume" else "restart",
        policy=policy if policy is not None else "sjf" if learned else "fcfs",
        **fields,
    )


@dataclass(frozen=True)
class RunConfig:
    """One ``seqsched run``. ``strategy=None`` is inferred: ``seqsch`` with a predictor,
    ``oracle`` with oracle lengths, else ``vanilla``. ``engine_kind`` picks static batching
    (``hf``), transformers' continuous batching or vLLM; the continuous ones follow
    ``schedule.policy`` / ``admission`` (a ``vanilla`` job on them is plain fcfs). Build
    ``schedule`` with :func:`job_schedule` to get the defaults a predictor implies."""

    input_path: Path
    output_path: Path
    engine: EngineConfig
    strategy: JobStrategy | None = None
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
        if self.strategy not in JOB_STRATEGIES:
            raise ValueError(f"strategy ({self.strategy!r}) must be one of {', '.join(JOB_STRATEGIES)}")
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
        if self.ray is not None and self.engine_kind != "hf":
            # Ray deals out scheduling groups, each planned on its own replica. A continuous
            # engine's plan is one order over the whole job, so a Ray run would admit
            # requests in another order than a local run: refused rather than different.
            raise ValueError(
                f"Ray replicas run static batching only (engine 'hf'), not {self.engine_kind!r}: a continuous "
                "engine plans one order for the whole job, which replicas planning their own groups would not keep"
            )

    @property
    def learned(self) -> bool:
        """Whether the job knows lengths (a predictor or oracle lengths)."""
        return self.strategy != "vanilla"
