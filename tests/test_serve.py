"""`seqsched serve` against a fake upstream: the OpenAI surface, order, and every fault a
server owes its clients an answer for. The real vLLM is in test_serve_vllm.py."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from seqsched.serve.config import ServeConfig
from tests.serve_helpers import FakeUpstream, free_port, healthy, running
from tests.serve_helpers import chat as _chat
from tests.serve_helpers import fake_predict as _predict
from tests.serve_helpers import metric as _metric
from tests.serve_helpers import serving as _serving
from tests.serve_helpers import wait_for as _wait_for


def test_chat_and_completions_pass_through_streamed_and_not(tmp_path: Path) -> None:
    from openai import OpenAI

    fake = FakeUpstream()
    with _serving(fake, trace_path=tmp_path / "served.jsonl") as url:
        client = OpenAI(base_url=f"{url}/v1", api_key="none")
        answer = client.chat.completions.create(model="fake", messages=[{"role": "user", "content": "tokens 4"}])
        assert answer.choices[0].message.content == "xxxx" and answer.usage is not None
        assert answer.usage.completion_tokens == 4
        text = client.completions.create(model="fake", prompt="tokens 2", max_tokens=2)
        assert text.choices[0].text == "xx" and text.choices[0].finish_reason == "length"
        messages = [{"role": "user", "content": "tokens 5"}]
        chunks = list(client.chat.completions.create(model="fake", messages=messages, stream=True))  # type: ignore[arg-type]
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "xxxxx"
        assert all(c.usage is None for c in chunks), "usage the client did not ask for is not passed on"
        usage = {"include_usage": True}
        chunks = list(client.completions.create(model="fake", prompt="tokens 3", stream=True, stream_options=usage))
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3
        assert [m.id for m in client.models.list().data] == ["fake"]
        assert httpx.get(f"{url}/health").json()["status"] == "ok"
        metrics = httpx.get(f"{url}/metrics").text
    assert 'seqsched_requests_total{endpoint="chat",status="200"} 2.0' in metrics
    assert 'seqsched_requests_total{endpoint="completions",status="200"} 2.0' in metrics
    assert "seqsched_queue_length 0.0" in metrics and "seqsched_e2e_seconds_count 4.0" in metrics
    assert all(body.get("priority") == _predict(_text(body), None) for body in fake.received)
    from seqsched.data.traces import read_trace

    trace = read_trace(tmp_path / "served.jsonl")
    assert sorted(trace.actual("L_served")) == [2, 3, 4, 5]
    assert {r.text for r in trace} == {"tokens 4", "tokens 2", "tokens 5", "tokens 3"}


def _text(body: dict[str, Any]) -> str:
    return str(body["messages"][-1]["content"] if "messages" in body else body["prompt"])


def _behind_a_blocker(
    url: str, fake: FakeUpstream, blocker: str, prompts: list[str], queued: int | None = None
) -> None:
    """A ``hold`` request takes a slot; ``prompts`` arrive one by one (each sent once the one
    before is in); the blocker is let go once ``queued`` of them wait in seqsched's queue."""
    first = threading.Thread(target=_chat, args=(url, f"hold {blocker}"))
    first.start()
    _wait_for(lambda: len(fake.received) == 1, "the blocker to reach the upstream")
    threads = []
    for k, prompt in enumerate(prompts, start=1):
        threads.append(threading.Thread(target=_chat, args=(url, prompt)))
        threads[-1].start()
        # k prompts and the blocker predicted: the k-th is in before the next is sent
        _wait_for(lambda k=k: _in_seqsched(url) >= k + 1, "a request to arrive")  # type: ignore[misc]
    _wait_for(lambda: _queued(url) >= (len(prompts) if queued is None else queued), "the requests to queue")
    fake.gate.set()
    for t in [first, *threads]:
        t.join()


def _queued(url: str) -> float:
    return _metric(url, "seqsched_queue_length")


def _in_seqsched(url: str) -> float:
    """Requests seqsched has taken in: predicted so far (its predict-time histogram count)."""
    return _metric(url, "seqsched_predict_seconds_count")


def test_with_one_slot_a_burst_is_forwarded_shortest_predicted_first() -> None:
    fake = FakeUpstream(seconds_per_token=0.02)
    with _serving(fake, max_inflight=1, policy="sjf") as url:
        _behind_a_blocker(url, fake, "tokens 40", [f"tokens {n} #{i}" for i, n in enumerate([9, 3, 7, 1, 5, 3])])
    order = [_text(b) for b in fake.received[1:]]
    assert order == ["tokens 1 #3", "tokens 3 #1", "tokens 3 #5", "tokens 5 #4", "tokens 7 #2", "tokens 9 #0"]


