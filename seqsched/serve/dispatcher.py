"""The dispatcher: the one place where waiting requests meet free upstream slots.

A request takes a :class:`Ticket`, waits in the queue (``schedule/queue.py``, which
decides the order) until the router (``schedule/route.py``, which decides where) grants
it a slot, and gives the slot back when it is done, however it ends. The dispatcher
itself decides nothing; it only wakes the ticket the queue names, whenever a slot frees.
Everything runs on the event loop's thread: no locks.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field

from seqsched.schedule.queue import Waiting, WaitingQueue
from seqsched.schedule.route import Router


@dataclass
class Ticket:
    """One request's place: its prediction and the times a server reports."""

    request_id: str
    predicted_len: int
    number: int = 0  # the dispatcher's own id for it
    arrived_at: float = field(default_factory=time.perf_counter)
    granted_at: float | None = None
    upstream: int | None = None
    exclude: frozenset[int] = frozenset()  # upstreams that already failed it
    _granted: asyncio.Future[int] | None = None
    _entry: Waiting[Ticket] | None = None

    @property
    def queue_seconds(self) -> float:
        return (self.granted_at or time.perf_counter()) - self.arrived_at


class Dispatcher:
    def __init__(self, queue: WaitingQueue[Ticket], router: Router) -> None:
        self.queue = queue
        self.router = router
        self._numbers = itertools.count()

    @property
    def num_waiting(self) -> int:
        return len(self.queue)

    async def acquire(self, ticket: Ticket, timeout: float | None = None) -> int:
        """Wait for a slot; return the upstream's index. On cancellation (the client left)
        or timeout the ticket leaves the queue, or gives back a slot granted meanwhile."""
        ticket.number = next(self._numbers)
        ticket._granted = asyncio.get_running_loop().create_future()
        ticket._entry = self.queue.push(ticket, ticket.predicted_len)
        self._pump()
        try:
            return await asyncio.wait_for(asyncio.shield(ticket._granted), timeout)
        except BaseException:
            if not self.queue.remove(ticket._entry):  # granted meanwhile: give the slot back
                self.release(ticket)
            raise

    def release(self, ticket: Ticket) -> None:
        """The request is done with its slot (finished, failed, or its client left)."""
        if ticket.upstream is not None:
            self.router.release(ticket.number)
            ticket.upstream = None
        self._pump()

    def progress(self, ticket: Ticket, num_generated: int) -> None:
        self.router.progress(ticket.number, num_generated)

    def _pump(self) -> None:
        """Grant free slots to waiting tickets, in the queue's order."""
        while self.router.has_free_slot:
            entry = self.queue.pop()
            if entry is None:
                return
            ticket = entry.item
            upstream = self.router.assign(ticket.number, ticket.predicted_len, ticket.exclude)
            if upstream is None:  # only upstreams that failed it are free: try one anyway
                upstream = self.router.assign(ticket.number, ticket.predicted_len)
            assert upstream is not None
            ticket.upstream = upstream
            ticket.granted_at = time.perf_counter()
            assert ticket._granted is not None
            ticket._granted.set_result(upstream)
