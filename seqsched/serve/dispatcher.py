"""The front door (``schedule/front_door.py``) on the event loop.

The door decides; this only applies its plans: it wakes the request a grant names and
stops the batch request a preemption names, whenever something changes (an arrival, a
slot given back, a client gone). An interactive request awaits its grant (``acquire``);
a batch request waits with no coroutine at all (``submit``: a callback runs on its grant),
so a batch of 50,000 lines costs 50,000 small records, not 50,000 tasks. Everything runs
on the event loop's thread: no locks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from seqsched.schedule.front_door import FrontDoor, Ticket

OnGrant = Callable[[int], None]  # called with the lease


class Dispatcher:
    def __init__(self, door: FrontDoor, clock: Callable[[], float] = time.monotonic) -> None:
        self.door = door
        self.clock = clock
        self._on_grant: dict[Ticket, OnGrant] = {}
        self._on_preempt: dict[Ticket, Callable[[], None]] = {}
        self._pumping = False
        self._again = False

    @property
    def num_waiting(self) -> int:
        return self.door.num_waiting

    async def acquire(self, ticket: Ticket, timeout: float | None = None) -> int:
        """Wait for a slot; return its lease. On cancellation (the client left) or timeout
        the ticket leaves the queue, or gives back a slot granted meanwhile."""
        granted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def on_grant(lease: int) -> None:
            if not granted.done():
                granted.set_result(lease)

        self._on_grant[ticket] = on_grant
        self.door.arrive(ticket, self.clock())
        self.pump()
        try:
            return await asyncio.wait_for(granted, timeout)
        except BaseException:
            self._on_grant.pop(ticket, None)
            if not self.door.leave(ticket):  # granted meanwhile: give the slot back
                self.release(ticket.lease)
            raise

    def submit(self, ticket: Ticket, on_grant: OnGrant, on_preempt: Callable[[], None]) -> None:
        """Queue a batch ticket; ``on_grant(lease)`` runs when it gets a slot, ``on_preempt()``
        when the door takes the slot back (the ticket then waits again, with the same
        callbacks, until it is granted again or withdrawn)."""
        self._on_grant[ticket] = on_grant
        self._on_preempt[ticket] = on_preempt
        self.door.arrive(ticket, self.clock())
        self.pump()

    def resubmit(self, ticket: Ticket) -> None:
        """A batch ticket that ended its call without finishing (an upstream fault) waits again."""
        self.door.arrive(ticket, self.clock())
        self.pump()

    def hold(self, ticket: Ticket) -> bool:
        """A waiting batch ticket leaves the queue for now, keeping its callbacks (its batch
        is paused); ``resubmit`` brings it back. False if it was not waiting."""
        return self.door.leave(ticket)

    def withdraw(self, ticket: Ticket) -> None:
        """A batch ticket is done, or its batch cancelled: forget it, give back its slot."""
        self._on_grant.pop(ticket, None)
        self._on_preempt.pop(ticket, None)
        self.door.leave(ticket)
        self.release(ticket.lease)

    def release(self, lease: int | None) -> None:
        """The slot of ``lease`` is free (idempotent: a second release does nothing)."""
        if self.door.release(lease):
            self.pump()

    def progress(self, ticket: Ticket, generated: int) -> None:
        self.door.progress(ticket, generated)

    def observe_interactive(self, tpot_s: float) -> None:
        self.door.observe_interactive(tpot_s)

    def pump(self) -> None:
        """Apply the door's decisions until it has none (a callback may release or submit:
        that asks for another round rather than a nested one)."""
        if self._pumping:
            self._again = True
            return
        self._pumping = True
        try:
            self._again = True
            while self._again:
                self._again = False
                plan = self.door.schedule(self.clock())
                for ticket in plan.preempted:
                    self._on_preempt[ticket]()
                for ticket, _ in plan.grants:
                    on_grant = self._on_grant.get(ticket)
                    if ticket.lane == "interactive":
                        self._on_grant.pop(ticket, None)
                    if on_grant is None:  # withdrawn between its arrival and now
                        self.door.release(ticket.lease)
                        self._again = True
                    else:
                        on_grant(ticket.lease)  # type: ignore[arg-type]
        finally:
            self._pumping = False
