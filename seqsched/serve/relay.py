"""A streamed answer relayed to the client as it comes: an ASGI response that owns its
upstream call from its first byte to its end.

NOTE on cost. Every streamed token passes here, so the loop does the least it can: it
hands upstream bytes to the client as they arrive (no parsing), counts tokens by a byte
marker (each chunk vLLM sends before the last says ``"finish_reason":null``), keeps the
last two reads (the usage and finish reason are at the end) and, every 16 tokens, tells
the front door how far the request is. ``benchmarks/relay_cpu.py`` measures it against
vLLM's own API server.

NOTE on ending. However the stream ends, the exchange is closed once (the upstream call
closed, so vLLM aborts a request still running, and the slot given back) and the request
is accounted for:
- the upstream's last byte: status 200;
- the upstream failing mid-stream: an ``error`` event in OpenAI's shape, status 502;
- the client leaving: noticed by a watcher task that waits for ``http.disconnect``;
- the client not reading: a send that has not completed for ``stall_timeout_s`` (the
  socket's buffers are full) ends the relay and frees the slot;
- the server draining past its deadline (``stop``): an ``error`` event, status 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable

import aiohttp
from starlette.types import Receive, Scope, Send

from seqsched.serve.accounting import Accounting, Call, stream_end
from seqsched.serve.protocol import error_body
from seqsched.serve.upstream import Exchange

_TOKEN = b'"finish_reason":null'
_ROLE = b'"role":"assistant"'
_PROGRESS_EVERY = 16


class Relay:
    def __init__(
        self,
        call: Call,
        exchange: Exchange,
        accounting: Accounting,
        stall_timeout_s: float,
        on_end: Callable[[Relay], None] = lambda relay: None,
    ) -> None:
        self.call, self.exchange, self.accounting = call, exchange, accounting
        self.stall_timeout_s = stall_timeout_s
        self.on_end = on_end
        self._task: asyncio.Task[None] | None = None
        self._why_stopped: str | None = None  # "gone" | "stalled" | "draining"
        self._in_send = False
        self._sends = 0
        self._ended = False
        self._timer: asyncio.TimerHandle | None = None

    def stop(self, why: str) -> None:
        """End the relay from outside (the server draining): an error event, status 503."""
        if self._task is not None and self._why_stopped is None:
            self._why_stopped = why
            self._task.cancel()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        watcher = loop.create_task(self._watch(receive))
        self._timer = loop.call_later(self.stall_timeout_s, self._check_stall, -1)
        status, generated, role, tail = "499", 0, 0, (b"", b"")
        try:
            headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
            encoding = self.exchange.answer.headers.get("Content-Encoding")
            if encoding and encoding != "identity":
                headers.append((b"content-encoding", encoding.encode("latin-1")))
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            call, dispatcher, ticket = self.call, self.accounting.dispatcher, self.call.ticket
            try:
                async for raw in self.exchange.answer.content.iter_any():
                    if call.first_token_at is None:  # a chat's first chunk names the role: no token yet
                        call.first_token_at = time.perf_counter()
                        self.accounting.metrics.ttft.observe(call.first_token_at - call.started)
                        role = 1 if _ROLE in raw or b'"role": "assistant"' in raw else 0
                    counted = raw.count(_TOKEN)
                    if counted:
                        before = generated
                        generated += counted
                        if generated // _PROGRESS_EVERY != before // _PROGRESS_EVERY:
                            dispatcher.progress(ticket, generated)
                    else:
                        generated += raw.count(b'"finish_reason": null')
                    tail = (tail[1], raw)
                    self._in_send = True
                    await send({"type": "http.response.body", "body": raw, "more_body": True})
                    self._in_send = False
                    self._sends += 1
                status = "200"
            except (aiohttp.ClientError, asyncio.TimeoutError) as e:  # the upstream failed mid-stream
                status = "502"
                message = f"upstream {self.exchange.upstream.url} ended the stream: {type(e).__name__}: {e}"
                await send(_event(message, "upstream_error", 502))
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            why = self._why_stopped
            if why is None:
                raise  # cancelled by the server itself: let it through
            self._task.uncancel()  # type: ignore[union-attr]
            if why == "draining":
                status = "503"
                await _quietly(send, _event("the server is shutting down", "service_unavailable", 503))
                await _quietly(send, {"type": "http.response.body", "body": b"", "more_body": False})
            else:
                status = "499" if why == "gone" else "408"
        finally:
            watcher.cancel()
            if self._timer is not None:
                self._timer.cancel()
            self.exchange.close()
            self._end(status, generated, role, tail)

    def _end(self, status: str, generated: int, role: int, tail: tuple[bytes, bytes]) -> None:
        if self._ended:
            return
        self._ended = True
        usage, finish = stream_end(tail[0] + tail[1]) if status == "200" else (None, None)
        tokens = usage if usage is not None else max(0, generated - role)
        self.accounting.ended(self.call, status, tokens if status == "200" else None, finish)
        if status == "408":
            self.accounting.metrics.stalled.inc()
        self.on_end(self)

    async def _watch(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.stop("gone")

    def _check_stall(self, sends_before: int) -> None:
        """Runs every ``stall_timeout_s``: a send still pending since the last check means
        the client has not read for that long."""
        if self._in_send and self._sends == sends_before:
            self.stop("stalled")
            return
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.stall_timeout_s, self._check_stall, self._sends if self._in_send else -1)


def _event(message: str, kind: str, code: int) -> dict[str, object]:
    data = f"data: {json.dumps(error_body(message, kind, None, code))}\n\n".encode()
    return {"type": "http.response.body", "body": data, "more_body": True}


async def _quietly(send: Send, message: dict[str, object]) -> None:
    with contextlib.suppress(OSError, asyncio.TimeoutError, RuntimeError):
        await asyncio.wait_for(send(message), 1.0)
