"""Arrival times, as vLLM's benchmark client draws them, and recorded ones."""

from __future__ import annotations

import itertools
import json
import statistics
from pathlib import Path

import pytest

from seqsched.workload.arrivals import arrival_times, read_arrivals


def test_poisson_arrivals_end_at_n_over_rate_and_repeat_with_their_seed() -> None:
    times = arrival_times(1000, rate=4.0, seed=3)
    assert times == sorted(times) and times[-1] == pytest.approx(250.0)
    assert times == arrival_times(1000, rate=4.0, seed=3) != arrival_times(1000, rate=4.0, seed=4)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert statistics.pstdev(gaps) / statistics.fmean(gaps) == pytest.approx(1.0, abs=0.1)  # exponential gaps


def test_burstiness_below_one_makes_gaps_more_uneven() -> None:
    def spread(b: float) -> float:
        t = arrival_times(2000, 10.0, burstiness=b, seed=0)
        gaps = [y - x for x, y in itertools.pairwise(t)]
        return statistics.pstdev(gaps) / statistics.fmean(gaps)

    assert spread(0.25) > 1.5 > spread(1.0) > 0.5 > spread(8.0)


def test_a_burst_and_bad_rates() -> None:
    assert arrival_times(3, float("inf")) == [0.0, 0.0, 0.0] and arrival_times(0, 1.0) == []
    for rate, burstiness in ((0.0, 1.0), (-1.0, 1.0), (1.0, 0.0), (1.0, float("inf"))):
        with pytest.raises(ValueError):
            arrival_times(5, rate, burstiness)


def test_recorded_arrivals_are_shifted_to_zero_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "arrivals.jsonl"
    path.write_text("".join(json.dumps({"arrival": t}) + "\n" for t in (100.0, 100.5, 103)))
    assert read_arrivals(path) == [0.0, 0.5, 3.0]
    for text, message in (
        ('{"arrival": 1}\nnot json\n', "arrivals.jsonl:2: invalid JSON"),
        ('{"arrival": 1}\n{"at": 2}\n', "arrivals.jsonl:2: field 'arrival'"),
        ('{"arrival": 2}\n{"arrival": 1}\n', "must not decrease"),
        ("\n", "no arrival times"),
    ):
        path.write_text(text)
        with pytest.raises(ValueError, match=message):
            read_arrivals(path)
