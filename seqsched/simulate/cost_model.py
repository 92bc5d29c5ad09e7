"""How long a static micro-batch takes, from a per-step cost model. No torch here.

NOTE on the model. A static batch of ``B`` rows, left-padded to a prompt of ``P``
tokens, that runs ``n`` decode steps costs one prefill and ``n - 1`` decode steps (the
prefill's forward pass yields the first token):

    prefill(B, P)  = d + e * B * P + f * B * P^2
    decode(B, ctx) = a + b * B + c * B * ctx,   ctx = P + k at step k = 1 .. n-1

``a`` is the per-step fixed cost (weight reads on a GPU, Python and kernel launches on a
CPU), ``b * B`` the per-row dense compute (MLP, projections), ``c * B * ctx`` the
attention over the KV cache; ``f`` is the prefill's attention over its own prompt,
which matters on a CPU or with eager attention. The sum over steps has a closed form, so a batch costs
O(1) to price whatever its length.
"""

from __future__ import annotations

import datetime
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from seqsched.simulate.fit import nnls_relative

StepKind = Literal["prefill", "decode"]
_DECODE = ("a", "b", "c")
_PREFILL = ("d", "e", "f")


@dataclass(frozen=True)
class StepSample:
    """One measured forward pass: a prefill over ``context_len`` prompt tokens, or one
    decode step whose KV cache holds ``context_len`` tokens."""

    kind: StepKind
    batch_size: int
    context_len: int
    seconds: float

    def __post_init__(self) -> None:
        if self.kind not in ("prefill", "decode"):
            raise ValueError(f"kind ({self.kind!r}) must be 'prefill' or 'decode'")
        if self.batch_size < 1 or self.context_len < 1:
            raise ValueError(f"batch_size ({self.batch_size}) and context_len ({self.context_len}) must be >= 1")
        if not self.seconds > 0:
            raise ValueError(f"seconds ({self.seconds}) must be > 0")


