"""What one step of a continuous-batching engine (vLLM v1) costs. No torch here.

NOTE on the form. vLLM runs one forward pass a step over every scheduled token: one
for each decoding request, a chunk of prompt for each prefilling one, all flattened
into one batch. The step costs

    seconds = a + t * tokens + s * seqs + c * decode_context + p * prefill_attention

- ``a``: fixed per step (the scheduler, Python, kernel launches; on a GPU, reading the
  weights once);
- ``t``: per scheduled token (the dense layers: projections and MLP);
- ``s``: per scheduled request (sampling, detokenizing, output processing);
- ``c``: per context token a decoding request attends to (reading its KV cache);
- ``p``: per (chunk token x position) of a prefill chunk, attention over its own prompt:
  a chunk of ``n`` tokens after ``k`` computed ones counts ``n * (k + n)``.
Every term is measured (``seqsched calibrate --engine vllm``) or taken from published
figures (the GPU built-ins below, with their source), never guessed.
"""

from __future__ import annotations

import datetime
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from seqsched.simulate.cost_model import BUILTIN as STATIC_BUILTIN
from seqsched.simulate.cost_model import StepCostModel
from seqsched.simulate.fit import nnls_relative

KIND = "vllm-step"
_TERMS = ("a", "t", "s", "c", "p")


@dataclass(frozen=True)
class StepShape:
    """One step's work: what the cost depends on."""

    seqs: int
    tokens: int
    decode_context: int = 0
    prefill_attention: int = 0

    def row(self) -> list[float]:
        return [1.0, self.tokens, self.seqs, self.decode_context, self.prefill_attention]


@dataclass(frozen=True)
class TimedStep:
    shape: StepShape
    seconds: float


@dataclass(frozen=True)
class ContinuousCost:
    """Seconds of one continuous-batching step; see the module note."""

    a: float
    t: float
    s: float = 0.0
    c: float = 0.0
    p: float = 0.0
    provenance: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        for name in _TERMS:
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"step cost parameter {name} ({value!r}) must be a finite number >= 0")
        if self.a + self.t + self.s <= 0:
            raise ValueError("a step cost needs a positive fixed, per-token or per-request term")

    def seconds(self, seqs: int, tokens: int, decode_context: int = 0, prefill_attention: int = 0) -> float:
        return self.a + self.t * tokens + self.s * seqs + self.c * decode_context + self.p * prefill_attention

    def of(self, shape: StepShape) -> float:
        return self.seconds(shape.seqs, shape.tokens, shape.decode_context, shape.prefill_attention)

    @classmethod
    def fit(
        cls, steps: Sequence[TimedStep], provenance: dict[str, Any] | None = None, relative: bool = False
    ) -> ContinuousCost:
        """Least squares, every term >= 0: on seconds (the default, so the fit's total
        over the steps it saw comes out right: what a run's length depends on), or on
        relative error (``relative``: every step counts the same, short or long)."""
        if len(steps) < len(_TERMS):
            raise ValueError(f"need at least {len(_TERMS)} timed steps to fit, got {len(steps)}")
        x = np.array([s.shape.row() for s in steps])
        y = np.array([s.seconds for s in steps])
        a, t, s, c, p = nnls_relative(x, y, relative)
        return cls(a, t, s, c, p, provenance=dict(provenance or {}))

    def relative_errors(self, steps: Sequence[TimedStep]) -> list[float]:
        return [self.of(s.shape) / s.seconds - 1.0 for s in steps]

    @classmethod
    def from_static(cls, model: StepCostModel) -> ContinuousCost:
        """A static-batch cost model read as a step cost: a decode row costs ``b`` and a
        prompt token ``e``; the static prefill's fixed cost ``d`` is dropped, since vLLM
        runs prefills inside the step rather than as calls of their own."""
        return cls(
            a=model.a,
            t=model.e,
            s=max(0.0, model.b - model.e),
            c=model.c,
            p=model.f / 2,
            provenance={**model.provenance, "converted_from": "static-batch cost model"},
        )

    def to_dict(self) -> dict[str, Any]:
        return {"kind": KIND, **asdict(self)}

    def save(self, path: str | Path) -> None:
        data = self.to_dict()
        data["provenance"] = {"date": datetime.date.today().isoformat(), **self.provenance}
        Path(path).write_text(json.dumps(data, indent=2) + "\n")


