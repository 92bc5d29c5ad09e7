"""`seqsched serve`'s ASGI app: OpenAI's chat and completions in front of OpenAI-compatible
upstreams, each request predicted on arrival and dispatched in the queue's order.

NOTE on what a route does. It reads and checks the body (``protocol.py``), predicts the
response's length (the shipped proxy: well under a millisecond), and waits for the
dispatcher to grant it an upstream slot; the queue in ``schedule/`` decides who goes next,
never the route. Then it forwards the body (with vLLM's ``priority`` when the upstream
takes it), streams or returns the answer, records predicted against actual length, and
gives the slot back, however the request ends. A client that leaves, while waiting or
while its answer is generated, leaves the queue or has its upstream call closed, which
makes vLLM abort it: no compute is spent on nobody.

Failures: an upstream that cannot be reached is retried on another one while nothing has
been sent to the client, then answered 503; a 5xx from upstream is a 502; an upstream
that dies mid-stream ends the stream with an error event; a slow one, past
``upstream_timeout_s``, a 504. Upstream 4xx answers (its own validation) pass through.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from seqsched.schedule.queue import WaitingQueue
from seqsched.schedule.route import Router
from seqsched.serve.config import ServeConfig
from seqsched.serve.dispatcher import Dispatcher, Ticket
from seqsched.serve.metrics import ServeMetrics
from seqsched.serve.predictor import Batcher
from seqsched.serve.protocol import ApiError, Endpoint, ParsedRequest, error_body, parse_body
from seqsched.serve.trace import ServedTrace

Predict = Callable[[str, int | None], int]  # (prompt text, max_tokens) -> predicted output tokens
_PATHS: dict[Endpoint, str] = {"chat": "/v1/chat/completions", "completions": "/v1/completions"}
_UNREACHABLE = (httpx.ConnectError, httpx.ConnectTimeout)


@dataclass
class Upstream:
    url: str
    priority: bool  # send vLLM's ``priority``
    models: list[dict[str, Any]] = field(default_factory=list)


class Unreachable(Exception):
    """No upstream could be reached for a request."""


class Server:
    """The state one app owns: its upstreams, dispatcher, metrics and HTTP client."""

    def __init__(self, config: ServeConfig, predict: Predict, upstreams: list[Upstream]) -> None:
        self.config = config
        self.predictions = Batcher(predict)
        self.upstreams = upstreams
        queue: WaitingQueue[Ticket] = WaitingQueue(config.policy, config.max_bypass)
        self.dispatcher = Dispatcher(queue, Router([config.max_inflight] * len(upstreams), config.routing))
        self.metrics = ServeMetrics()
        self.trace = ServedTrace(config.trace_path) if config.trace_path is not None else None
        timeout = httpx.Timeout(config.upstream_timeout_s, connect=config.connect_timeout_s)
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=config.max_inflight * len(upstreams))
        self.client = httpx.AsyncClient(timeout=timeout, limits=limits)
        self.draining = False

    async def close(self) -> None:
        await self.client.aclose()
        if self.trace is not None:
            self.trace.close()


def build_app(config: ServeConfig, predict: Predict, upstreams: list[Upstream] | None = None) -> Starlette:
    """The ASGI app. ``upstreams`` as found by :func:`discover` (default: each URL with
    ``priority`` as configured, off when unknown)."""
    found = upstreams or [Upstream(url, bool(config.priority)) for url in config.upstreams]
    server = Server(config, predict, found)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            server.draining = True
            await server.close()

    async def chat(request: HttpRequest) -> Response:
        return await _handle(server, request, "chat")

    async def completions(request: HttpRequest) -> Response:
        return await _handle(server, request, "completions")

    async def models(request: HttpRequest) -> Response:
        data = [m for u in server.upstreams for m in u.models]
        return JSONResponse({"object": "list", "data": data})

    async def health(request: HttpRequest) -> Response:
        status = "draining" if server.draining else "ok"
        body = {"status": status, "waiting": server.dispatcher.num_waiting, "upstreams": [u.url for u in found]}
        return JSONResponse(body, status_code=503 if server.draining else 200)

    async def metrics(request: HttpRequest) -> Response:
        server.metrics.waiting.set(server.dispatcher.num_waiting)
        return Response(server.metrics.render(), media_type="text/plain; version=0.0.4")

    routes = [
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.server = server
    return app


async def discover(config: ServeConfig) -> list[Upstream]:
    """Each upstream's models, and whether it is vLLM (so it takes ``priority``)."""
    found = []
    async with httpx.AsyncClient(timeout=config.connect_timeout_s) as client:
        for url in config.upstreams:
            try:
                answer = await client.get(f"{url}/v1/models")
                models = answer.json().get("data", []) if answer.status_code == 200 else []
            except (httpx.HTTPError, ValueError):
                models = []
            is_vllm = any(m.get("owned_by") == "vllm" for m in models if isinstance(m, dict))
            priority = is_vllm if config.priority is None else config.priority
            found.append(Upstream(url, priority, [m for m in models if isinstance(m, dict)]))
    return found