def test_fcfs_passes_through_in_arrival_order_without_priorities() -> None:
    fake = FakeUpstream(seconds_per_token=0.02)
    with _serving(fake, max_inflight=1, policy="fcfs") as url:
        _behind_a_blocker(url, fake, "tokens 30", ["tokens 9", "tokens 1", "tokens 5"])
    assert [_text(b) for b in fake.received] == ["hold tokens 30", "tokens 9", "tokens 1", "tokens 5"]
    assert all("priority" not in b for b in fake.received)


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"[1, 2]", 400, "must be a JSON object"),
        (json.dumps({"model": "fake", "messages": []}).encode(), 400, "'messages' must be a non-empty list"),
        (json.dumps({"model": "fake", "messages": [{"content": "hi"}]}).encode(), 400, "messages[0] must be an object"),
        (json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}).encode(), 400, "'max_tokens'"),
        (json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 999}).encode(), 400, "limit (100)"),
        (json.dumps({"messages": [{"role": "user", "content": "hi"}], "stream": "yes"}).encode(), 400, "'stream'"),
        (b"x" * 5000, 413, "over the limit (4096 bytes)"),
    ],
)
def test_a_bad_request_gets_openais_error_shape(body: bytes, status: int, message: str) -> None:
    fake = FakeUpstream()
    with _serving(fake, max_tokens_limit=100, max_request_bytes=4096) as url:
        answer = httpx.post(f"{url}/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == status
    error = answer.json()["error"]
    assert message in error["message"] and error["type"] == "invalid_request_error"
    assert fake.received == []


def test_a_completion_prompt_must_be_one_string() -> None:
    with _serving(FakeUpstream()) as url:
        answer = httpx.post(f"{url}/v1/completions", json={"model": "fake", "prompt": ["a", "b"]})
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "prompt"


def test_an_upstream_that_is_down_gets_a_503_naming_it() -> None:
    down = f"http://127.0.0.1:{free_port()}"
    with _serving(down) as url:
        answer = _chat(url, "tokens 3")
        assert answer.status_code == 503
        assert f"upstream {down} is not reachable" in answer.json()["error"]["message"]
        assert _chat(url, "tokens 3").status_code == 503, "the slot came back after the failure"


def test_a_request_moves_to_another_upstream_when_one_is_down() -> None:
    fake = FakeUpstream()
    down = f"http://127.0.0.1:{free_port()}"
    with _serving(down, fake, routing="round-robin") as url:
        answers = [_chat(url, f"tokens {n}") for n in (1, 2, 3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert len(fake.received) == 3


def test_an_upstream_500_is_a_502_and_a_slow_one_a_504() -> None:
    with _serving(FakeUpstream(), upstream_timeout_s=0.5) as url:
        failed, slow = _chat(url, "fail"), _chat(url, "slow")
        assert failed.status_code == 502 and "answered 500" in failed.json()["error"]["message"]
        assert slow.status_code == 504 and "did not answer in time" in slow.json()["error"]["message"]
        assert _chat(url, "tokens 2").status_code == 200


def test_an_upstream_dying_mid_stream_ends_the_stream_with_an_error_event() -> None:
    with _serving(FakeUpstream()) as url:
        payload = {"model": "fake", "messages": [{"role": "user", "content": "die tokens 6"}], "stream": True}
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=payload, timeout=30) as answer:
            lines = [line for line in answer.iter_lines() if line.startswith("data: ")]
        assert answer.status_code == 200
        assert len(lines) == 3 and "ended the stream" in json.loads(lines[-1][6:])["error"]["message"]
        assert _chat(url, "tokens 2").status_code == 200


def test_a_client_that_leaves_mid_stream_has_its_upstream_call_closed() -> None:
    fake = FakeUpstream(seconds_per_token=0.05)
    with _serving(fake, max_inflight=1) as url:
        payload = {"model": "fake", "messages": [{"role": "user", "content": "tokens 200"}], "stream": True}
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=payload, timeout=30) as answer:
            for line in answer.iter_lines():
                if line.startswith("data: "):
                    break  # the client goes after its first token
        _wait_for(lambda: fake.aborted == ["tokens 200"], "the upstream stream to be closed")
        assert _chat(url, "tokens 1").status_code == 200, "its slot is free again"
    assert "tokens 200" not in fake.finished


def test_a_client_that_leaves_while_queued_is_never_sent_upstream() -> None:
    fake = FakeUpstream(seconds_per_token=0.02)
    with _serving(fake, max_inflight=1) as url:
        blocker = threading.Thread(target=_chat, args=(url, "tokens 50"))
        blocker.start()
        time.sleep(0.3)
        with pytest.raises(httpx.ReadTimeout):
            _post_with_timeout(url, "tokens 2 gone", 0.3)
        _wait_for(lambda: "seqsched_queue_length 0.0" in httpx.get(f"{url}/metrics").text, "the queue to empty")
        blocker.join()
        assert _chat(url, "tokens 1").status_code == 200
    assert [_text(b) for b in fake.received] == ["tokens 50", "tokens 1"]


def test_priority_is_sent_to_vllm_only_and_dropped_when_vllm_refuses_it() -> None:
    other = FakeUpstream(vllm=False)
    with _serving(other) as url:
        assert _chat(url, "tokens 2").status_code == 200
    assert "priority" not in other.received[0]
    fcfs_vllm = FakeUpstream(reject_priority=True)
    with _serving(fcfs_vllm) as url:
        assert _chat(url, "tokens 2").status_code == 200
        assert _chat(url, "tokens 3").status_code == 200
    assert [("priority" in b) for b in fcfs_vllm.received] == [False, False]


def test_least_work_routing_sends_new_requests_away_from_long_ones() -> None:
    a, b = FakeUpstream(seconds_per_token=0.02), FakeUpstream(seconds_per_token=0.02)
    with _serving(a, b, max_inflight=4, routing="least-work") as url:
        _behind_a_blocker(url, a, "tokens 60", ["tokens 10"] * 3, queued=0)
    assert [_text(x) for x in a.received] == ["hold tokens 60"]
    assert len(b.received) == 3


def test_sigterm_stops_taking_requests_and_drains_those_in_flight(tmp_path: Path) -> None:
    fake = FakeUpstream(seconds_per_token=0.02)
    with running(fake.app()) as upstream:
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "seqsched", "serve", "--upstream", upstream, "--port", str(port)]
        )
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_for(lambda: healthy(url), "seqsched serve to start", timeout=60)
            results: list[int] = []
            t = threading.Thread(target=lambda: results.append(_chat(url, "tokens 100").status_code))
            t.start()
            _wait_for(lambda: len(fake.received) == 1, "the request to reach the upstream")
            process.send_signal(signal.SIGTERM)
            t.join(30)
            assert results == [200], "the request in flight finished"
            assert process.wait(30) == 0
        finally:
            if process.poll() is None:
                process.kill()
        assert not healthy(url), "nothing listens after the drain"


