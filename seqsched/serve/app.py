"""`seqsched serve`'s ASGI app: OpenAI's chat and completions (and, with a batch directory,
its Files and Batches API) in front of OpenAI-compatible upstreams.

The routes are thin: a route turns HTTP into a call (``interactive.py``) or a batch
(``batches/``); the front door in ``schedule/`` decides who goes next and where
(``dispatcher.py`` applies its plans on the event loop); ``upstream.py`` sends, retries and
owns each slot; ``relay.py`` streams; ``accounting.py`` records. Every answer that is an
error, whatever raised it, unknown routes included, is OpenAI's error object.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from seqsched.schedule.ledger import LANES
from seqsched.serve.batches.routes import routes as batch_routes
from seqsched.serve.config import ServeConfig
from seqsched.serve.interactive import answer
from seqsched.serve.predictor import PredictFn
from seqsched.serve.protocol import ApiError, error_body
from seqsched.serve.server import Server
from seqsched.serve.upstream import Upstream

log = logging.getLogger("seqsched.serve")


def build_app(
    config: ServeConfig,
    predict: PredictFn,
    upstreams: list[Upstream] | None = None,
    background: Callable[[Server], Coroutine[Any, Any, None]] | None = None,
) -> Starlette:
    """The ASGI app. ``upstreams`` as found by :meth:`Upstreams.discover_all` (default:
    each URL, its ``priority`` found out on first contact); ``background``: a task that
    runs while the app does (the Ray replicas' watch, ``ray_replicas.py``)."""
    found = upstreams or [Upstream(url, config.priority) for url in config.upstreams]
    server = Server(config, predict, found)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        server.loop = asyncio.get_running_loop()
        await server.upstreams.discover_all()
        if server.batches is not None:
            await server.batches.start()
        shown = ", ".join(f"{u.url}{' (vLLM: priority)' if u.priority else ''}" for u in server.upstreams.upstreams)
        log.warning("seqsched serve: http://%s:%d/v1 -> %s; policy %s, max_inflight %d per upstream, max_bypass %s",
                    config.host, config.port, shown, config.policy, config.max_inflight, config.max_bypass)  # fmt: skip
        watch = asyncio.get_running_loop().create_task(background(server)) if background is not None else None
        try:
            yield
        finally:
            server.draining = True
            if watch is not None:
                watch.cancel()
            await server.close()

    async def chat(request: HttpRequest) -> Response:
        return await answer(server, request, "chat")  # type: ignore[return-value]

    async def completions(request: HttpRequest) -> Response:
        return await answer(server, request, "completions")  # type: ignore[return-value]

    async def models(request: HttpRequest) -> Response:
        unknown = [u for u in server.upstreams.upstreams if not u.models]
        if unknown:  # an upstream that was down at start may be up now
            await asyncio.gather(*(server.upstreams.discover(u) for u in unknown))
        data = [m for u in server.upstreams.upstreams for m in u.models]
        return JSONResponse({"object": "list", "data": data})

    async def health(request: HttpRequest) -> Response:
        status = "draining" if server.draining else "ok"
        upstreams = [u.url for u in server.upstreams.upstreams]  # where they are now (a replica may move)
        body = {"status": status, "waiting": server.dispatcher.num_waiting, "upstreams": upstreams}
        return JSONResponse(body, status_code=503 if server.draining else 200)

    async def metrics(request: HttpRequest) -> Response:
        m, door = server.metrics, server.door
        m.waiting.set(door.num_waiting)
        for lane in LANES:
            m.lane_waiting.labels(lane).set(door.waiting_in(lane))
            m.lane_running.labels(lane).set(door.ledger.running(lane=lane))
        for i, upstream in enumerate(server.upstreams.upstreams):
            m.inflight.labels(upstream.url).set(door.ledger.running(i))
        m.preemptions.set(door.num_preemptions)
        m.held_for_kv.set(door.num_held_for_kv)
        for url, count in (await server.upstreams.preemptions()).items():
            m.upstream_preemptions.labels(url).set(count)
        m.batch_cap.set(door.governor.limit)
        return Response(m.render(), media_type="text/plain; version=0.0.4")

    routes = [
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    if server.batches is not None:
        routes += batch_routes(server.batches, config.max_request_bytes, config.body_timeout_s)
    handlers = {ApiError: _api_error, HTTPException: _http_error, Exception: _server_error}
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=handlers)
    app.state.server = server
    if config.api_key is not None:
        app.add_middleware(ApiKey, key=config.api_key)
    return app


async def _api_error(request: HttpRequest, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return JSONResponse(exc.body(), status_code=exc.status)


async def _http_error(request: HttpRequest, exc: Exception) -> Response:
    """404, 405 and the like: OpenAI's error shape, not Starlette's plain text."""
    assert isinstance(exc, HTTPException)
    what = f"{request.method} {request.url.path}"
    message = {404: f"no such route: {what}", 405: f"method not allowed: {what}"}.get(exc.status_code, exc.detail)
    kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
    return JSONResponse(error_body(message, kind, None, exc.status_code), status_code=exc.status_code)


async def _server_error(request: HttpRequest, exc: Exception) -> Response:
    log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
    message = f"internal server error ({type(exc).__name__})"
    return JSONResponse(error_body(message, "internal_error", None, 500), status_code=500)


class ApiKey:
    """``--api-key``: every ``/v1`` route wants ``Authorization: Bearer KEY`` (as vLLM's
    ``--api-key``); ``/health`` and ``/metrics`` stay open."""

    def __init__(self, app: ASGIApp, key: str) -> None:
        self.app = app
        self.expected = f"Bearer {key}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v1"):
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                body = error_body("a valid API key is required (Authorization: Bearer KEY)", "invalid_request_error",
                                  None, "invalid_api_key")  # fmt: skip
                await JSONResponse(body, status_code=401)(scope, receive, send)
                return
        await self.app(scope, receive, send)
