"""`seqsched serve`'s typed configuration: where it listens, whom it fronts, how it orders,
what it allows clients, and where batches live."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from seqsched.schedule.batch_lane import BatchLaneConfig
from seqsched.schedule.config import DEFAULT_SLACK_S, ONLINE_POLICIES, OnlinePolicy
from seqsched.schedule.front_door import DoorConfig
from seqsched.schedule.route import Routing
from seqsched.schedule.scorers import parse_routing

DEFAULT_MAX_BYPASS = 128  # measured: docs/serving.md, the aging knob
DEFAULT_MAX_INFLIGHT = 256  # vLLM's own max_num_seqs default, for an upstream that does not say


@dataclass(frozen=True)
class BatchLimits:
    """What the Batches API accepts: a file's size, a batch's lines, batches not yet
    ended at once (each over its limit is a 4xx naming it)."""

    max_file_bytes: int = 200 << 20  # OpenAI's: 200 MB
    max_batch_lines: int = 50_000  # OpenAI's
    max_active_batches: int = 16

    def __post_init__(self) -> None:
        for name in ("max_file_bytes", "max_batch_lines", "max_active_batches"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} ({getattr(self, name)}) must be >= 1")


@dataclass(frozen=True)
class ServeConfig:
    """How the server runs.

    - ``upstreams``: base URLs of OpenAI-compatible servers (``http://127.0.0.1:8001``).
    - ``host`` / ``port``: where seqsched listens; loopback unless told otherwise.
    - ``policy``: the interactive queue's order, ``fcfs`` (pass-through, the baseline),
      ``sjf`` (shortest predicted first) or ``ljf``; ``max_bypass``: the aging bound
      (``schedule/queue.py``), no request is overtaken by more than this many later ones.
    - ``max_inflight``: requests forwarded to one upstream at once (its ``max_num_seqs``);
      the rest wait in seqsched's queue, where the policy orders them.
    - ``routing``: ``least-work`` (least predicted tokens outstanding) or ``round-robin``.
    - ``priority``: also send each request's predicted length as vLLM's ``priority``, so
      that vLLM's own preemption evicts the longest-predicted request (``None``: on for
      vLLM upstreams, found from their ``/v1/models``, off for others).
    - ``predictor``: a saved predictor directory (default: the shipped text proxy).
    - ``batch_dir``: where the Files and Batches API keeps files and batches (None: off);
      ``batch_limits``; ``batch_lane``: how batch work fills what interactive traffic
      leaves (``schedule/batch_lane.py``).
    - ``max_request_bytes``, ``max_tokens_limit``: larger bodies and larger ``max_tokens``
      get a 413 and a 400.
    - Client limits: ``header_timeout_s`` (a request's headers), ``body_timeout_s`` (its
      body), ``stall_timeout_s`` (a stream the client stops reading: its upstream call is
      closed), ``max_connections`` (more get a 503).
    - ``connect_timeout_s``, ``upstream_timeout_s``: per upstream call; ``queue_timeout_s``:
      the longest a request may wait for a slot (then 503); ``drain_timeout_s``: on
      SIGTERM, how long requests in flight may take to finish.
    - ``api_key``: clients must send it as ``Authorization: Bearer KEY``;
      ``upstream_api_key``: what seqsched sends upstream (None: the client's header).
    - ``trace_path``: append each served request's prompt, predicted and actual length
      (JSONL that ``seqsched predictor train --target L_served`` reads); ``trace_mode``
      its permissions when created.
    """

    upstreams: tuple[str, ...]
    host: str = "127.0.0.1"
    port: int = 8000
    policy: OnlinePolicy = "sjf"
    slack_s: float = DEFAULT_SLACK_S
    door_kv_blocks: int | None = None  # each upstream's KV cache in blocks of 16: KV-aware admission
    max_bypass: int | None = DEFAULT_MAX_BYPASS
    max_inflight: int = DEFAULT_MAX_INFLIGHT
    routing: Routing = "least-work"
    priority: bool | None = None
    predictor: Path | None = None
    served_model_name: str | None = None
    batch_dir: Path | None = None
    batch_limits: BatchLimits = field(default_factory=BatchLimits)
    batch_lane: BatchLaneConfig = field(default_factory=BatchLaneConfig)
    max_request_bytes: int = 1 << 20
    max_tokens_limit: int | None = None
    header_timeout_s: float = 30.0
    body_timeout_s: float = 60.0
    stall_timeout_s: float = 60.0
    max_connections: int = 8192
    connect_timeout_s: float = 5.0
    upstream_timeout_s: float = 600.0
    queue_timeout_s: float = 600.0
    drain_timeout_s: float = 30.0
    api_key: str | None = None
    upstream_api_key: str | None = None
    trace_path: Path | None = None
    trace_mode: int = 0o600

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
        if self.policy not in ONLINE_POLICIES:
            raise ValueError(f"policy ({self.policy!r}) must be one of {', '.join(ONLINE_POLICIES)}")
        parse_routing(self.routing)  # a clear error for a bad name or weight
        if self.max_bypass is not None and self.max_bypass < 0:
            raise ValueError(f"max_bypass ({self.max_bypass}) must be >= 0 or None")
        for name in ("max_inflight", "max_request_bytes", "max_connections"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} ({getattr(self, name)}) must be >= 1")
        if self.max_tokens_limit is not None and self.max_tokens_limit < 1:
            raise ValueError(f"max_tokens_limit ({self.max_tokens_limit}) must be >= 1")
        if self.batch_lane.headroom >= self.max_inflight:
            raise ValueError(
                f"batch headroom ({self.batch_lane.headroom}) must be below max_inflight ({self.max_inflight}): "
                "batch work would never get a slot"
            )
        for name in ("header_timeout_s", "body_timeout_s", "stall_timeout_s", "connect_timeout_s",
                     "upstream_timeout_s", "queue_timeout_s", "drain_timeout_s"):  # fmt: skip
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} ({value}) must be a positive number of seconds")
        if not 0 <= self.trace_mode <= 0o777:
            raise ValueError(f"trace_mode ({self.trace_mode:o}) must be permissions such as 600")
        for name in ("api_key", "upstream_api_key"):
            key = getattr(self, name)
            if key is not None and (not key or any(c.isspace() for c in key)):
                raise ValueError(f"{name} must be a non-empty string without spaces")

    @property
    def door(self) -> DoorConfig:
        return DoorConfig(self.policy, self.max_bypass, self.routing, self.batch_lane, self.slack_s,
                          kv_blocks=self.door_kv_blocks)  # fmt: skip

    @property
    def is_loopback(self) -> bool:
        return self.host in ("127.0.0.1", "localhost", "::1") or self.host.startswith("127.")