# Built-in step costs.
#
# a100-vllm-llama-8b: vLLM on one A100, an 8B-class Llama in 16-bit, solved from
# published vLLM measurements (not measured here, and not refit on a GPU by this project):
# - johnmusgrave.com/p/vllm-throughput-latency-sweep-on (vLLM 0.23.0, A100-40GB,
#   Llama-3.1-8B-Instruct BF16, `vllm bench serve`, 1024 input / 128 output tokens,
#   --ignore-eos): one request decodes at ~75 tokens/s, so a step at context ~1.1k is
#   13.3 ms; 8 concurrent requests give 6.6x that throughput, so a step of 8 decodes at
#   context ~1.1k is 8 / (6.6 x 75) = 16.2 ms.
# - LambdaLabsML/vllm-benchmark, results/prompt_10/1xA100-80GB-SXM/
#   Mistral-7B-Instruct-v0.3_tp1_len2048.json (vLLM 0.6, A100-80GB): 10 ShareGPT prompts
#   sent at once (1,585 prompt tokens) reach their first token in 138 ms (median TTFT),
#   one prefill step over all of them: ~79 us a prompt token beyond the fixed cost.
# Solving: t = (138 - 12.9) ms / 1585 = 79 us; a + t + c x 1100 = 13.3 ms and
# a + 8 t + c x 8 x 1100 = 16.2 ms give c = 0.30 us per context token and a = 12.9 ms
# (16 GB of weights read once a step at ~1.25 TB/s). Same check: 10 decodes at
# context ~400 cost 12.9 + 0.8 + 1.2 = 14.9 ms against the Mistral run's 12.2 ms mean
# TPOT on the faster A100-80GB. Its KV cost per context token is an 8B Llama-3's
# (grouped-query attention, 128 KB a token); Vicuna-7B's full attention holds 4x as much
# KV, so for it this model is optimistic about long contexts.
BUILTIN: dict[str, ContinuousCost] = {
    "a100-vllm-llama-8b": ContinuousCost(
        a=12.9e-3,
        t=79e-6,
        c=0.30e-6,
        provenance={
            "device": "A100 (published measurements on A100-40GB and A100-80GB)",
            "model": "Llama-3.1-8B-class, 16-bit",
            "engine": "vLLM 0.6-0.23",
            "source": "published vLLM measurements: johnmusgrave.com/p/vllm-throughput-latency-sweep-on (A100-40GB, "
            "Llama-3.1-8B, TPOT at 1 and 8 concurrent) and LambdaLabsML/vllm-benchmark results/prompt_10/"
            "1xA100-80GB-SXM/Mistral-7B-Instruct-v0.3_tp1_len2048.json (TTFT of one 1,585-token prefill); "
            "see seqsched/simulate/step_cost.py",
        },
    ),
}
DEFAULT_BUILTIN = "a100-vllm-llama-8b"


def is_step_cost(name_or_path: str | Path) -> bool:
    """Whether a name or file is a continuous step cost (not a static-batch cost model)."""
    key = str(name_or_path)
    if key in BUILTIN:
        return True
    try:
        data = json.loads(Path(key).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("kind") == KIND


def load_step_cost(name_or_path: str | Path | None) -> ContinuousCost:
    """A built-in step cost by name, a saved one (``kind: vllm-step``), or a static-batch
    cost model (built-in or file), converted."""
    key = str(name_or_path) if name_or_path is not None else DEFAULT_BUILTIN
    if key in BUILTIN:
        return BUILTIN[key]
    if key in STATIC_BUILTIN:
        return ContinuousCost.from_static(STATIC_BUILTIN[key])
    path = Path(key)
    if not path.is_file():
        names = ", ".join([*BUILTIN, *STATIC_BUILTIN])
        raise FileNotFoundError(f"cost model {key!r}: no such file, and not one of {names}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: invalid JSON ({err})") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a cost model (a JSON object is needed)")
    if data.get("kind") != KIND:
        return ContinuousCost.from_static(StepCostModel.load(path))
    missing = [k for k in ("a", "t") if k not in data]
    if missing:
        raise ValueError(f"{path}: not a step cost (missing {', '.join(missing)})")
    return ContinuousCost(**{k: data[k] for k in (*_TERMS, "provenance") if k in data})
