"""The job's ETA weighs the work left by predicted length, not by request count."""

from __future__ import annotations

import random

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
    assert eta.done_work == 5 and eta.work_left == 64


def test_the_running_sum_equals_the_sum_over_what_is_left() -> None:
    """Predictions arrive group by group (and some out of order), requests finish in any
    order: the O(1) sum is the brute-force sum once the predictions it can see are in."""
    rng = random.Random(0)
    requests = create_requests([1] * 300, max_new_tokens=512)
    for r in requests:
        r.predicted_len = None
    eta = PredictedEta(requests)
    left = list(requests)
    for start in range(0, 300, 50):
        group = requests[start : start + 50]
        for r in group:
            r.predicted_len = rng.randint(1, 400)
        rng.shuffle(group)
        for r in group[:30]:
            eta.finished(r)
            left.remove(r)
        eta.seconds_left()
        assert eta.work_left == sum(r.predicted_len or 512 for r in left)
    assert eta.done_work > 0


def test_format_seconds() -> None:
    assert (format_seconds(75), format_seconds(3725)) == ("01:15", "1:02:05")
