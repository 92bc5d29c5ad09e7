"""A request's prediction as the planners use it. No torch here."""

from __future__ import annotations

from seqsched.request import Request


def raw_prediction(request: Request) -> int:
    """The predicted output length, at least 0; a request must have one."""
    assert request.predicted_len is not None, f"request {request.request_id!r} has no prediction"
    return max(0, int(request.predicted_len))


def clamped_prediction(request: Request) -> int:
    """The prediction within what the request can still produce: [1, remaining_tokens]."""
    return min(max(1, raw_prediction(request)), request.remaining_tokens)
