"""One interactive request, from its body to its answer: read and check it, predict its
length, take a slot and call upstream (``upstream.py``), and answer: the whole body, or a
stream (``relay.py``). The front door decides when it goes and where; this only carries.

Every error answer is OpenAI's error object: 400 for a body that is not valid input, 408
for one that takes too long to arrive, 413 for one too large, 502 or 503 for an upstream
fault, 503 while draining; an upstream's own 4xx passes through as it is.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import aiohttp
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response

from seqsched.schedule.front_door import Ticket
from seqsched.schedule.prefix import prefix_blocks
from seqsched.serve.accounting import Call, finish_reason, usage_tokens
from seqsched.serve.protocol import ApiError, Endpoint, parse_body
from seqsched.serve.relay import Relay
from seqsched.serve.server import Draining, Server
from seqsched.serve.upstream import PATHS, Exchange


async def answer(server: Server, request: HttpRequest, endpoint: Endpoint) -> Response | Relay:
    started = time.perf_counter()
    try:
        raw = await read_body(request, server.config.max_request_bytes, server.config.body_timeout_s)
        parsed = parse_body(raw, endpoint, server.config.max_tokens_limit)
        if server.draining:
            raise ApiError(503, "the server is shutting down", kind="service_unavailable")
    except ApiError as e:
        server.accounting.refused(endpoint, e.status)
        return error_response(e)
    t0 = time.perf_counter()
    predicted = await server.predictions.predict(parsed.text, parsed.max_tokens)
    server.metrics.predict_seconds.observe(time.perf_counter() - t0)
    server.metrics.predicted.observe(predicted)
    prefix = prefix_blocks(parsed.text) if server.door.router.needs_prefix else ()
    ticket = Ticket(request_id(request), predicted, prefix=prefix, prompt_tokens=prompt_tokens(parsed.text))
    call = Call(endpoint, parsed, ticket, started)
    outcome = await server.until_gone_or_drained(request, _open(server, call, request.headers.get("authorization")))
    if isinstance(outcome, Exchange):  # a stream, answering 200: the relay owns it now
        relay = Relay(call, outcome, server.accounting, server.config.stall_timeout_s, server.relays.discard)
        server.relays.add(relay)
        return relay
    if outcome is None:  # the client left
        server.accounting.ended(call, "499")
        return Response(status_code=499)
    if isinstance(outcome, Draining):
        server.accounting.ended(call, "503")
        return error_response(ApiError(503, "the server is shutting down", kind="service_unavailable"))
    assert isinstance(outcome, Response)
    return outcome


async def _open(server: Server, call: Call, authorization: str | None) -> Exchange | Response:
    """The upstream's open stream (answering 200), or the whole answer as a response."""
    try:
        exchange = await server.upstreams.open(call.ticket, PATHS[call.endpoint], call.parsed, authorization)
    except ApiError as e:
        server.accounting.ended(call, str(e.status))
        return error_response(e)
    server.metrics.queue_seconds.observe(time.perf_counter() - call.started)
    if call.parsed.stream and exchange.status == 200:
        return exchange
    try:
        content = await exchange.read()
    except (aiohttp.ClientError, asyncio.TimeoutError) as e:
        url = exchange.upstream.url
        server.accounting.ended(call, "502")
        return error_response(ApiError(502, f"upstream {url} failed while answering: {type(e).__name__}: {e}",
                                       kind="upstream_error"))  # fmt: skip
    finally:
        exchange.close()
    status = exchange.status
    if status >= 500:
        excerpt = content[:300].decode("utf-8", "replace")
        message = f"upstream {exchange.upstream.url} answered {status}: {excerpt}"
        error = ApiError(503 if status == 503 else 502, message, kind="upstream_error")
        server.accounting.ended(call, str(error.status))
        return error_response(error)
    encoding = exchange.answer.headers.get("Content-Encoding")
    headers = {"content-encoding": encoding} if encoding and encoding != "identity" else None
    if status == 200 and headers is None:
        server.accounting.ended(call, "200", usage_tokens(content), finish_reason(content))
    else:
        server.accounting.ended(call, str(status))
    media = exchange.answer.headers.get("Content-Type", "application/json")
    return Response(content, status_code=status, media_type=media, headers=headers)


def prompt_tokens(text: str) -> int:
    """A prompt's tokens as the door estimates them for KV admission (no tokenizer here):
    about four characters a token, in English; chat templates add a little."""
    return len(text) // 4 + 8


def request_id(request: HttpRequest) -> str:
    """The client's ``X-Request-Id`` when it is a plain token (for its own tracing: it names
    the request in the served trace), else a fresh one."""
    given = request.headers.get("x-request-id", "")
    if 0 < len(given) <= 128 and given.isascii() and given.isprintable() and " " not in given:
        return given
    return f"seqsched-{uuid.uuid4().hex}"


async def read_body(request: HttpRequest, limit: int, timeout_s: float) -> bytes:
    """The body, refused past ``limit`` bytes (413) or ``timeout_s`` seconds (408)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the request body ({declared} bytes) is over the limit ({limit} bytes)")

    async def read() -> bytes:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, f"the request body is over the limit ({limit} bytes)")
            chunks.append(chunk)
        return b"".join(chunks)

    try:
        return await asyncio.wait_for(read(), timeout_s)
    except asyncio.TimeoutError:
        raise ApiError(408, f"the request body did not arrive within {timeout_s:g} s", kind="timeout") from None


def error_response(error: ApiError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=headers)