async def _handle(server: Server, request: HttpRequest, endpoint: Endpoint) -> Response:
    started = time.perf_counter()
    try:
        raw = await _read_body(request, server.config.max_request_bytes)
        parsed = parse_body(raw, endpoint, server.config.max_tokens_limit)
        if server.draining:
            raise ApiError(503, "the server is shutting down", kind="service_unavailable")
    except ApiError as e:
        server.metrics.requests.labels(endpoint, str(e.status)).inc()
        return JSONResponse(e.body(), status_code=e.status)
    t0 = time.perf_counter()
    predicted = await server.predictions.predict(parsed.text, parsed.max_tokens)
    server.metrics.predict_seconds.observe(time.perf_counter() - t0)
    server.metrics.predicted.observe(predicted)
    ticket = Ticket(f"seqsched-{uuid.uuid4().hex}", predicted)
    call = _Call(server, endpoint, parsed, ticket, started)
    if parsed.stream:
        opened = await _until_disconnect(request, call.open_stream())
        if opened is None:
            return Response(status_code=499)
        if isinstance(opened, Response):
            return opened
        return _Relay(call, opened)
    answered = await _until_disconnect(request, call.complete())
    return answered if answered is not None else Response(status_code=499)


class _Call:
    """One request's trip upstream: a slot, the call (retried elsewhere while nothing was
    sent), the answer, the metrics, and the slot given back."""

    def __init__(self, server: Server, endpoint: Endpoint, parsed: ParsedRequest, ticket: Ticket, started: float):
        self.server, self.endpoint, self.parsed, self.ticket, self.started = server, endpoint, parsed, ticket, started
        self._closed = False
        self._stream_status = "499"

    async def complete(self) -> Response:
        try:
            answer = await self._send(stream=False)
        except ApiError as e:
            return self._refuse(e)
        try:
            status, content = answer.status_code, answer.content
        finally:
            await answer.aclose()
            self._done()
        if status >= 500:
            return self._refuse(self._bad_gateway(status, content))
        if status == 200:
            self._record(_usage_tokens(content), _finish_reason(content))
        self.server.metrics.requests.labels(self.endpoint, str(status)).inc()
        return Response(content, status_code=status, media_type="application/json")

    async def open_stream(self) -> httpx.Response | Response:
        """The upstream's stream, open and answering 200; or the error to send instead."""
        try:
            answer = await self._send(stream=True)
        except ApiError as e:
            return self._refuse(e)
        if answer.status_code != 200:
            content = await answer.aread()
            await answer.aclose()
            self._done()
            if answer.status_code >= 500:
                return self._refuse(self._bad_gateway(answer.status_code, content))
            self.server.metrics.requests.labels(self.endpoint, str(answer.status_code)).inc()
            return Response(content, status_code=answer.status_code, media_type="application/json")
        return answer

    async def relay(self, answer: httpx.Response) -> AsyncIterator[bytes]:
        """Pass the SSE stream through as it comes. Tokens are counted by a byte marker
        (each chunk vLLM sends before the last says ``"finish_reason":null``), not by
        parsing every chunk, which would cost the proxy a core at thousands of tokens a
        second; the stream's tail gives the usage (when the client asked for it) and the
        finish reason."""
        generated, tail, status, role_chunk = 0, b"", "200", 0
        self._stream_status = "499"  # until the stream ends: the client left
        try:
            try:
                async for raw in answer.aiter_raw():
                    if not tail:  # the first bytes: a chat's first chunk names the role, no token
                        self.server.metrics.ttft.observe(time.perf_counter() - self.started)
                        role_chunk = int(b'"role":"assistant"' in raw or b'"role": "assistant"' in raw)
                    generated += raw.count(b'"finish_reason":null') + raw.count(b'"finish_reason": null')
                    self.server.dispatcher.progress(self.ticket, generated)
                    tail = (tail + raw)[-8192:]
                    yield raw
            except httpx.HTTPError as e:  # the upstream died mid-stream: say so, in the stream
                status = "502"
                message = f"upstream {self._url} ended the stream: {type(e).__name__}: {e}"
                yield f"\n\ndata: {json.dumps(error_body(message, 'upstream_error'))}\n\n".encode()
            self._stream_status = status
            if status == "200":
                usage, finish = _stream_end(tail)
                self._record(usage if usage is not None else max(0, generated - role_chunk), finish)
        finally:
            await self.close_stream(answer)

    async def close_stream(self, answer: httpx.Response) -> None:
        """Close the upstream stream and give the slot back; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        await answer.aclose()  # vLLM aborts a request whose connection closes
        self._done()
        self.server.metrics.requests.labels(self.endpoint, self._stream_status).inc()

    async def _send(self, stream: bool) -> httpx.Response:
        """Acquire a slot and send, moving to another upstream while one is unreachable."""
        server, tried = self.server, 0
        while True:
            try:
                upstream = await server.dispatcher.acquire(self.ticket, server.config.queue_timeout_s)
            except asyncio.TimeoutError:
                raise ApiError(503, "no upstream slot came free in time (queue_timeout_s)", kind="timeout") from None
            server.metrics.queue_seconds.observe(self.ticket.queue_seconds)
            server.metrics.inflight.labels(server.upstreams[upstream].url).inc()
            target = server.upstreams[upstream]
            try:
                return await self._post(target, stream)
            except _UNREACHABLE as e:
                self._done()
                tried += 1
                if tried >= len(server.upstreams):
                    message = f"upstream {target.url} is not reachable ({type(e).__name__}: {e})"
                    raise ApiError(503, message, kind="service_unavailable") from None
                self.ticket.exclude |= {upstream}
            except httpx.TimeoutException as e:
                self._done()
                message = f"upstream {target.url} did not answer in time ({type(e).__name__})"
                raise ApiError(504, message, kind="timeout") from None
            except BaseException:
                self._done()
                raise

    async def _post(self, target: Upstream, stream: bool) -> httpx.Response:
        """One call. A vLLM that was not started with the priority policy refuses
        ``priority``: it is then sent without, from now on."""
        body = self.parsed.body
        client = self.server.client
        url = target.url + _PATHS[self.endpoint]
        if self._priority(target):
            with_priority = {**body, "priority": self.ticket.predicted_len}
            answer = await client.send(client.build_request("POST", url, json=with_priority), stream=stream)
            if answer.status_code != 400:
                return answer
            content = await answer.aread()
            await answer.aclose()
            if b"priority" not in content:
                return httpx.Response(400, content=content, request=answer.request)
            target.priority = False
        return await client.send(client.build_request("POST", url, json=body), stream=stream)

    def _priority(self, upstream: Upstream) -> bool:
        return upstream.priority and self.server.config.policy != "fcfs"

    @property
    def _url(self) -> str:
        upstream = self.ticket.upstream
        return self.server.upstreams[upstream].url if upstream is not None else "?"

    def _done(self) -> None:
        """Give the slot back (once: it is a no-op when none is held)."""
        if self.ticket.upstream is not None:
            self.server.metrics.inflight.labels(self.server.upstreams[self.ticket.upstream].url).dec()
        self.server.dispatcher.release(self.ticket)

    def _bad_gateway(self, status: int, content: bytes) -> ApiError:
        excerpt = content[:300].decode("utf-8", "replace")
        return ApiError(502, f"upstream {self._url} answered {status}: {excerpt}", kind="upstream_error")

    def _refuse(self, error: ApiError) -> Response:
        self.server.metrics.requests.labels(self.endpoint, str(error.status)).inc()
        return JSONResponse(error.body(), status_code=error.status)

    def _record(self, num_output_tokens: int | None, finish_reason: str | None) -> None:
        metrics = self.server.metrics
        metrics.e2e.observe(time.perf_counter() - self.started)
        if num_output_tokens is not None:
            metrics.actual.observe(num_output_tokens)
            if self.server.trace is not None:
                self.server.trace.append(self.ticket, self.parsed, num_output_tokens, finish_reason)


class _Relay(StreamingResponse):
    """A stream that always closes its upstream call and frees its slot, even when the
    client left before the first byte (Starlette then never starts the iterator)."""

    def __init__(self, call: _Call, answer: httpx.Response) -> None:
        super().__init__(call.relay(answer), media_type="text/event-stream")
        self._call, self._answer = call, answer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._call.close_stream(self._answer)


async def _until_disconnect(request: HttpRequest, work: Awaitable[Any]) -> Any:
    """Run ``work`` unless the client leaves first; then cancel it and return None."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return None
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)


async def _disconnected(request: HttpRequest) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _read_body(request: HttpRequest, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the request body ({declared} bytes) is over the limit ({limit} bytes)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"the request body is over the limit ({limit} bytes)")
        chunks.append(chunk)
    return b"".join(chunks)


def _json(text: str | bytes) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _stream_end(tail: bytes) -> tuple[int | None, str | None]:
    """From a stream's last bytes: usage.completion_tokens (when sent) and the finish reason."""
    usage, finish = None, None
    for line in tail.split(b"\n"):
        if line.startswith(b"data: {"):
            chunk = _json(line[6:])
            tokens = (chunk.get("usage") or {}).get("completion_tokens")
            usage = tokens if isinstance(tokens, int) else usage
            for choice in chunk.get("choices") or []:
                finish = choice.get("finish_reason") or finish
    return usage, finish


def _usage_tokens(content: bytes) -> int | None:
    usage = _json(content).get("usage") or {}
    tokens = usage.get("completion_tokens")
    return tokens if isinstance(tokens, int) else None


def _finish_reason(content: bytes) -> str | None:
    choices = _json(content).get("choices") or []
    return choices[0].get("finish_reason") if choices and isinstance(choices[0], dict) else None
