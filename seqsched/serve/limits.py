"""Limits on clients, below the app: how long a client may take to send a request's
headers, and how many connections may be open at once.

uvicorn closes a connection idle *after* a response (``timeout_keep_alive``), but one
that connects and sends nothing, or sends its headers a byte a minute (slow loris), it
keeps forever: enough of them exhaust the process's file descriptors and no new client
gets in. This protocol gives every request ``header_timeout_s`` from its connection (or
from the end of the previous response) to its last header line, and closes connections
beyond ``max_connections`` at once, with a 503. The body's own deadline is the app's
(``body_timeout_s``), and a stream's reader is watched by the relay (``stall_timeout_s``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from seqsched.serve.protocol import error_body


def guarded_protocol(header_timeout_s: float, max_connections: int) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with a header deadline and a connection cap."""

    class Guarded(HttpToolsProtocol):
        _deadline: asyncio.TimerHandle | None = None
        _refused = False
        _in_headers = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            if len(self.connections) >= max_connections:
                self._refused = True
                self.transport = transport
                _refuse(transport, 503, f"too many connections (over {max_connections}): try again later")
                return
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            if not self._refused:
                super().data_received(data)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_headers = True
            if self._deadline is None:
                self._arm()

        def on_headers_complete(self) -> None:
            self._in_headers = False
            self._disarm()
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()  # the next request's headers get the same deadline

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            if not self._refused:
                super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(header_timeout_s, self._expired)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expired(self) -> None:
            self._deadline = None
            if self.cycle is not None and not self.cycle.response_complete:
                return  # a request is being answered: not idle
            if not self.transport.is_closing():
                if self._in_headers:  # headers begun, not finished: a slow client
                    _refuse(self.transport, 408, f"the request's headers took over {header_timeout_s:g} s")
                else:
                    self.transport.close()

    return Guarded


def _refuse(transport: Any, status: int, message: str) -> None:
    body = json.dumps(error_body(message, "service_unavailable" if status == 503 else "timeout", None, status)).encode()
    reason = {408: b"Request Timeout", 503: b"Service Unavailable"}[status]
    with contextlib.suppress(OSError, RuntimeError):
        transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
            % (status, reason, len(body))
            + body
        )
    transport.close()


def raise_open_files_limit() -> int:
    """Lift this process's soft limit on open files to the hard one (as vLLM does); return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft
