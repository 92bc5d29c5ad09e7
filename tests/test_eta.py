"""The job's ETA weighs the work left by predicted length, not by request count."""

from __future__ import annotations

import pytest

from seqsched.eta import PredictedEta, format_seconds
from tests.helpers import create_requests


def test_eta_scales_time_so_far_by_predicted_work_left(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter([0.0, 10.0])
    monkeypatch.setattr("seqsched.eta.time.monotonic", lambda: next(clock))
    requests = create_requests([10, 10, 300])  # two short ones run first, as sjf would
    eta = PredictedEta(requests)
    assert eta.seconds_left() is None
    eta.finished(requests[0])
    eta.finished(requests[1])
    # 20 predicted steps took 10 s; 300 are left: 150 s, where counting requests says 5 s.
    assert eta.seconds_left() == pytest.approx(150.0)


def test_unpredicted_requests_count_at_their_limit() -> None:
    requests = create_requests([5, 5], max_new_tokens=64)
    requests[1].predicted_len = None
    eta = PredictedEta(requests)
    eta.finished(requests[0])
    assert eta.done_work == 5 and sum(r.max_new_tokens for r in eta.requests.values()) == 64


def test_format_seconds() -> None:
    assert (format_seconds(75), format_seconds(3725)) == ("01:15", "1:02:05")
