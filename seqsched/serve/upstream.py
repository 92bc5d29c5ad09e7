"""The upstream call: a slot from the front door, the request sent, retried elsewhere while
nothing was sent to the client, and vLLM's ``priority`` when the upstream takes it.

NOTE on ownership. :meth:`Upstreams.open` returns an :class:`Exchange` that holds the
slot's lease and the upstream's answer; closing it (once, however the request ends,
cancellation included) closes the upstream connection, which makes vLLM abort a request
still running, and gives the slot back. Nothing else releases a slot.

Failures, while nothing has been sent to the client: an upstream that cannot be reached,
or closes without answering, or answers 502/503/504, is left for another (``exclude``);
when every one has failed, the client gets 503 (502 for a 5xx), naming the URL. An
upstream silent for ``upstream_timeout_s`` is a 504. vLLM's own refusal of ``priority``
(an old vLLM not started with the priority policy: "Priority scheduling is not enabled")
turns ``priority`` off for that upstream, and only that refusal.

aiohttp, not httpx, carries the bytes: relaying a streamed token costs it about a quarter
of httpx's CPU (``benchmarks/relay_cpu.py``).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from seqsched.schedule.batch_lane import vllm_priority
from seqsched.schedule.front_door import Ticket
from seqsched.serve.dispatcher import Dispatcher
from seqsched.serve.protocol import ApiError, Endpoint, ParsedRequest

log = logging.getLogger("seqsched.serve")
PATHS: dict[Endpoint, str] = {"chat": "/v1/chat/completions", "completions": "/v1/completions"}
UNREACHABLE = (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError, aiohttp.ClientConnectionResetError,
               aiohttp.ClientOSError)  # fmt: skip
_RETRY_ELSEWHERE = frozenset({502, 503, 504})
_REFUSES_PRIORITY = re.compile(rb"priority scheduling is not enabled", re.IGNORECASE)
_REDISCOVER_S = 5.0  # at most one /v1/models probe an upstream in this many seconds


@dataclass
class Upstream:
    """One OpenAI-compatible server. ``priority`` None: not known yet (found out from its
    ``/v1/models`` on first contact: vLLM takes it)."""

    url: str
    priority: bool | None = None
    models: list[dict[str, Any]] = field(default_factory=list)
    probed_at: float = -_REDISCOVER_S


class Exchange:
    """One request's call: its lease and the upstream's answer, closed once."""

    def __init__(self, dispatcher: Dispatcher, lease: int, upstream: Upstream, answer: aiohttp.ClientResponse):
        self.dispatcher, self.lease, self.upstream, self.answer = dispatcher, lease, upstream, answer
        self.closed = False

    @property
    def status(self) -> int:
        return self.answer.status

    async def read(self) -> bytes:
        """The whole answer (not streamed)."""
        return await self.answer.read()

    def close(self) -> None:
        """Close the upstream call and give the slot back; safe to call again."""
        if self.closed:
            return
        self.closed = True
        try:
            self.answer.close()  # vLLM aborts a request whose connection closes
        finally:
            self.dispatcher.release(self.lease)


@dataclass(frozen=True)
class CallSettings:
    connect_timeout_s: float
    upstream_timeout_s: float
    queue_timeout_s: float
    send_priority: bool  # the policy orders by prediction (not fcfs): tell vLLM too
    priority: bool | None  # the user's --priority: None (auto), on, off
    api_key: str | None = None  # the upstreams' own key; None: forward the client's


class Upstreams:
    def __init__(self, upstreams: list[Upstream], dispatcher: Dispatcher, settings: CallSettings) -> None:
        self.upstreams = upstreams
        self.dispatcher = dispatcher
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None
        self._probes: set[asyncio.Task[None]] = set()
        # Told the index of an upstream that could not be reached (the Ray replicas' watch
        # takes it out of routing at once, rather than at its next look).
        self.on_unreachable: Callable[[int], None] | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:  # made on the event loop that uses it
            timeout = aiohttp.ClientTimeout(
                total=None, connect=self.settings.connect_timeout_s, sock_read=self.settings.upstream_timeout_s
            )
            connector = aiohttp.TCPConnector(limit=0, enable_cleanup_closed=True)
            self._session = aiohttp.ClientSession(timeout=timeout, connector=connector, auto_decompress=False)
        return self._session

    async def close(self) -> None:
        for task in list(self._probes):
            task.cancel()
        if self._session is not None:
            await self._session.close()

    async def open(self, ticket: Ticket, path: str, parsed: ParsedRequest, authorization: str | None) -> Exchange:
        """A slot, then the call; the answer's status may be anything but an unreachable
        upstream or a 502/503/504 while another upstream is left to try."""
        failures = 0
        while True:
            lease = await self._acquire(ticket)
            index = ticket.upstream
            assert index is not None
            target = self.upstreams[index]
            try:
                priority = vllm_priority(ticket.predicted_len, ticket.lane, ticket.priority)
                answer = await self._post(target, path, _bodies(parsed, priority), authorization)
            except UNREACHABLE as e:
                self.dispatcher.release(lease)
                self.probe(target, force=True)
                self._unreachable(index)
                failures += 1
                if failures >= len(self.upstreams):
                    raise ApiError(
                        503, f"upstream {target.url} is not reachable ({_name(e)})", kind="service_unavailable"
                    ) from None
                ticket.exclude |= {index}
                continue
            except asyncio.TimeoutError as e:
                self.dispatcher.release(lease)
                raise ApiError(
                    504, f"upstream {target.url} did not answer in time ({_name(e)})", kind="timeout"
                ) from None
            except BaseException:
                self.dispatcher.release(lease)
                raise
            exchange = Exchange(self.dispatcher, lease, target, answer)
            if answer.status in _RETRY_ELSEWHERE and failures + 1 < len(self.upstreams):
                exchange.close()
                failures += 1
                ticket.exclude |= {index}
                continue
            return exchange

    async def _acquire(self, ticket: Ticket) -> int:
        try:
            return await self.dispatcher.acquire(ticket, self.settings.queue_timeout_s)
        except asyncio.TimeoutError:
            message = f"no upstream slot came free within {self.settings.queue_timeout_s:g} s (--queue-timeout)"
            raise ApiError(503, message, kind="timeout") from None

    async def send_on(self, ticket: Ticket, lease: int, path: str, bodies: Bodies) -> Exchange:
        """A call on a slot the door granted already (the batch lane's): no queue, no
        retry here (an unreachable upstream raises, the slot given back)."""
        index = ticket.upstream
        assert index is not None
        target = self.upstreams[index]
        try:
            answer = await self._post(target, path, bodies, None)
        except UNREACHABLE:
            self.probe(target, force=True)
            self.dispatcher.release(lease)
            self._unreachable(index)
            raise
        except BaseException:
            self.dispatcher.release(lease)
            raise
        return Exchange(self.dispatcher, lease, target, answer)

    async def _post(
        self, target: Upstream, path: str, bodies: Bodies, authorization: str | None
    ) -> aiohttp.ClientResponse:
        """``bodies(with_priority)`` makes the body, with vLLM's ``priority`` or without."""
        if target.priority is None:
            self.probe(target)
        headers = {"Content-Type": "application/json", "Accept-Encoding": "identity"}
        key = self.settings.api_key
        if key is not None or authorization is not None:
            headers["Authorization"] = f"Bearer {key}" if key is not None else authorization  # type: ignore[assignment]
        url = target.url + path
        if self.settings.send_priority and target.priority:
            answer = await self.session.post(url, data=bodies(True), headers=headers)
            if answer.status != 400:
                return answer
            try:
                content = await answer.read()  # kept by the answer: a later read() returns it
            except BaseException:
                answer.close()
                raise
            if not _REFUSES_PRIORITY.search(content):
                return answer
            answer.close()
            target.priority = False
            log.warning("upstream %s refuses priority (not started with the priority policy): sent without", target.url)
        return await self.session.post(url, data=bodies(False), headers=headers)

    def _unreachable(self, index: int) -> None:
        if self.on_unreachable is not None:
            self.on_unreachable(index)

    def probe(self, target: Upstream, force: bool = False) -> None:
        """Find out ``target``'s models and whether it is vLLM, in the background, at most
        once every few seconds (an upstream down at start, or one that came back)."""
        now = time.monotonic()
        if now - target.probed_at < _REDISCOVER_S or (target.models and not force):
            return
        target.probed_at = now
        task = asyncio.get_running_loop().create_task(self.discover(target))
        self._probes.add(task)
        task.add_done_callback(self._probes.discard)

    async def discover(self, target: Upstream) -> None:
        """``target``'s ``/v1/models``; vLLM's (``owned_by: vllm``) take ``priority``."""
        target.probed_at = time.monotonic()
        headers = {"Authorization": f"Bearer {self.settings.api_key}"} if self.settings.api_key else {}
        try:
            timeout = aiohttp.ClientTimeout(total=self.settings.connect_timeout_s)
            async with self.session.get(target.url + "/v1/models", headers=headers, timeout=timeout) as answer:
                found = await answer.json(content_type=None) if answer.status == 200 else {}
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
            return
        data = found.get("data") if isinstance(found, dict) else None
        models = [m for m in data if isinstance(m, dict)] if isinstance(data, list) else []
        if not models:
            return
        target.models = models
        is_vllm = any(m.get("owned_by") == "vllm" for m in models)
        if self.settings.priority is not None:
            target.priority = self.settings.priority
        elif target.priority is None:
            target.priority = is_vllm

    async def preemptions(self) -> dict[str, float]:
        """Each vLLM upstream's own count of preemptions (``vllm:num_preemptions_total`` on its
        ``/metrics``), read now; an upstream that does not answer within a second is left out."""

        async def one(target: Upstream) -> tuple[str, float | None]:
            try:
                timeout = aiohttp.ClientTimeout(total=1.0)
                async with self.session.get(target.url + "/metrics", timeout=timeout) as answer:
                    text = (await answer.read()).decode("utf-8", "replace") if answer.status == 200 else ""
            except (aiohttp.ClientError, asyncio.TimeoutError):
                return target.url, None
            values = [line.rsplit(" ", 1)[-1] for line in text.splitlines()
                      if line.startswith("vllm:num_preemptions_total")]  # fmt: skip
            try:
                return target.url, sum(float(v) for v in values) if values else None
            except ValueError:
                return target.url, None

        found = await asyncio.gather(*(one(u) for u in self.upstreams))
        return {url: value for url, value in found if value is not None}

    async def discover_all(self) -> None:
        await asyncio.gather(*(self.discover(u) for u in self.upstreams))


Bodies = Callable[[bool], bytes]  # with vLLM's priority, or without


def _bodies(parsed: ParsedRequest, priority: int) -> Bodies:
    return lambda with_priority: parsed.with_priority(priority) if with_priority else parsed.encoded


def _name(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
