"""How long a job has left, from the predicted lengths of the work left.

A progress bar that counts requests assumes every request costs the same; under length
scheduling the short ones finish first, so such an estimate is far too early. This one
weighs each request by its predicted length (its limit until it is predicted) and
scales the time spent so far by the predicted work still to do."""

from __future__ import annotations

import time
from collections.abc import Sequence

from seqsched.request import Request


class PredictedEta:
    def __init__(self, requests: Sequence[Request]) -> None:
        self.requests = {r.index: r for r in requests}
        self.done_work = 0
        self.start = time.monotonic()

    def finished(self, request: Request) -> None:
        self.done_work += _work(request)
        self.requests.pop(request.index, None)

    def seconds_left(self) -> float | None:
        if self.done_work == 0:
            return None
        left = sum(_work(r) for r in self.requests.values())
        return (time.monotonic() - self.start) * left / self.done_work


def _work(request: Request) -> int:
    """Decode steps a request is expected to take: its prediction, else its limit."""
    return max(1, request.predicted_len if request.predicted_len is not None else request.max_new_tokens)


def format_seconds(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"