@dataclass(frozen=True)
class StepCostModel:
    """Seconds of a prefill and of one decode step; see the module note for the form."""

    a: float  # decode: fixed seconds per step
    b: float  # decode: seconds per row per step
    c: float  # decode: seconds per row per context token per step
    d: float = 0.0  # prefill: fixed seconds
    e: float = 0.0  # prefill: seconds per prompt token per row
    f: float = 0.0  # prefill: seconds per squared prompt token per row (attention)
    provenance: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        for name in _DECODE + _PREFILL:
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"cost model parameter {name} ({value!r}) must be a finite number >= 0")
        if self.a + self.b + self.c <= 0:
            raise ValueError("a cost model needs a positive decode cost (a, b and c are all 0)")

    def prefill_seconds(self, batch_size: int, prompt_len: int) -> float:
        return self.d + self.e * batch_size * prompt_len + self.f * batch_size * prompt_len**2

    def step_seconds(self, batch_size: int, context_len: int) -> float:
        return self.a + self.b * batch_size + self.c * batch_size * context_len

    def batch_seconds(self, batch_size: int, prompt_len: int, num_steps: int) -> float:
        """A whole micro-batch: the prefill, then decode steps 1 .. num_steps-1."""
        assert batch_size >= 1 and prompt_len >= 0 and num_steps >= 0, (batch_size, prompt_len, num_steps)
        if num_steps == 0:
            return 0.0
        m = num_steps - 1  # decode steps; step k attends to prompt_len + k tokens
        context_sum = m * prompt_len + m * (m + 1) // 2
        decode = m * (self.a + self.b * batch_size) + self.c * batch_size * context_sum
        return self.prefill_seconds(batch_size, prompt_len) + decode

    @classmethod
    def fit(cls, samples: Sequence[StepSample], provenance: dict[str, Any] | None = None) -> StepCostModel:
        """Least squares on relative error (the grid spans orders of magnitude), with
        every parameter kept >= 0. Without prefill samples, the prefill costs 0; a term
        the data cannot support (too few points) may come out 0."""
        decode = [s for s in samples if s.kind == "decode"]
        prefill = [s for s in samples if s.kind == "prefill"]
        if len(decode) < len(_DECODE):
            raise ValueError(f"need at least {len(_DECODE)} decode samples to fit, got {len(decode)}")
        a, b, c = nnls_relative(
            np.array([[1.0, s.batch_size, s.batch_size * s.context_len] for s in decode]),
            np.array([s.seconds for s in decode]),
        )
        d = e = f = 0.0
        if prefill:
            d, e, f = nnls_relative(
                np.array([[1.0, s.batch_size * s.context_len, s.batch_size * s.context_len**2] for s in prefill]),
                np.array([s.seconds for s in prefill]),
            )
        return cls(a, b, c, d, e, f, provenance=dict(provenance or {}))

    def relative_errors(self, samples: Sequence[StepSample]) -> list[float]:
        """(model - measured) / measured, one per sample: how well the fit holds."""
        return [
            (
                self.prefill_seconds(s.batch_size, s.context_len)
                if s.kind == "prefill"
                else self.step_seconds(s.batch_size, s.context_len)
            )
            / s.seconds
            - 1.0
            for s in samples
        ]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: str | Path) -> None:
        data = self.to_dict()
        data["provenance"] = {"date": datetime.date.today().isoformat(), **self.provenance}
        Path(path).write_text(json.dumps(data, indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> StepCostModel:
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: invalid JSON ({err})") from err
        missing = [k for k in _DECODE if not isinstance(data, dict) or k not in data]
        if missing:
            raise ValueError(f"{path}: not a cost model (missing {', '.join(missing)})")
        known = {k: data[k] for k in (*_DECODE, *_PREFILL, "provenance") if k in data}
        return cls(**known)


# Built-in models, for simulating without a calibration run.
# - a100-vicuna-7b: hand-set for Vicuna-7B fp16 under HF eager generate on one A100
#   (NOT measured): ~32 ms fixed per step (13.5 GB of weights at ~1.5 TB/s plus launch
#   overhead), 14 GFLOP per row per step at ~200 TFLOP/s, 0.5 MB of KV per context token
#   at ~1.5 TB/s, prefill at ~150 TFLOP/s.
# - cpu-default-model: the built-in default model, measured on this project's 2-core CPU
#   box; refresh it with `seqsched calibrate --out cost.json` on the machine you care about.
BUILTIN: dict[str, StepCostModel] = {
    "a100-vicuna-7b": StepCostModel(
        a=0.032,
        b=7e-5,
        c=3.5e-7,
        d=0.03,
        e=9e-5,
        provenance={
            "device": "A100-80GB (assumed)",
            "model": "vicuna-7b",
            "dtype": "float16",
            "source": "hand-set from bandwidth/FLOP arithmetic, not measured",
        },
    ),
    "cpu-default-model": StepCostModel(
        a=3.37e-3,
        b=2.19e-4,
        c=2.61e-6,
        d=4.56e-3,
        e=1.21e-4,
        f=1.72e-7,
        provenance={
            "device": "cpu (2 shared cores, 1 torch thread)",
            "model": "seqsched/assets/default_model (Llama, 4 layers, hidden 256)",
            "dtype": "float32",
            "date": "2026-11-21",
            "source": "seqsched calibrate --threads 1 --batch-sizes 1,4,16,64 --context-lens 16,128,512; "
            "median |error| 15%, max 56% (decode at batch 64, context 520)",
        },
    ),
}
DEFAULT_BUILTIN = "a100-vicuna-7b"


def load_cost_model(name_or_path: str | Path | None) -> StepCostModel:
    """A built-in model by name, or a saved JSON file; ``None`` gives the default."""
    key = str(name_or_path) if name_or_path is not None else DEFAULT_BUILTIN
    if key in BUILTIN:
        return BUILTIN[key]
    if not Path(key).is_file():
        raise FileNotFoundError(f"cost model {key!r}: no such file, and not one of {', '.join(BUILTIN)}")
    return StepCostModel.load(key)
