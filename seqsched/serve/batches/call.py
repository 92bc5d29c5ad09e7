"""One batch line's call: the object that owns the line's slot from the door's grant to its
release, makes the upstream call (or its continuation), and says how it ended.

NOTE on ownership. The door grants a lease; :meth:`LineCall.granted` starts one attempt,
which gives the lease back on every path (an answer, a refusal, a fault, a preemption, a
stop, a bug) before it reports an :data:`Outcome` to its batch. So the batch puts a line
back at the door only once its slot is free, and nothing a call meets can leave a ticket
both holding a slot and waiting for one.

NOTE on outcomes. Every way an upstream call can end is one of:
- :class:`Answered`: the line's answer (a stream read to its ``finish_reason``, or the
  upstream's own non-streamed body for a line that is never stopped);
- :class:`Refused`: the upstream's 4xx other than 408 and 429 (the request is wrong: it
  fails alone, with the upstream's body);
- :class:`Fault`: an upstream that cannot be reached or resets, answers 5xx, 408 or 429,
  stays silent past ``--upstream-timeout``, ends a stream without a ``finish_reason``, or
  sends an event that is not a chunk, or streams past ``max_tokens`` without finishing
  (an upstream that never ends: bounded, not waited on). The batch retries it, continued from the tokens it
  has, up to ``MAX_RETRIES`` times with backoff, then fails the line with the last reason;
- :class:`Broken`: anything else (a bug, an input file that cannot be read): the line fails
  with its message, and it is logged.
A preemption is no outcome: the door has taken the slot and put the line back already.

NOTE on lines that are never stopped (``n`` > 1, ``logprobs``, tools, stop strings,
penalties: ``lines.CONTINUABLE``). Their answer cannot be rebuilt from a stream of token
ids without losing fields, so they are sent as the user wrote them, not streamed, and the
upstream's body is the answer, unchanged.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from seqsched.schedule.batch_lane import vllm_priority
from seqsched.schedule.front_door import Ticket
from seqsched.serve.batches.continuation import Malformed, Progress, absorb, answer, encode, next_call
from seqsched.serve.batches.lines import Line, body_of
from seqsched.serve.protocol import Endpoint
from seqsched.serve.upstream import PATHS, UNREACHABLE, Exchange, Upstreams

log = logging.getLogger("seqsched.serve")
# A chunk not yet finished, in vLLM's compact JSON or spaced: one a token, roughly.
_TOKENS = (b'"finish_reason":null', b'"finish_reason": null')
_OVERRUN = 16  # tokens past max_tokens a stream may send before it is taken for one that never ends


@dataclass(frozen=True)
class Answered:
    body: dict[str, Any]


@dataclass(frozen=True)
class Refused:
    status: int
    body: Any


@dataclass(frozen=True)
class Fault:
    why: str
    kind: str  # "status", "transport", "timeout", "unfinished" or "malformed"


@dataclass(frozen=True)
class Broken:
    why: str


Outcome = Answered | Refused | Fault | Broken


class Door(Protocol):
    """What a call needs of the dispatcher."""

    def release(self, lease: int | None) -> None: ...

    def withdraw(self, ticket: Ticket) -> None: ...

    def progress(self, ticket: Ticket, generated: int) -> None: ...


class Batch(Protocol):
    """What a call reports to: its batch (``runner.py``)."""

    def settle(self, call: LineCall, outcome: Outcome) -> None: ...

    def broke(self, error: Exception) -> None: ...


@dataclass(frozen=True)
class Target:
    """Where a batch's calls go, and what they read."""

    door: Door
    upstreams: Upstreams
    input: Path
    endpoint: Endpoint


