"""``seqsched.ray_serve.LengthAwareRouter`` in a plain Ray Serve app of two trivial replicas
(a local Ray, 2 CPUs): requests are answered, and the routing follows predicted work, not
the number of requests, and prefixes; plus the prompt reader on plain data."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from seqsched.ray_serve import prompt_of

LONG = "You are a careful assistant who answers in one line. " * 8  # a shared system prompt


def fake_predict(text: str, max_tokens: int | None) -> int:
    """Known lengths: a prompt says ``tokens N``."""
    return int(text.split("tokens ")[1].split()[0]) if "tokens " in text else 5


def test_the_prompt_is_read_from_ray_serve_llm_requests_and_plain_dicts() -> None:
    chat = SimpleNamespace(messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
                           max_tokens=7)  # fmt: skip
    assert prompt_of(chat) == ("be brief\nhi", 7)
    assert prompt_of(SimpleNamespace(prompt="once upon", max_tokens=None, max_completion_tokens=9)) == ("once upon", 9)
    parts = {"messages": [{"role": "user", "content": [{"type": "text", "text": "look"}]}], "max_tokens": 3}
    assert prompt_of(parts) == ("look", 3)
    assert prompt_of({"prompt": "x", "max_tokens": True}) == ("x", None)
    assert prompt_of(42) == (None, None) and prompt_of({"input": "embed me"}) == (None, None)


@pytest.fixture(scope="module")
def app() -> Iterator[Any]:
    ray = pytest.importorskip("ray")
    serve = pytest.importorskip("ray.serve")
    from ray.serve.config import RequestRouterConfig

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)

    @serve.deployment(
        num_replicas=2,
        max_ongoing_requests=16,
        ray_actor_options={"num_cpus": 0.5},
        request_router_config=RequestRouterConfig(
            request_router_class="seqsched.ray_serve:LengthAwareRouter",
            request_router_kwargs={
                "routing": "prefix-affinity:2,least-work:1",
                "predict": "tests.test_ray_serve_router:fake_predict",
            },
        ),
    )
    class Echo:
        """Answers with its replica's id; a ``hold`` request waits until that file exists."""

        def __init__(self) -> None:
            self.me = serve.get_replica_context().replica_id.unique_id

        async def __call__(self, body: dict[str, Any]) -> str:
            for _ in range(6000):
                if not body.get("hold") or os.path.exists(body["hold"]):
                    break
                await asyncio.sleep(0.01)
            return str(self.me)

    handle = serve.run(Echo.bind(), name="echo", route_prefix=None)
    try:
        yield handle
    finally:
        serve.shutdown()
        ray.shutdown()


def _ask(handle: Any, text: str, hold: Any = None) -> Any:
    body: dict[str, Any] = {"messages": [{"role": "user", "content": text}]}
    if hold is not None:
        body["hold"] = str(hold)
    return handle.remote(body)


def _settle() -> None:
    """Long enough for the router's hooks to have run for what was just sent."""
    threading.Event().wait(1.0)


def test_requests_are_answered_and_follow_predicted_work_not_the_request_count(app: Any, tmp_path: Path) -> None:
    long = _ask(app, "tokens 1000 write a novel", tmp_path / "long")  # one long request on replica A
    _settle()
    shorts = [_ask(app, f"tokens 5 say hi {i}", tmp_path / "shorts") for i in range(3)]  # B: 15 tokens of work
    _settle()
    probe_at = _ask(app, "tokens 5 one more").result(timeout_s=60)  # B: 15 < 1000, though B runs 3 and A 1
    (tmp_path / "long").touch()
    (tmp_path / "shorts").touch()
    long_at = long.result(timeout_s=60)
    shorts_at = {s.result(timeout_s=60) for s in shorts}
    assert len(shorts_at) == 1 and long_at not in shorts_at
    assert probe_at in shorts_at, "routed by predicted work, where a queue-length router would pick the other"


def test_a_shared_prefix_goes_back_to_the_replica_that_saw_it_though_it_is_busier(app: Any, tmp_path: Path) -> None:
    small = _ask(app, "tokens 50 a held answer", tmp_path / "small")  # replica B: 50 tokens of work
    _settle()
    where = _ask(app, LONG + "tokens 5 first question").result(timeout_s=60)  # A (0 < 50): A holds the prefix
    _settle()
    big = _ask(app, "tokens 500 a long held answer", tmp_path / "big")  # A again (about 0 < 50): A has 500 now
    _settle()
    again = _ask(app, LONG + "tokens 5 second question").result(timeout_s=60)
    (tmp_path / "small").touch()
    (tmp_path / "big").touch()
    small_at, big_at = small.result(timeout_s=60), big.result(timeout_s=60)
    assert where != small_at and big_at == where, "by predicted work"
    assert again == where, "the prefix's replica, though least work alone would pick the other (500 against 50)"
