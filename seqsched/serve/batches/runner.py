"""One batch's life: its lines checked and predicted, each one sent through the batch lane
as a :class:`~seqsched.serve.batches.call.LineCall`, every outcome journaled, and its
output and error files written from the journal at the end (``output.py``).

NOTE on the lane. A line waits at the front door as a batch ticket (no coroutine while it
waits); when the door grants it a slot, its call runs, and reports an outcome once the slot
is given back (``call.py``). An answer or a refusal is journaled; a fault is retried,
continued from what the line has, on another upstream when there is one, after a backoff
(0.5, 1, 2 s), ``MAX_RETRIES`` times; then the line fails alone with the last reason.

NOTE on restart. Every answer and failed line goes to the batch's journal the moment it
exists (``journal.py``). A server killed mid-batch, restarted on the same directory, checks
the lines again (deterministic), skips every line the journal holds, and sends the rest:
nothing lost, nothing answered twice (a line in flight at the kill was never journaled: it
runs again from its start). A batch killed while finalizing is finalized again.

NOTE on a full disk. An answer the disk refuses is kept in memory, the batch's ``errors``
say why, and its lines still waiting leave the door (those running finish): the batch is
paused, its counts those on disk. Every second the journal is tried again; once it takes
the answers, the errors clear and the lines go back to the door. A finalize the disk
refuses is tried again the same way; the batch stays ``finalizing`` until it succeeds.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import TYPE_CHECKING, Any, Protocol

from seqsched.schedule.front_door import Ticket
from seqsched.serve.batches.call import Answered, Broken, Fault, LineCall, Outcome, Refused, Target
from seqsched.serve.batches.journal import HEADER, BatchJournal, header, read_journal
from seqsched.serve.batches.lines import ENDPOINTS, Line, LineError, input_digest, read_lines
from seqsched.serve.batches.output import Extra, digest, remove_partial, write_outputs
from seqsched.serve.batches.store import Store

if TYPE_CHECKING:
    from seqsched.serve.config import ServeConfig
    from seqsched.serve.dispatcher import Dispatcher
    from seqsched.serve.metrics import ServeMetrics
    from seqsched.serve.predictor import Batcher
    from seqsched.serve.upstream import Upstreams

log = logging.getLogger("seqsched.serve")
MAX_RETRIES = 3  # an upstream fault is retried this many times; the next one fails the line
BACKOFF_S = 0.5  # before the first retry; doubled for each one after
_groups = itertools.count()


class Host(Protocol):
    """What a batch runs in (the service, ``service.py``)."""

    config: ServeConfig
    store: Store
    dispatcher: Dispatcher
    upstreams: Upstreams
    predictions: Batcher
    metrics: ServeMetrics

    def ended(self, runner: BatchRunner) -> None: ...


class BatchRunner:
    def __init__(self, service: Host, record: dict[str, Any]) -> None:
        self.service = service
        self.record = record
        self.id: str = record["id"]
        self.input = service.store.file_path(record["input_file_id"])
        self.target = Target(service.dispatcher, service.upstreams, self.input, ENDPOINTS[record["endpoint"]])
        self.group = next(_groups)
        self.calls: dict[Ticket, LineCall] = {}
        self.errors: list[LineError] = []
        self.journal: BatchJournal | None = None
        self.num_lines = 0
        self.num_done = self.num_failed = 0  # journaled (on disk)
        self.stopping: str | None = None  # "cancelled" | "expired" | "closed"
        self.checked = False  # its lines are checked and predicted
        self.paused = False  # the disk refused an answer: no line goes to the door
        self.held: list[LineCall] = []  # lines kept from the door while paused
        self.unfinalized: tuple[str, list[Line]] | None = None  # a finalize the disk refused
        self._finished = asyncio.Event()

    # -- the life of a batch ---------------------------------------------------------------------

    async def run(self) -> None:
        """Check, predict and send every line not yet journaled; end when all are done."""
        try:
            lines, fingerprint = await self._check()
        except OSError as e:
            await self._input_lost(f"the input file {self.record['input_file_id']} cannot be read: {e.strerror or e}")
            return
        if self.num_lines == 0:
            await self._fail("empty_file", f"the input file {self.record['input_file_id']} has no request lines")
            return
        done = await asyncio.to_thread(self._journaled, fingerprint)
        left = [line for line in lines if line.custom_id not in done]
        self.checked = True
        if self.stopping == "closed":
            return
        if self.stopping is not None or self.record["status"] == "cancelling":  # cancelled while checked, or
            await self.finalize(self.stopping or "cancelled", left)  # before the server stopped: end it
            return
        self.journal = BatchJournal(self.service.store.journal_path(self.id), header(self.id, fingerprint))
        self._update(status="in_progress", in_progress_at=self.record.get("in_progress_at") or _now())
        for line in left:
            ticket = Ticket(f"{self.id}:{line.number}", line.predicted_len, lane="batch", group=self.group,
                            preemptible=line.continuable, prompt_tokens=line.prompt_chars // 4 + 8)  # fmt: skip
            call = LineCall(line, ticket, self.target, self)
            self.calls[ticket] = call
            self.service.dispatcher.submit(ticket, call.granted, call.preempted)
        if not self.calls:
            await self.finalize("completed")
        else:
            await self._finished.wait()

    async def _check(self) -> tuple[list[Line], str]:
        """Every line checked (in a thread) and predicted (a chunk at a time); the input's digest."""
        limit = self.service.config.max_tokens_limit
        checked, fingerprint = await asyncio.to_thread(
            lambda: (list(read_lines(self.input, self.record["endpoint"], limit)), input_digest(self.input))
        )
        lines = [entry for entry, _ in checked if isinstance(entry, Line)]
        self.errors = [entry for entry, _ in checked if isinstance(entry, LineError)]
        self.num_lines = len(checked)
        items = [(text, entry.max_tokens) for entry, text in checked if isinstance(entry, Line)]
        predicted = await self.service.predictions.predict_many(items)
        for line, length in zip(lines, predicted, strict=True):
            line.predicted_len = length
        return lines, fingerprint

    def _journaled(self, fingerprint: str) -> set[str]:
        """The custom_ids the journal already holds (a restart), if it is this batch's."""
        store = self.service.store
        head, entries = read_journal(store.journal_path(self.id))
        expected = header(self.id, fingerprint)
        if head != expected and (head is not None or entries):
            found = (head or {}).get(HEADER)
            why = (f"its header {found} does not match this batch and input {expected[HEADER]}" if found else
                   "it has no header naming its batch and input")  # fmt: skip
            store.quarantine_journal(self.id, f"{why}: the batch runs from the start")
            return set()
        self.num_done = sum(1 for e in entries.values() if e.answered)
        self.num_failed = len(entries) - self.num_done
        return set(entries)

    # -- outcomes ----------------------------------------------------------------------------------

    def settle(self, call: LineCall, outcome: Outcome) -> None:
        """What a call's attempt came to, once its slot is free."""
        if isinstance(outcome, Fault):
            self._fault(call, outcome)
        elif isinstance(outcome, Answered):
            self._answered(call, outcome.body)
        elif isinstance(outcome, Refused):
            self._ended(call, outcome.status, outcome.body)
        else:
            assert isinstance(outcome, Broken)
            message = f"seqsched could not run this request: {outcome.why}"
            self._ended(call, 500, {"error": {"message": message, "type": "internal_error", "code": 500}})

    def broke(self, error: Exception) -> None:
        """A bug in the batch's own bookkeeping: the batch fails, saying so, with what its
        journal holds in its files and the lines not run in its error file."""
        if self.stopping is None:
            self._set_errors("server_error", f"the batch failed inside seqsched ({type(error).__name__}: {error})")
            asyncio.get_running_loop().create_task(self.stop("failed"))

    def _fault(self, call: LineCall, fault: Fault) -> None:
        call.faults += 1
        self.service.metrics.batch_retries.labels(fault.kind).inc()
        if call.faults > MAX_RETRIES:
            message = f"the upstream failed {call.faults} times; the last: {fault.why}"
            self._ended(call, 502, {"error": {"message": message, "type": "upstream_error", "code": 502}})
            return
        if call.upstream is not None and len(self.service.upstreams.upstreams) > 1:
            call.ticket.exclude |= {call.upstream}  # another upstream, while there is one
        delay = BACKOFF_S * 2 ** (call.faults - 1)
        log.warning("batch %s line %d: %s; retry %d of %d in %g s", self.id, call.line.number, fault.why,
                    call.faults, MAX_RETRIES, delay)  # fmt: skip
        call.retry = asyncio.get_running_loop().call_later(delay, self._again, call)

    def _again(self, call: LineCall) -> None:
        call.retry = None
        if call.done or self.stopping is not None:
            return
        if self.paused:
            self.held.append(call)
            return
        self.service.dispatcher.resubmit(call.ticket)  # continued from what it has

    def _answered(self, call: LineCall, body: dict[str, Any]) -> None:
        metrics = self.service.metrics
        usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
        tokens = len(call.progress.token_ids) or usage.get("completion_tokens") or 0  # type: ignore[union-attr]
        metrics.batch_tokens.inc(tokens if isinstance(tokens, int) else 0)
        metrics.batch_recomputed.inc(call.progress.num_recomputed)
        self._ended(call, 200, body, request_id=body.get("id"))

    def _ended(self, call: LineCall, status: int, body: Any, request_id: Any = None) -> None:
        notes = {"line": call.line.number, "predicted_len": call.ticket.predicted_len,
                 "num_preemptions": call.ticket.num_preemptions, "num_calls": call.progress.num_calls,
                 "num_faults": call.faults}  # fmt: skip
        line = {
            "id": f"batch_req_{digest(self.id, call.line.custom_id)}",
            "custom_id": call.line.custom_id,
            "response": {"status_code": status, "request_id": request_id, "body": body},
            "error": None,
            "seqsched": notes,
        }
        call.done = True
        self.service.dispatcher.withdraw(call.ticket)
        del self.calls[call.ticket]
        self.service.metrics.batch_requests.labels("completed" if status == 200 else "failed").inc()
        assert self.journal is not None
        for written in self.journal.append(line):
            self._count(written)
        if self.journal.error is not None:
            self._pause()
        self._maybe_done()

    def _count(self, line: dict[str, Any]) -> None:
        if line["response"]["status_code"] == 200:
            self.num_done += 1
        else:
            self.num_failed += 1

    def _maybe_done(self) -> None:
        if not self.calls and self.stopping is None and not self.paused:
            asyncio.get_running_loop().create_task(self.finalize("completed"))

    # -- a full disk --------------------------------------------------------------------------------

    def _pause(self) -> None:
        """The journal refused an answer: the waiting lines leave the door until it takes it."""
        assert self.journal is not None
        self.service.metrics.batch_disk_errors.inc()
        if not self.paused:
            log.warning("batch %s paused: %s", self.id, self.journal.error)
        self.paused = True
        self._set_errors("disk_error", f"paused: an answer could not be journaled ({self.journal.error}); "
                         "the batch goes on when the disk takes it")  # fmt: skip
        for call in self.calls.values():
            if call not in self.held and self.service.dispatcher.hold(call.ticket):
                self.held.append(call)

    def tick(self) -> None:
        """Every second: a paused batch tries its journal again, and an unfinished finalize."""
        journal = self.journal
        if self.paused and journal is not None and self.stopping is None:
            for line in journal.flush():
                self._count(line)
            if journal.error is not None:
                return
            log.warning("batch %s resumed: its answers are on disk", self.id)
            self.paused = False
            self._set_errors(None, None)
            held, self.held = self.held, []
            for call in held:
                if not call.done and call.retry is None:
                    self.service.dispatcher.resubmit(call.ticket)
            self._maybe_done()
        elif self.unfinalized is not None:
            status, unfinished = self.unfinalized
            self.unfinalized = None
            asyncio.get_running_loop().create_task(self.finalize(status, unfinished))

    # -- endings -------------------------------------------------------------------------------------

    async def stop(self, why: str) -> None:
        """Cancel (``cancelled``), expire (``expired``), fail (``failed``: a bug) or pause for
        a restart (``closed``): no line is sent again; those running are stopped (their
        upstream calls closed)."""
        if self.stopping is not None:
            return
        self.stopping = why
        if why == "cancelled":
            self._update(status="cancelling", cancelling_at=_now())
        if not self.checked:  # the check is under way: ``run`` ends the batch when it is done
            if why == "closed":
                self._finished.set()
            return
        dispatcher = self.service.dispatcher
        for ticket in self.calls:  # out of the queue first: no slot given back below goes to them
            dispatcher.hold(ticket)
        tasks = [task for call in self.calls.values() if (task := call.stop()) is not None]
        for ticket in list(self.calls):
            dispatcher.withdraw(ticket)
        await asyncio.gather(*tasks, return_exceptions=True)
        if why == "closed":
            if self.journal is not None:
                self.journal.flush()
                self.journal.close()
            self._finished.set()
        else:
            await self.finalize(why)

    async def finalize(self, status: str, unfinished: list[Line] | None = None) -> None:
        """Write the output and error files from the journal (in line order) and end the
        batch as ``status``; a cancelled or expired batch's ``unfinished`` lines go to its
        error file. A disk that refuses leaves the batch as it was, tried again each second."""
        if unfinished is None:
            unfinished = [c.line for c in self.calls.values()] if status in ("cancelled", "expired", "failed") else []
        if status == "completed" and self.record["status"] != "finalizing":
            self._update(status="finalizing", finalizing_at=_now())
        if self.journal is not None:
            for line in self.journal.flush():
                self._count(line)
            if self.journal.error is not None:
                self._retry_finalize(status, unfinished, self.journal.error)
                return
            self.journal.close()
        extra = [Extra(e.number, e.custom_id, e.message) for e in self.errors]
        ended = "failed" if status == "failed" else f"was {status}"
        extra += [Extra(line.number, line.custom_id, f"the batch {ended} before this request ran", f"batch_{status}")
                  for line in unfinished]  # fmt: skip
        try:
            files = await asyncio.to_thread(write_outputs, self.service.store, self.id, self.num_lines, extra)
        except OSError as e:
            await asyncio.to_thread(remove_partial, self.service.store, self.id)
            self._retry_finalize(status, unfinished, str(e))
            return
        self.record["errors"] = None if status != "failed" else self.record.get("errors")
        self._update(status=status, **files, **{f"{status}_at": _now()})
        self._finished.set()
        self.service.ended(self)

    def _retry_finalize(self, status: str, unfinished: list[Line], why: str) -> None:
        self.service.metrics.batch_disk_errors.inc()
        log.warning("batch %s: its files could not be written (%s); tried again each second", self.id, why)
        self._set_errors("disk_error", f"the output could not be written ({why}); tried again each second")
        self.unfinalized = (status, unfinished)

    async def _input_lost(self, message: str) -> None:
        """The input is gone: what the journal holds is kept (output and error files), the
        batch fails, saying why."""
        self._set_errors("invalid_input_file", message)
        head, entries = read_journal(self.service.store.journal_path(self.id))
        if entries and (head or {}).get(HEADER, {}).get("id") == self.id:
            self.num_lines = self.record["request_counts"].get("total", len(entries))
            await self.finalize("failed")
            return
        await self._fail("invalid_input_file", message)

    async def _fail(self, code: str, message: str) -> None:
        self._set_errors(code, message, save=False)
        self._update(status="failed", failed_at=_now(), request_counts={"total": self.num_lines, "completed": 0,
                                                                         "failed": 0})  # fmt: skip
        self._finished.set()
        self.service.ended(self)

    # -- the record ----------------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Live: the record on disk is written when the status changes, not per answer."""
        return {"total": self.num_lines, "completed": self.num_done, "failed": self.num_failed + len(self.errors)}

    def _set_errors(self, code: str | None, message: str | None, save: bool = True) -> None:
        errors = None if code is None else {"object": "list", "data": [{"code": code, "message": message,
                                                                        "param": None, "line": None}]}  # fmt: skip
        if self.record.get("errors") != errors:
            self.record["errors"] = errors
            if save:
                self.service.store.save_batch(self.record)

    def _update(self, **changes: Any) -> None:
        self.record.update(changes)
        if "request_counts" not in changes and self.num_lines:
            self.record["request_counts"] = self.counts()
        self.service.store.save_batch(self.record)


def _now() -> int:
    return int(time.time())
