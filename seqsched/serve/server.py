"""What one `seqsched serve` owns: the front door and its dispatcher, the upstreams, the
metrics, the predictor, and the calls and streams in flight, which a drain ends on time."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request as HttpRequest

from seqsched.schedule.front_door import FrontDoor
from seqsched.serve.accounting import Accounting
from seqsched.serve.batches.service import Batches
from seqsched.serve.config import ServeConfig
from seqsched.serve.dispatcher import Dispatcher
from seqsched.serve.metrics import ServeMetrics
from seqsched.serve.predictor import Batcher, PredictFn
from seqsched.serve.relay import Relay
from seqsched.serve.trace import ServedTrace
from seqsched.serve.upstream import CallSettings, Exchange, Upstream, Upstreams


class Draining(Exception):
    """The drain's deadline passed while this request was still running."""


class Server:
    """What one app owns: the front door and its dispatcher, the upstreams, the metrics,
    the predictor, the live calls and streams (for draining)."""

    def __init__(self, config: ServeConfig, predict: PredictFn, upstreams: list[Upstream]) -> None:
        self.config = config
        self.metrics = ServeMetrics()
        self.door = FrontDoor(config.door, [config.max_inflight] * len(upstreams))
        self.dispatcher = Dispatcher(self.door)
        settings = CallSettings(
            connect_timeout_s=config.connect_timeout_s,
            upstream_timeout_s=config.upstream_timeout_s,
            queue_timeout_s=config.queue_timeout_s,
            send_priority=config.policy != "fcfs",
            priority=config.priority,
            api_key=config.upstream_api_key,
        )
        self.upstreams = Upstreams(upstreams, self.dispatcher, settings)
        self.trace = ServedTrace(config.trace_path, config.trace_mode) if config.trace_path is not None else None
        self.accounting = Accounting(self.metrics, self.trace, self.dispatcher)
        self.predictions = Batcher(predict)
        self.relays: set[Relay] = set()
        self.calls: set[asyncio.Task[Any]] = set()
        self.batches: Batches | None = None
        if config.batch_dir is not None:
            self.batches = Batches(config, self.dispatcher, self.upstreams, self.predictions, self.metrics)
        self.draining = False
        self.drain_expired = False
        self.loop: asyncio.AbstractEventLoop | None = None

    def begin_drain(self) -> None:
        """SIGTERM: take no new requests; those in flight get ``drain_timeout_s``, then end
        with a 503 (a stream: an error event) so the process exits on time."""
        if self.draining:
            return
        self.draining = True
        asyncio.get_running_loop().call_later(self.config.drain_timeout_s, self.expire_drain)

    def expire_drain(self) -> None:
        self.drain_expired = True
        for relay in list(self.relays):
            relay.stop("draining")
        for task in list(self.calls):
            task.cancel()

    async def until_gone_or_drained(self, request: HttpRequest, work: Any) -> Any:
        """Run ``work`` unless the client leaves first (then None) or the drain expires
        (then :class:`Draining`); the work is cancelled in either case."""
        task: asyncio.Task[Any] = asyncio.ensure_future(work)
        watcher = asyncio.ensure_future(watch_disconnect(request))
        self.calls.add(task)
        try:
            done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if task in done and not task.cancelled():
                return task.result()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await close_result(task)
            return Draining() if self.drain_expired else None
        finally:
            self.calls.discard(task)
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)

    async def close(self) -> None:
        if self.batches is not None:
            await self.batches.close()
        await self.upstreams.close()
        if self.trace is not None:
            self.trace.close()


async def watch_disconnect(request: HttpRequest) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def close_result(task: asyncio.Task[Any]) -> None:
    """A task cancelled after it had already opened an exchange: close that exchange."""
    if task.done() and not task.cancelled() and task.exception() is None:
        result = task.result()
        if isinstance(result, Exchange):
            result.close()
