"""The paper's metrics (throughput, average length, effective token ratio, failure
ratio), plus predictor overhead and latency, computed from a run's results."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from typing import Any

from seqsched.pipeline import RunReport
from seqsched.request import RequestStatus


@dataclass(frozen=True)
class Metrics:
    num_requests: int  # requests that ran (errors excluded)
    num_errors: int
    wall_seconds: float
    predictor_seconds: float
    requests_per_second: float
    output_tokens_per_second: float
    average_length: float  # decode steps per request, padding and FCR re-runs included
    effective_token_ratio: float  # sum of output tokens / sum of lengths
    failure_ratio: float  # FCR re-runs / requests
    discarded_ratio: float  # token-steps of discarded FCR runs / sum of lengths (padding: the rest)
    predictor_overhead: float  # predictor seconds / wall seconds
    mean_output_tokens: float
    latency_mean: float
    latency_p50: float
    latency_p90: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compute_metrics(report: RunReport) -> Metrics:
    ran = [r for r in report.results if r.status != RequestStatus.FINISHED_ERROR]
    n = len(ran)
    wall = report.wall_seconds
    tokens = sum(r.num_output_tokens for r in ran)
    length = sum(r.length for r in ran)
    latencies = sorted(r.latency for r in ran) or [0.0]
    return Metrics(
        num_requests=n,
        num_errors=len(report.results) - n,
        wall_seconds=wall,
        predictor_seconds=report.predictor_seconds,
        requests_per_second=n / wall if wall > 0 else 0.0,
        output_tokens_per_second=tokens / wall if wall > 0 else 0.0,
        average_length=length / n if n else 0.0,
        effective_token_ratio=tokens / length if length else 0.0,
        failure_ratio=report.num_failures / n if n else 0.0,
        discarded_ratio=sum(b.num_discarded_tokens for b in report.batches) / length if length else 0.0,
        predictor_overhead=report.predictor_seconds / wall if wall > 0 else 0.0,
        mean_output_tokens=tokens / n if n else 0.0,
        latency_mean=statistics.fmean(latencies),
        latency_p50=_quantile(latencies, 0.5),
        latency_p90=_quantile(latencies, 0.9),
    )


def _quantile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
