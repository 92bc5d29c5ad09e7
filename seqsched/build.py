"""Builders: the shipped assets, the serving model, engines and predictors.

Every place that needs an engine (a job, a Ray replica, the bench) calls
:func:`build_engine`, so an engine kind is built and sized one way. Nothing here imports
torch until a model is loaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Literal, overload

from seqsched.config import EngineKind, RunConfig
from seqsched.engine.config import EngineConfig, VLLMConfig
from seqsched.predict.base import LengthPredictor

if TYPE_CHECKING:
    from seqsched.engine.base import Engine
    from seqsched.engine.hf import HFEngine
    from seqsched.engine.stream import StreamEngine

ASSETS = Path(__file__).parent / "assets"
DEFAULT_MODEL = ASSETS / "default_model"
DEFAULT_PREDICTOR = ASSETS / "default_predictor"  # a probe on DEFAULT_MODEL's hidden state
# A text proxy trained on the same lengths: the default for continuous engines and the
# server, where the probe would need a second copy of the serving model, and where its
# cost is paid by every request's completion time (0.26 ms a prompt against the probe's
# 3.7 ms, and a better ranking on the default workload: Kendall tau 0.62 against 0.54).
DEFAULT_PROXY = ASSETS / "default_proxy"


def resolve_model(model: str | Path | None) -> str | Path:
    """The given model, or the built-in default one."""
    if model is not None:
        return model
    if not DEFAULT_MODEL.is_dir():
        raise FileNotFoundError(f"no model given, and no built-in default model at {DEFAULT_MODEL}")
    return DEFAULT_MODEL


@overload
def build_engine(
    config: EngineConfig, kind: Literal["hf"] = "hf", vllm: VLLMConfig | None = None, hf: HFEngine | None = None
) -> HFEngine: ...


@overload
def build_engine(
    config: EngineConfig,
    kind: Literal["continuous", "vllm"],
    vllm: VLLMConfig | None = None,
    hf: HFEngine | None = None,
) -> StreamEngine: ...


@overload
def build_engine(
    config: EngineConfig, kind: EngineKind, vllm: VLLMConfig | None = None, hf: HFEngine | None = None
) -> Engine | StreamEngine: ...


def build_engine(
    config: EngineConfig, kind: EngineKind = "hf", vllm: VLLMConfig | None = None, hf: HFEngine | None = None
) -> Engine | StreamEngine:
    """Load the serving model into the engine of that kind; a bad model path raises
    FileNotFoundError. ``hf``: an HF engine already loaded, which transformers'
    continuous engine then shares instead of loading a second copy. Continuous engines
    are sized by ``vllm`` (``max_num_seqs`` running at once, ``num_gpu_blocks``)."""
    vllm = vllm or VLLMConfig()
    try:
        if kind == "vllm":
            from seqsched.engine.vllm_engine import VLLMEngine

            return VLLMEngine(config, vllm)
        if hf is None:
            from seqsched.engine.hf import HFEngine  # imports torch

            hf = HFEngine(config)
        if kind == "continuous":
            from seqsched.engine.continuous import HFContinuousEngine

            return HFContinuousEngine(hf, max_num_seqs=vllm.max_num_seqs, num_blocks=vllm.num_gpu_blocks)
        return hf
    except OSError as e:  # the loaders' errors name the model and what is wrong
        raise FileNotFoundError(f"model {config.model!r}: cannot load it ({e})") from e


def build_predictor(
    config: RunConfig, engine: object, oracle_lengths: Mapping[str, int] | None = None
) -> LengthPredictor:
    """The job's predictor: constant (vanilla), oracle lengths (``oracle_lengths`` when
    already read, else from the config's file), or a saved one with a margin. LLM-based
    predictors share ``engine``'s model instead of loading a second copy."""
    from seqsched.data.traces import read_length_map
    from seqsched.predict.constant import ConstantPredictor
    from seqsched.predict.oracle import OraclePredictor

    if config.strategy == "vanilla":
        return ConstantPredictor()
    if config.oracle_lengths is not None:
        return OraclePredictor(oracle_lengths if oracle_lengths is not None else read_length_map(config.oracle_lengths))
    assert config.predictor is not None
    return load_saved_predictor(config.predictor, engine, config.margin_scale, config.margin_add)


def load_saved_predictor(
    path: str | Path, engine: object = None, margin_scale: float = 1.0, margin_add: float = 0.0
) -> LengthPredictor:
    """A saved predictor directory, with a safety margin ``ceil(scale * p + add)``."""
    from seqsched.predict.margin import with_margin
    from seqsched.predict.registry import load_predictor

    predictor = load_predictor(path, model=getattr(engine, "model", None), tokenizer=getattr(engine, "tokenizer", None))
    return with_margin(predictor, margin_scale, margin_add)
