"""A drop-in request router for Ray Serve apps: ``LengthAwareRouter`` routes each request
with seqsched's scorers (``schedule/scorers.py``), knowing its predicted output length and
which replica saw its prompt's prefix, without seqsched's server.

    from ray.serve.config import RequestRouterConfig

    @serve.deployment(num_replicas=4, request_router_config=RequestRouterConfig(
        request_router_class="seqsched.ray_serve:LengthAwareRouter",
        request_router_kwargs={"routing": "prefix-affinity:1,least-work:1"},
    ))
    class MyLLM: ...

With Ray Serve LLM (``ray[llm]``), the same ``request_router_config`` goes into the
``deployment_config`` of its ``LLMConfig`` (as its docs show for
``PrefixCacheAffinityRouter``).

NOTE on what it reads. A request's prompt is its first argument's ``messages`` (joined
contents) or ``prompt`` attribute, as Ray Serve LLM's ``ChatCompletionRequest`` and
``CompletionRequest`` carry them, or the same keys of a plain OpenAI-shaped dict;
``max_tokens`` (or ``max_completion_tokens``) the same way. The prompt's predicted length
comes from a saved predictor (``predictor``: a directory; the shipped text proxy by
default). A request it cannot read is routed by load alone (predicted length 1, no prefix).

NOTE on state. Each router (Ray makes one per handle, in the process that holds it) keeps
the predicted work of the requests it routed and has not seen complete
(``on_request_routed`` / ``on_request_completed``), and the prefixes it sent each replica.
A replica that dies is forgotten; one that comes back starts with an empty cache. Ray's
own queue-length probes are not used: the scorers read this router's table.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray.serve.request_router import PendingRequest, ReplicaID, RequestRouter, RunningReplica

from seqsched.schedule.prefix import prefix_blocks
from seqsched.schedule.scorers import SCORERS, Routed, Scorer, combine, parse_routing

log = logging.getLogger("seqsched.ray_serve")
DEFAULT_ROUTING = "prefix-affinity:1,least-work:1"


class LengthAwareRouter(RequestRouter):
    def initialize_state(  # type: ignore[override]
        self,
        routing: str = DEFAULT_ROUTING,
        predictor: str | None = None,
        predict: str | None = None,
    ) -> None:
        """``routing``: seqsched's scorers (a name or a weighted mix); ``predictor``: a
        saved predictor directory (default: the shipped proxy); ``predict``: instead, a
        function ``(prompt, max_tokens) -> tokens`` named ``"module:function"`` (Ray wants
        the router's arguments as JSON)."""
        self.mix = parse_routing(routing)
        self.scorers: list[Scorer] = [SCORERS[name]() for name, _ in self.mix]
        self.weights = [weight for _, weight in self.mix]
        self.predict = _imported(predict) if predict else _saved(predictor)
        self.table = ReplicaTable()
        self.routed_requests: dict[str, tuple[int, int]] = {}  # request id -> (replica, predicted work)

    async def choose_replicas(
        self, candidate_replicas: list[RunningReplica], pending_request: PendingRequest | None = None
    ) -> list[list[RunningReplica]]:
        """Candidates ranked by the scorers: the best first, then the rest, in order."""
        if not candidate_replicas:
            return []
        routed = self.routed(pending_request)
        candidates = [self.table.index(r.replica_id) for r in candidate_replicas]
        scores = combine([s.score(self.table, candidates, routed) for s in self.scorers], self.weights)
        order = sorted(range(len(candidates)), key=lambda i: (scores[i], candidates[i]))
        return [[candidate_replicas[i]] for i in order]

    def on_request_routed(self, pending_request: PendingRequest, replica_id: ReplicaID, result: Any) -> None:
        routed = self.routed(pending_request)
        upstream = self.table.index(replica_id)
        for scorer in self.scorers:
            scorer.routed(upstream, routed)
        request_id = _request_id(pending_request)
        if request_id is not None:
            self.routed_requests[request_id] = (upstream, routed.predicted_len)
            self.table.add(upstream, routed.predicted_len)

    def on_request_completed(self, replica_id: ReplicaID, internal_request_id: str) -> None:
        done = self.routed_requests.pop(internal_request_id, None)
        if done is not None:
            self.table.add(done[0], -done[1], -1)

    def on_replica_actor_died(self, replica_id: ReplicaID) -> None:
        super().on_replica_actor_died(replica_id)
        upstream = self.table.index(replica_id)
        self.table.reset(upstream)
        for request_id, (where, _) in list(self.routed_requests.items()):
            if where == upstream:
                del self.routed_requests[request_id]
        for scorer in self.scorers:
            forget = getattr(scorer, "forget", None)
            if forget is not None:
                forget(upstream)

    def routed(self, pending_request: PendingRequest | None) -> Routed:
        """What the scorers know of a request (predicted once, kept on the request)."""
        if pending_request is None:
            return Routed(1)
        known = getattr(pending_request, "_seqsched_routed", None)
        if isinstance(known, Routed):
            return known
        text, max_tokens = prompt_of(pending_request.args[0] if pending_request.args else None)
        if text is None:
            routed = Routed(1)
        else:
            try:
                routed = Routed(max(1, int(self.predict(text, max_tokens))), prefix_blocks(text))
            except Exception:  # a predictor that fails must not stop routing
                log.exception("seqsched: the prediction failed; routing by load alone")
                routed = Routed(1, prefix_blocks(text))
        pending_request._seqsched_routed = routed  # type: ignore[attr-defined]
        return routed


class ReplicaTable:
    """Replicas as the scorers see them (``scorers.Loads``): a stable index each, and the
    predicted work and requests this router has outstanding there."""

    def __init__(self) -> None:
        self.indices: dict[str, int] = {}
        self.works: list[int] = []
        self.counts: list[int] = []

    @property
    def num_upstreams(self) -> int:
        return max(1, len(self.works))

    def index(self, replica_id: ReplicaID) -> int:
        key = replica_id.to_full_id_str()
        if key not in self.indices:
            self.indices[key] = len(self.works)
            self.works.append(0)
            self.counts.append(0)
        return self.indices[key]

    def add(self, upstream: int, work: int, count: int = 1) -> None:
        self.works[upstream] = max(0, self.works[upstream] + work)
        self.counts[upstream] = max(0, self.counts[upstream] + count)

    def reset(self, upstream: int) -> None:
        self.works[upstream] = self.counts[upstream] = 0

    def work(self, upstream: int) -> int:
        return self.works[upstream]

    def running(self, upstream: int | None = None) -> int:
        return sum(self.counts) if upstream is None else self.counts[upstream]


def prompt_of(request: Any) -> tuple[str | None, int | None]:
    """The prompt's text and ``max_tokens`` of a Ray Serve LLM request object or an
    OpenAI-shaped dict; (None, None) when there is none."""

    def field(name: str) -> Any:
        return request.get(name) if isinstance(request, dict) else getattr(request, name, None)

    messages, prompt = field("messages"), field("prompt")
    text: str | None = None
    if isinstance(messages, list):
        parts = []
        for message in messages:
            content = message.get("content") if isinstance(message, dict) else getattr(message, "content", None)
            if isinstance(content, str):
                parts.append(content)
            elif isinstance(content, list):  # content parts: their text
                parts += [p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
        text = "\n".join(parts)
    elif isinstance(prompt, str):
        text = prompt
    elif isinstance(prompt, list) and all(isinstance(p, str) for p in prompt):
        text = "\n".join(prompt)
    limit = field("max_tokens")
    if limit is None:
        limit = field("max_completion_tokens")
    return text, limit if isinstance(limit, int) and not isinstance(limit, bool) else None


def _saved(predictor: str | None) -> Callable[[str, int | None], int]:
    from seqsched.serve.predictor import bounded, load_predict

    loaded = load_predict(Path(predictor) if predictor else None)
    return lambda text, max_tokens: loaded(bounded(text), max_tokens)


def _imported(name: str) -> Callable[[str, int | None], int]:
    module, _, attribute = name.partition(":")
    if not module or not attribute:
        raise ValueError(f"predict ({name!r}) must name a function as 'module:function'")
    function = getattr(importlib.import_module(module), attribute)
    if not callable(function):
        raise ValueError(f"predict ({name!r}) is not a function")
    return function  # type: ignore[no-any-return]


def _request_id(pending_request: PendingRequest) -> str | None:
    metadata = getattr(pending_request, "metadata", None)
    request_id = getattr(metadata, "internal_request_id", None)
    return request_id if isinstance(request_id, str) else None
