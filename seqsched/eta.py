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
    """O(1) amortized per update, so a million-request job spends nothing on its ETA: the
    work left is kept as a running sum. A request's work changes once, when it is first
    predicted; the requests not yet predicted are walked once, in order, by a cursor that
    folds each new prediction into the sum (predictions come group by group, in order;
    out of order, the estimate lags until the cursor reaches them)."""

    def __init__(self, requests: Sequence[Request]) -> None:
        self._counted = {r.index: _work(r) for r in requests}  # each unfinished request's work, as summed
        self._left = sum(self._counted.values())
        self._pending = [r for r in requests if r.predicted_len is None]
        self._cursor = 0
        self.done_work = 0
        self.start = time.monotonic()

    def finished(self, request: Request) -> None:
        self._catch_up()
        counted = self._counted.pop(request.index, None)
        if counted is not None:
            self._left -= counted
        self.done_work += _work(request)

    def seconds_left(self) -> float | None:
        if self.done_work == 0:
            return None
        self._catch_up()
        return (time.monotonic() - self.start) * self.work_left / self.done_work

    @property
    def work_left(self) -> int:
        return self._left

    def _catch_up(self) -> None:
        while self._cursor < len(self._pending):
            r = self._pending[self._cursor]
            counted = self._counted.get(r.index)
            if counted is not None:  # still to finish
                if r.predicted_len is None:
                    return
                self._counted[r.index] = _work(r)
                self._left += self._counted[r.index] - counted
            self._cursor += 1


def _work(request: Request) -> int:
    """Decode steps a request is expected to take: its prediction, else its limit."""
    return max(1, request.predicted_len if request.predicted_len is not None else request.max_new_tokens)


def format_seconds(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"
