"""How good a length predictor is, as the paper measures it (Table 1): Error (mean
absolute difference to the target), Acc-50 and Acc-100 (share within 50 / 100 tokens),
plus what matters for scheduling: Kendall's tau (does it *order* prompts right; sorting
is all VBS needs), the share of under-predictions (each one an FCR re-run), and cost.

The target of a prompt is the max of its sampled lengths (``L_t*``), as in the paper.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from seqsched.data.traces import DEFAULT_KNOWLEDGE, Trace
from seqsched.predict.base import LengthPredictor
from seqsched.request import Request


@dataclass(frozen=True)
class LengthMetrics:
    num_prompts: int
    error: float  # mean |predicted - target|
    acc_50: float  # share with |predicted - target| <= 50
    acc_100: float  # share with |predicted - target| <= 100
    kendall_tau: float | None  # None when either side is constant
    under_share: float  # share with predicted < target
    mean_predicted: float
    mean_target: float
    ms_per_prompt: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> str:
        tau = "n/a" if self.kendall_tau is None else f"{self.kendall_tau:.3f}"
        rows = [
            ("prompts", f"{self.num_prompts}"),
            ("Error", f"{self.error:.1f}"),
            ("Acc-50", f"{100 * self.acc_50:.1f}%"),
            ("Acc-100", f"{100 * self.acc_100:.1f}%"),
            ("Kendall tau", tau),
            ("under-predicted", f"{100 * self.under_share:.1f}%"),
            ("mean predicted / target", f"{self.mean_predicted:.1f} / {self.mean_target:.1f}"),
            ("ms per prompt", f"{self.ms_per_prompt:.2f}"),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def length_metrics(predicted: Sequence[int], target: Sequence[int], seconds: float = 0.0) -> LengthMetrics:
    """Metrics of predictions against targets; ``seconds`` is the time predicting took."""
    if len(predicted) != len(target) or not target:
        raise ValueError(f"need as many predictions as targets, and some ({len(predicted)} vs {len(target)})")
    from scipy.stats import kendalltau

    n = len(target)
    diffs = [abs(p - t) for p, t in zip(predicted, target, strict=True)]
    tau = float(kendalltau(predicted, target).statistic) if n > 1 else math.nan
    return LengthMetrics(
        num_prompts=n,
        error=sum(diffs) / n,
        acc_50=sum(d <= 50 for d in diffs) / n,
        acc_100=sum(d <= 100 for d in diffs) / n,
        kendall_tau=None if math.isnan(tau) else tau,
        under_share=sum(p < t for p, t in zip(predicted, target, strict=True)) / n,
        mean_predicted=sum(predicted) / n,
        mean_target=sum(target) / n,
        ms_per_prompt=1000 * seconds / n,
    )


def trace_texts(trace: Trace, prompts: dict[str, str] | None = None) -> list[str]:
    """Each record's prompt text: from ``prompts`` (id -> text) when given, else the
    trace's own instruction/input fields."""
    texts = []
    for r in trace:
        text = prompts.get(r.id) if prompts is not None else r.text
        if text is None:
            source = "the prompts file" if prompts is not None else "the trace (no instruction field)"
            raise ValueError(f"{r.where}: no prompt text for id {r.id!r} in {source}: pass --prompts")
        texts.append(text)
    return texts


def evaluate(
    predictor: LengthPredictor,
    trace: Trace,
    prompts: dict[str, str] | None = None,
    max_new_tokens: int = 512,
    knowledge: str = DEFAULT_KNOWLEDGE,
) -> tuple[LengthMetrics, list[int]]:
    """Predict every record of ``trace`` (as requests, so the oracle and limit-based
    predictors work too) and score against its ``knowledge`` length; returns the metrics
    and the predictions."""
    texts = trace_texts(trace, prompts)
    requests = [
        Request(index=i, request_id=r.id, prompt=text or r.id, max_new_tokens=max_new_tokens)
        for i, (r, text) in enumerate(zip(trace, texts, strict=True))
    ]
    start = time.perf_counter()
    predicted = [int(p) for p in predictor.predict_requests(requests)]
    seconds = time.perf_counter() - start
    return length_metrics(predicted, [r.length(knowledge) for r in trace], seconds), predicted
