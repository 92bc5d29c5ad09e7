"""What the server records when a request ends: its status, latency, predicted against
actual length, the served trace, and an interactive request's time per output token for
the batch lane's governor. All of it is bookkeeping: it never turns an answer the
upstream gave into an error, whatever shape the answer's ``usage`` has.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from seqsched.schedule.front_door import Ticket
from seqsched.serve.dispatcher import Dispatcher
from seqsched.serve.metrics import ServeMetrics
from seqsched.serve.protocol import Endpoint, ParsedRequest
from seqsched.serve.trace import ServedTrace

log = logging.getLogger("seqsched.serve")


@dataclass
class Call:
    """One interactive request from arrival to its end."""

    endpoint: Endpoint
    parsed: ParsedRequest
    ticket: Ticket
    started: float  # time.perf_counter() at arrival
    first_token_at: float | None = None


class Accounting:
    def __init__(self, metrics: ServeMetrics, trace: ServedTrace | None, dispatcher: Dispatcher) -> None:
        self.metrics = metrics
        self.trace = trace
        self.dispatcher = dispatcher

    def refused(self, endpoint: str, status: int) -> None:
        self.metrics.requests.labels(endpoint, str(status)).inc()

    def ended(self, call: Call, status: str, num_output_tokens: int | None = None, finish: str | None = None) -> None:
        """``call`` ended with ``status`` (``200``, an upstream's 4xx, ``499``: the client
        left, ``502``: the upstream failed mid-stream); with its output length when known."""
        try:
            self._ended(call, status, num_output_tokens, finish)
        except Exception:  # never let bookkeeping fail a request
            log.exception("bookkeeping failed for %s (the answer was sent)", call.ticket.request_id)

    def _ended(self, call: Call, status: str, num_output_tokens: int | None, finish: str | None) -> None:
        metrics = self.metrics
        metrics.requests.labels(call.endpoint, status).inc()
        if status != "200":
            return
        now = time.perf_counter()
        metrics.e2e.observe(now - call.started)
        if num_output_tokens is None:
            return
        metrics.actual.observe(num_output_tokens)
        if call.first_token_at is not None and num_output_tokens > 1:
            self.dispatcher.observe_interactive((now - call.first_token_at) / (num_output_tokens - 1))
        elif call.first_token_at is None and num_output_tokens > 0 and call.ticket.granted_at is not None:
            # not streamed: the whole answer over its tokens, from when it got its slot
            self.dispatcher.observe_interactive((self.dispatcher.clock() - call.ticket.granted_at) / num_output_tokens)
        if self.trace is not None and not self.trace.append(call.ticket, call.parsed, num_output_tokens, finish):
            metrics.trace_errors.inc()


def usage_tokens(content: bytes) -> int | None:
    """``usage.completion_tokens`` of a JSON answer, or None when it has none (or it is odd)."""
    tokens = _get(_get(_json(content), "usage"), "completion_tokens")
    return tokens if isinstance(tokens, int) and not isinstance(tokens, bool) and tokens >= 0 else None


def finish_reason(content: bytes) -> str | None:
    choices = _get(_json(content), "choices")
    first = choices[0] if isinstance(choices, list) and choices else None
    reason = _get(first, "finish_reason")
    return reason if isinstance(reason, str) else None


def stream_end(tail: bytes) -> tuple[int | None, str | None]:
    """From a stream's last bytes: usage.completion_tokens (when sent) and the finish reason."""
    usage, finish = None, None
    for line in tail.split(b"\n"):
        if line.startswith(b"data: {"):
            chunk = line[6:]
            usage = usage_tokens(chunk) if usage_tokens(chunk) is not None else usage
            choices = _get(_json(chunk), "choices")
            for choice in choices if isinstance(choices, list) else []:
                reason = _get(choice, "finish_reason")
                finish = reason if isinstance(reason, str) else finish
    return usage, finish


def _json(text: bytes) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _get(value: Any, key: str) -> Any:
    return value.get(key) if isinstance(value, dict) else None
