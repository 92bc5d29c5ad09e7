"""`seqsched serve`'s typed configuration: where it listens, whom it fronts, how it orders."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from seqsched.schedule.config import POLICIES, Policy
from seqsched.schedule.route import ROUTINGS, Routing

DEFAULT_MAX_BYPASS = 128  # measured: docs/serving.md, the aging knob
DEFAULT_MAX_INFLIGHT = 256  # vLLM's own max_num_seqs default, for an upstream that does not say


@dataclass(frozen=True)
class ServeConfig:
    """How the server runs.

    - ``upstreams``: base URLs of OpenAI-compatible servers (``http://127.0.0.1:8001``).
    - ``host`` / ``port``: where seqsched listens; loopback unless told otherwise.
    - ``policy``: ``fcfs`` (pass-through, the baseline), ``sjf`` (shortest predicted
      first) or ``ljf``; ``max_bypass``: the aging bound (``schedule/queue.py``), no
      request is overtaken by more than this many later ones.
    - ``max_inflight``: requests forwarded to one upstream at once (its ``max_num_seqs``);
      the rest wait in seqsched's queue, where the policy orders them.
    - ``routing``: ``least-work`` (least predicted tokens outstanding) or ``round-robin``.
    - ``priority``: also send each request's predicted length as vLLM's ``priority``, so
      that vLLM's own preemption evicts the longest-predicted request (``None``: on for
      vLLM upstreams, found from their ``/v1/models``, off for others).
    - ``predictor``: a saved predictor directory (default: the shipped text proxy).
    - ``max_request_bytes``, ``max_tokens_limit``: larger bodies and larger ``max_tokens``
      get a 400 (413 for the body).
    - ``connect_timeout_s``, ``upstream_timeout_s``: per upstream call; ``queue_timeout_s``:
      the longest a request may wait for a slot (then 503); ``drain_timeout_s``: on
      SIGTERM, how long requests in flight may take to finish.
    - ``trace_path``: append each served request's prompt, predicted and actual length
      (JSONL that ``seqsched predictor train --target L_served`` reads).
    """

    upstreams: tuple[str, ...]
    host: str = "127.0.0.1"
    port: int = 8000
    policy: Policy = "sjf"
    max_bypass: int | None = DEFAULT_MAX_BYPASS
    max_inflight: int = DEFAULT_MAX_INFLIGHT
    routing: Routing = "least-work"
    priority: bool | None = None
    predictor: Path | None = None
    served_model_name: str | None = None
    max_request_bytes: int = 1 << 20
    max_tokens_limit: int | None = None
    connect_timeout_s: float = 5.0
    upstream_timeout_s: float = 600.0
    queue_timeout_s: float = 600.0
    drain_timeout_s: float = 30.0
    trace_path: Path | None = None

    def __post_init__(self) -> None:
        if not self.upstreams:
            raise ValueError("give at least one upstream (--upstream URL), or --model to start one")
        for url in self.upstreams:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"upstream ({url!r}) must be an http(s) URL such as http://127.0.0.1:8001")
        if len(set(self.upstreams)) != len(self.upstreams):
            raise ValueError(f"an upstream is given twice: {', '.join(self.upstreams)}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port ({self.port}) must be in [0, 65535]")
        if self.policy not in POLICIES:
            raise ValueError(f"policy ({self.policy!r}) must be one of {', '.join(POLICIES)}")
        if self.routing not in ROUTINGS:
            raise ValueError(f"routing ({self.routing!r}) must be one of {', '.join(ROUTINGS)}")
        if self.max_bypass is not None and self.max_bypass < 0:
            raise ValueError(f"max_bypass ({self.max_bypass}) must be >= 0 or None")
        if self.max_inflight < 1:
            raise ValueError(f"max_inflight ({self.max_inflight}) must be >= 1")
        if self.max_request_bytes < 1:
            raise ValueError(f"max_request_bytes ({self.max_request_bytes}) must be >= 1")
        if self.max_tokens_limit is not None and self.max_tokens_limit < 1:
            raise ValueError(f"max_tokens_limit ({self.max_tokens_limit}) must be >= 1")
        for name in ("connect_timeout_s", "upstream_timeout_s", "queue_timeout_s", "drain_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} ({getattr(self, name)}) must be > 0")