def test_serve_refuses_bad_options_before_starting(tmp_path: Path) -> None:
    from seqsched.cli import main

    assert main(["serve", "--upstream", "localhost:8000"]) == 2
    assert main(["serve", "--upstream", "http://127.0.0.1:1", "--predictor", str(tmp_path / "none")]) == 2
    assert main(["serve", "--upstream", "http://127.0.0.1:1", "--max-inflight", "0"]) == 2


def test_serve_listens_on_loopback_unless_told() -> None:
    assert ServeConfig(upstreams=("http://127.0.0.1:1",)).host == "127.0.0.1"


def _post_with_timeout(url: str, content: str, timeout: float) -> httpx.Response:
    payload = {"model": "fake", "messages": [{"role": "user", "content": content}]}
    return httpx.post(f"{url}/v1/chat/completions", json=payload, timeout=timeout)


@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")


def test_arrivals_are_predicted_together_off_the_event_loop() -> None:
    from seqsched.serve.predictor import Batcher

    calls: list[int] = []

    class Counting:
        def __call__(self, text: str, max_tokens: int | None) -> int:
            return self.many([(text, max_tokens)])[0]

        def many(self, items: list[tuple[str, int | None]]) -> list[int]:
            calls.append(len(items))
            time.sleep(0.05)  # a slow predictor: the loop must not wait on it
            return [len(text) for text, _ in items]

    async def burst() -> list[int]:
        batcher = Batcher(Counting())
        return await asyncio.gather(*(batcher.predict("x" * n, None) for n in range(1, 21)))

    assert asyncio.run(burst()) == list(range(1, 21))
    assert calls == [20], "twenty arrivals in one tick: one call"