class LineCall:
    """One line at work: its ticket at the door, what its calls made so far, its faults."""

    def __init__(self, line: Line, ticket: Ticket, target: Target, batch: Batch) -> None:
        self.line, self.ticket, self.target, self.batch = line, ticket, target, batch
        self.progress = Progress()
        self.faults = 0
        self.task: asyncio.Task[None] | None = None
        self.retry: asyncio.TimerHandle | None = None  # a fault's backoff, before it waits again
        self.done = False  # answered or failed: its outcome is the batch's now
        self.original: dict[str, Any] = {}  # the line's body, read back for each call
        self.upstream: int | None = None  # where the last attempt went
        self._preempted = False

    # -- what the door says ------------------------------------------------------------------

    def granted(self, lease: int) -> None:
        """A slot: one attempt, after the last one has let go (a preemption just before)."""
        before = self.task
        self.task = asyncio.get_running_loop().create_task(self._attempt(lease, before))

    def preempted(self) -> None:
        """The door took the slot back (and put the line back in its lane): stop the call."""
        if self.task is not None and not self.task.done():
            self._preempted = True
            self.task.cancel()

    def stop(self) -> asyncio.Task[None] | None:
        """The batch ends or pauses: no retry; the running call, if any, is cancelled."""
        if self.retry is not None:
            self.retry.cancel()
            self.retry = None
        if self.task is not None and not self.task.done():
            self.task.cancel()
            return self.task
        return None

    # -- one attempt -------------------------------------------------------------------------

    async def _attempt(self, lease: int, before: asyncio.Task[None] | None) -> None:
        door = self.target.door
        outcome: Outcome | None = None
        try:
            if before is not None and not before.done():
                await asyncio.wait([before])
            if self.done or self.ticket.lease != lease:  # it finished as the door stopped it, or
                return  # the grant was taken back (withdrawn) before this attempt began
            self.upstream = self.ticket.upstream
            outcome = await self._call(lease)
        except asyncio.CancelledError:
            if not self._preempted:
                raise  # the batch stops: it decides what becomes of the line
            self._preempted = False
            if self.progress.finish_reason is None:
                return  # it waits again, to be continued
            door.withdraw(self.ticket)  # it had finished when the door stopped it
            outcome = Answered(self._answer())
        except Exception as e:  # a bug must fail the line, never leave it holding a slot
            log.exception("batch line %s failed inside seqsched", self.ticket.request_id)
            outcome = Broken(f"{type(e).__name__}: {e}")
        finally:
            door.release(lease)  # idempotent: an exchange closed gave it back already
        try:
            self.batch.settle(self, outcome)
        except Exception as e:  # the batch's own bookkeeping broke: it must end, not hang
            log.exception("batch line %s: its outcome could not be recorded", self.ticket.request_id)
            self.batch.broke(e)

    async def _call(self, lease: int) -> Outcome:
        target = self.target
        try:
            original = self.original = await asyncio.to_thread(body_of, target.input, self.line)
        except (OSError, ValueError) as e:
            return Broken(f"the line cannot be read back from the input file: {e}")
        priority = vllm_priority(self.ticket.predicted_len, "batch")
        if self.line.continuable:
            path, body = next_call(original, target.endpoint, self.progress)
        else:
            path, body = PATHS[target.endpoint], {k: v for k, v in original.items() if k != "stream"}
            self.progress.num_calls += 1
        try:
            exchange = await target.upstreams.send_on(
                self.ticket, lease, path, lambda p: encode(body, priority if p else None)
            )
            try:
                return await (self._stream(exchange) if self.line.continuable else self._whole(exchange))
            finally:
                exchange.close()
        except asyncio.TimeoutError:
            return Fault(f"upstream silent for over {target.upstreams.settings.upstream_timeout_s:g} s "
                         "(--upstream-timeout)", "timeout")  # fmt: skip
        except (*UNREACHABLE, aiohttp.ClientError) as e:
            return Fault(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__, "transport")
        except Malformed as e:
            return Fault(f"upstream sent an event that is not a chunk: {e}", "malformed")

    async def _whole(self, exchange: Exchange) -> Outcome:
        """A line never stopped: the upstream's non-streamed answer, as it is."""
        content = await exchange.read()
        refused = _refusal(exchange, content)
        if refused is not None:
            return refused
        try:
            body = json.loads(content)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return Fault(f"upstream {exchange.upstream.url} answered 200 with a body that is not a JSON object",
                         "malformed")  # fmt: skip
        return Answered(body)

    async def _stream(self, exchange: Exchange) -> Outcome:
        """Read the stream to its end, taking in each complete event as it comes."""
        if exchange.status != 200:
            refused = _refusal(exchange, await exchange.read())
            assert refused is not None
            return refused
        progress, door = self.progress, self.target.door
        counted = len(progress.token_ids)  # what earlier calls made
        limit = None if self.line.max_tokens is None else self.line.max_tokens + _OVERRUN
        chunks: list[bytes] = []
        try:
            async for raw in exchange.answer.content.iter_any():
                chunks.append(raw)
                counted += sum(raw.count(token) for token in _TOKENS)
                door.progress(self.ticket, counted)
                if limit is not None and counted > limit:  # an upstream that never ends: start over
                    chunks.clear()
                    progress.forget()
                    return Fault(f"upstream {exchange.upstream.url} streamed past max_tokens "
                                 f"({self.line.max_tokens}) without finishing", "malformed")  # fmt: skip
        finally:  # what came, complete events only, is kept (a preemption lands here too)
            absorb(progress, b"".join(chunks))
        if progress.finish_reason is None:
            return Fault(f"upstream {exchange.upstream.url} ended the stream before the answer did", "unfinished")
        return Answered(self._answer())

    def _answer(self) -> dict[str, Any]:
        return answer(self.progress, self.target.endpoint, self.original)


def _refusal(exchange: Exchange, content: bytes) -> Outcome | None:
    """None for a 200; the line's fate for any other status."""
    status = exchange.status
    if status == 200:
        return None
    if 400 <= status < 500 and status not in (408, 429):
        return Refused(status, _json_or_text(content))
    return Fault(f"upstream {exchange.upstream.url} answered {status}", "status")


def _json_or_text(content: bytes) -> Any:
    try:
        return json.loads(content)
    except ValueError:
        return {"error": {"message": content[:300].decode("utf-8", "replace")}}
