"""A fake OpenAI upstream and a way to run ASGI apps on loopback, for the server's tests.

The fake answers by what the prompt says: ``slow`` waits before answering, ``hold`` waits
until the test opens ``gate``, ``wait:KEY`` until the test adds KEY to ``released``,
``slowerror`` answers 400 with a body that takes seconds to arrive, ``badusage`` answers
200 with a ``usage`` that is a list, ``gzip`` answers gzip-compressed whatever was asked,
``priority-word`` refuses the request with a 400 that mentions priority, ``sleep:S`` waits S
seconds before answering, ``die`` ends
its stream after two chunks without closing it properly, ``fail`` answers 500, ``tokens
N`` streams N tokens (``N`` also sets ``usage.completion_tokens``). ``flaky:KIND:K`` fails
the first K calls for that prompt (a continuation included), then answers: KIND is a status
(``500``, ``429``, ``408``, ...), ``cut`` (a stream that ends, [DONE] and all, without a
``finish_reason``), ``malformed`` (an event that is not JSON), ``reset`` (the connection
dropped mid-stream), ``hang`` (no byte, ever) or ``endless`` (tokens forever, no finish).
Not streamed, it answers as vLLM does:
``n`` choices, each with its index, ``logprobs`` when asked, a tool call when given tools.
It records each request it was sent (the body, in arrival order) and each stream its
client closed."""

from __future__ import annotations

import asyncio
import gzip
import json
import random
import re
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from seqsched.serve.launch import free_port

__all__ = ["FakeUpstream", "chat", "fake_predict", "free_port", "metric", "running", "serving", "wait_for"]


@dataclass
class FakeUpstream:
    vllm: bool = True
    reject_priority: bool = False  # a vLLM started without the priority policy
    seconds_per_token: float = 0.01
    received: list[dict[str, Any]] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)  # prompts answered in full
    aborted: list[str] = field(default_factory=list)  # prompts whose stream the client closed
    gate: threading.Event = field(default_factory=threading.Event)  # a ``hold`` prompt waits for it
    released: set[str] = field(default_factory=set)  # a ``wait:KEY`` prompt waits for its KEY here
    headers: list[dict[str, str]] = field(default_factory=list)  # each request's headers, in arrival order
    attempts: dict[str, int] = field(default_factory=dict)  # calls per ``flaky:`` prompt
    chaos: float = 0.0  # a prompt with ``chaos`` in it fails this share of its calls (any fault kind) ...
    hang: float = 0.0  # ... and hangs this share
    seed: int = 0
    faults: dict[str, int] = field(default_factory=dict)  # chaos's faults, by kind
    preemptions: float = 0.0  # what its /metrics reports as vLLM's preemption count

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def app(self) -> Starlette:
        async def models(request: Request) -> Response:
            owner = "vllm" if self.vllm else "someone"
            return JSONResponse({"object": "list", "data": [{"id": "fake", "object": "model", "owned_by": owner}]})

        async def health(request: Request) -> Response:
            return JSONResponse({})

        async def metrics(request: Request) -> Response:  # as vLLM's, one engine
            lines = [f'vllm:num_preemptions_total{{engine="0",model_name="fake"}} {self.preemptions:.1f}']
            return Response("\n".join(lines) + "\n", media_type="text/plain")

        async def chat(request: Request) -> Response:
            return await self._answer(request, chat=True)

        async def completions(request: Request) -> Response:
            return await self._answer(request, chat=False)

        return Starlette(
            routes=[
                Route("/v1/models", models),
                Route("/health", health),
                Route("/metrics", metrics),
                Route("/v1/chat/completions", chat, methods=["POST"]),
                Route("/v1/completions", completions, methods=["POST"]),
            ]
        )

    async def _answer(self, request: Request, chat: bool) -> Response:
        body = await request.json()
        self.headers.append(dict(request.headers))
        if self.reject_priority and "priority" in body:
            message = (
                f"Got priority {body['priority']} but Priority scheduling is not enabled."  # an older vLLM's words
            )
            return JSONResponse({"error": {"message": message, "type": "BadRequestError", "code": 400}}, 400)
        self.received.append(body)
        text, done = _prompt(body, chat)
        n = int(text.split("tokens ")[1].split()[0]) if "tokens " in text else 3
        n = min(n, done + (body.get("max_tokens") or n))
        if "chaos" in text and (self.chaos or self.hang):
            draw = self._rng.random()
            kind = self._rng.choice(CHAOS) if draw < self.chaos else "hang" if draw < self.chaos + self.hang else None
            if kind is not None:
                self.faults[kind] = self.faults.get(kind, 0) + 1
                return await _fault(kind, chat, body)
        flaky = re.search(r"flaky:(\w+):(\d+)", text)
        if flaky is not None:
            self.attempts[text] = self.attempts.get(text, 0) + 1
            if self.attempts[text] <= int(flaky.group(2)):
                return await _fault(flaky.group(1), chat, body)
        if "fail" in text:
            return JSONResponse({"error": {"message": "boom"}}, 500)
        if "slowerror" in text:
            return StreamingResponse(_slowly(b'{"error": {"message": "bad request, slowly"}}'), 400,
                                     media_type="application/json")  # fmt: skip
        if "priority-word" in text:
            message = "'priorityx' is not a field; did you mean priority?"  # a client's mistake, not vLLM's refusal
            return JSONResponse({"error": {"message": message, "type": "BadRequestError", "code": 400}}, 400)
        if "badusage" in text:
            answer = _completion(chat, "x" * n, n, finish="stop")
            answer["usage"] = [n]
            return JSONResponse(answer)
        if "slow" in text:
            await asyncio.sleep(3)
        if "sleep:" in text:
            await asyncio.sleep(float(text.split("sleep:")[1].split()[0]))
        while "hold" in text and not self.gate.is_set():
            await asyncio.sleep(0.01)
        key = text.split("wait:")[1].split()[0] if "wait:" in text else None
        while key is not None and key not in self.released:
            await asyncio.sleep(0.005)
        if not body.get("stream"):
            await asyncio.sleep(n * self.seconds_per_token)
            self.finished.append(text)
            finish = "length" if n == body.get("max_tokens") else "stop"
            return JSONResponse(_completion(chat, "x" * n, n, finish=finish, body=body))
        if body.get("return_token_ids"):  # as vLLM streams with return_token_ids: ids, resumable
            return StreamingResponse(self._ids(chat, text, done, n, body), media_type="text/event-stream")
        if "gzip" in text:
            raw = b"".join([chunk async for chunk in self._stream(chat, text, n, body)])
            return Response(gzip.compress(raw), media_type="text/event-stream", headers={"Content-Encoding": "gzip"})
        return StreamingResponse(self._stream(chat, text, n, body), media_type="text/event-stream")

    async def _stream(self, chat: bool, text: str, n: int, body: dict[str, Any]) -> AsyncIterator[bytes]:
        try:
            for i in range(n):
                await asyncio.sleep(self.seconds_per_token)
                if "die" in text and i == 2:
                    raise RuntimeError("the fake upstream dies mid-stream")
                delta = {"delta": {"content": "x"}} if chat else {"text": "x"}
                yield _sse({"id": "c", "object": "chunk", "choices": [{"index": 0, **delta, "finish_reason": None}]})
            yield _sse({"id": "c", "choices": [{"index": 0, "delta": {}, "text": "", "finish_reason": "stop"}]})
            if (body.get("stream_options") or {}).get("include_usage"):
                yield _sse({"id": "c", "choices": [], "usage": {"completion_tokens": n, "prompt_tokens": 1}})
            yield b"data: [DONE]\n\n"
            self.finished.append(text)
        except asyncio.CancelledError:
            self.aborted.append(text)
            raise

    async def _ids(self, chat: bool, text: str, done: int, n: int, body: dict[str, Any]) -> AsyncIterator[bytes]:
        """Tokens ``done`` to ``n``: token ``i`` is id ``OUTPUT_ID + i``, text ``letter(i)``
        (the same whatever call makes it: a continued request must equal an uninterrupted one)."""
        prompt_ids = body["prompt"] if isinstance(body.get("prompt"), list) else [ord(c) for c in text]
        limit = done + body["max_tokens"] if body.get("max_tokens") else None
        try:
            if chat:
                yield _sse({"id": "c", "created": 1, "model": "fake", "prompt_token_ids": prompt_ids,
                            "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                         "finish_reason": None}]})  # fmt: skip
            for i in range(done, n):
                await asyncio.sleep(self.seconds_per_token)
                last = i == n - 1
                finish = ("length" if limit == n else "stop") if last else None
                choice: dict[str, Any] = {"index": 0, "finish_reason": finish, "token_ids": [OUTPUT_ID + i]}
                choice |= {"delta": {"content": letter(i)}} if chat else {"text": letter(i)}
                if not chat and i == done:
                    choice["prompt_token_ids"] = prompt_ids
                yield _sse({"id": "c", "created": 1, "model": "fake", "choices": [choice]})
            yield _sse({"id": "c", "choices": [], "usage": {"completion_tokens": n - done, "prompt_tokens": 1}})
            yield b"data: [DONE]\n\n"
            self.finished.append(text)
        except asyncio.CancelledError:
            self.aborted.append(text)
            raise


CHAOS = ("500", "503", "429", "408", "cut", "malformed", "reset")  # the faults ``chaos`` draws from
OUTPUT_ID = 100_000  # the fake's output token ids start here; below it, a prompt's characters


def letter(i: int) -> str:
    return chr(ord("a") + i % 26)


def _prompt(body: dict[str, Any], chat: bool) -> tuple[str, int]:
    """The prompt's text, and how many output tokens it already holds (a continuation's
    prompt of token ids: the characters, then the output ids)."""
    if chat:
        return str(body["messages"][-1]["content"]), 0
    prompt = body["prompt"]
    if isinstance(prompt, list):
        return "".join(chr(i) for i in prompt if i < OUTPUT_ID), sum(1 for i in prompt if i >= OUTPUT_ID)
    return str(prompt), 0


async def _slowly(content: bytes) -> AsyncIterator[bytes]:
    for i in range(0, len(content), 8):
        await asyncio.sleep(0.3)
        yield content[i : i + 8]


def _sse(obj: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(obj)}\n\n".encode()


def _completion(chat: bool, text: str, n: int, finish: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    body = body or {}
    choices = []
    for index in range(int(body.get("n") or 1)):
        choice: dict[str, Any] = {"index": index, "finish_reason": finish, "logprobs": None}
        piece = text if index == 0 else f"{text}{index}"
        choice |= {"message": {"role": "assistant", "content": piece}} if chat else {"text": piece}
        if body.get("logprobs"):
            tokens = [{"token": c, "logprob": -0.5 - i, "bytes": [ord(c)]} for i, c in enumerate(piece)]
            choice["logprobs"] = {"content": tokens} if chat else {"tokens": list(piece), "token_logprobs": [-0.5] * n}
        if chat and body.get("tools"):
            name = body["tools"][0]["function"]["name"]
            choice["message"] = {"role": "assistant", "content": None, "reasoning_content": "think first",
                                 "tool_calls": [{"id": f"call_{index}", "type": "function",
                                                 "function": {"name": name, "arguments": '{"x": 1}'}}]}  # fmt: skip
            choice["finish_reason"] = "tool_calls"
        choices.append(choice)
    usage = {"prompt_tokens": 1, "completion_tokens": n * len(choices), "total_tokens": n * len(choices) + 1}
    kind = "chat.completion" if chat else "text_completion"
    return {"id": "c", "object": kind, "model": "fake", "choices": choices, "usage": usage}


async def _fault(kind: str, chat: bool, body: dict[str, Any]) -> Response:
    """One failed call of a ``flaky:KIND:K`` prompt."""
    if kind.isdigit():
        return JSONResponse({"error": {"message": f"flaky {kind}"}}, int(kind))
    if kind == "hang":
        await asyncio.sleep(3600)
    if not body.get("stream"):
        return Response(b'{"choices": [', media_type="application/json")  # cut short: not JSON

    async def events() -> AsyncIterator[bytes]:
        for i in range(2):
            await asyncio.sleep(0.01)
            choice: dict[str, Any] = {"index": 0, "finish_reason": None, "token_ids": [OUTPUT_ID + i]}
            choice |= {"delta": {"content": letter(i)}} if chat else {"text": letter(i)}
            yield _sse({"id": "c", "created": 1, "model": "fake", "choices": [choice]})
        while kind == "endless":  # tokens forever, never a finish (until the client closes)
            await asyncio.sleep(0.001)
            choice = {"index": 0, "finish_reason": None, "token_ids": [OUTPUT_ID]}
            choice |= {"delta": {"content": "z"}} if chat else {"text": "z"}
            yield _sse({"id": "c", "created": 1, "model": "fake", "choices": [choice]})
        if kind == "malformed":
            yield b"data: {not json\n\n"
        elif kind == "reset":
            raise RuntimeError("the fake upstream resets the connection")
        yield b"data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


@contextmanager
def running(app: Any, drain_s: int = 5, port: int | None = None) -> Iterator[str]:
    """Serve ``app`` on a loopback port (a free one unless given) in a thread; yield its base URL."""
    port = port or free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", timeout_graceful_shutdown=drain_s)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the test server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def fake_predict(text: str, max_tokens: int | None) -> int:
    """A perfect predictor for the fake's prompts (``tokens N``)."""
    return int(text.split("tokens ")[1].split()[0]) if "tokens " in text else 3


@contextmanager
def serving(*fakes: FakeUpstream | str, predict: Any = fake_predict, **options: Any) -> Iterator[str]:
    """seqsched in front of the fakes (or of plain URLs: nothing there); yield its URL."""
    from seqsched.serve.app import build_app
    from seqsched.serve.config import ServeConfig

    with _upstream_urls(list(fakes)) as urls:
        config = ServeConfig(upstreams=tuple(urls), **options)
        with running(build_app(config, predict)) as url:
            yield url


@contextmanager
def _upstream_urls(fakes: list[FakeUpstream | str]) -> Iterator[list[str]]:
    if not fakes:
        yield []
        return
    first, *rest = fakes
    if isinstance(first, str):
        with _upstream_urls(rest) as others:
            yield [first, *others]
        return
    with running(first.app()) as url, _upstream_urls(rest) as others:
        yield [url, *others]


def chat(url: str, content: str, timeout: float = 30, **body: Any) -> httpx.Response:
    payload = {"model": "fake", "messages": [{"role": "user", "content": content}], **body}
    return httpx.post(f"{url}/v1/chat/completions", json=payload, timeout=timeout)


def metric(url: str, name: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def wait_for(condition: Any, what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def healthy(url: str) -> bool:
    """Whether a server answers ``/health`` with 200."""
    try:
        return httpx.get(f"{url}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def seqsched_serve(*args: str, timeout: float = 120) -> Iterator[str]:
    """`seqsched serve ARGS` as users run it, in a process of its own, on a free loopback
    port; yield its URL once healthy, and stop it after."""
    import subprocess
    import sys

    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "seqsched", "serve", "--port", str(port), *args],
                               stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: healthy(url), "seqsched serve to start", timeout)
        yield url
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(30)


class KillableServe:
    """`seqsched serve ARGS` on a loopback port of its own that a test kills with -9 and
    starts again on the same port (and the same --batch-dir)."""

    def __init__(self, *args: str, timeout: float = 120) -> None:
        import sys

        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.command = [sys.executable, "-m", "seqsched", "serve", "--port", str(port), *args]
        self.timeout = timeout
        self.process: Any = None

    def start(self) -> None:
        import subprocess

        self.process = subprocess.Popen(self.command, stderr=subprocess.DEVNULL)
        wait_for(lambda: healthy(self.url), "seqsched serve to start", self.timeout)

    def kill(self) -> None:
        """SIGKILL: nothing of the server's own shutdown runs."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@contextmanager
def killable_serve(*args: str, timeout: float = 120) -> Iterator[KillableServe]:
    """A started :class:`KillableServe`, killed after."""
    server = KillableServe(*args, timeout=timeout)
    try:
        server.start()
        yield server
    finally:
        server.kill()
