"""One batch's life: its lines checked and predicted, each one sent through the batch lane,
its answers journaled as they come, and its output and error files written at the end.

NOTE on the lane. A line waits at the front door as a batch ticket (no coroutine while it
waits); when the door grants it a slot, a task makes its call (``continuation.py``: the
original request, streamed with token ids, or a continuation). When the door preempts it,
the task is cancelled, which closes the upstream call (vLLM aborts it), and the ids it
received are kept for the next grant. An upstream that fails (unreachable, 5xx, 429, a
stream cut short) gets the line back in the queue, continued from what it had, up to
``MAX_FAULTS`` times; then the line fails alone.

NOTE on restart. Every answer and failed line goes to the batch's journal the moment it
exists (``data/journal.py``). A server killed mid-batch, restarted on the same directory,
checks the lines again (deterministic), skips every line the journal holds, and sends the
rest: nothing lost, nothing answered twice (a line in flight at the kill was never
journaled: it runs again from its start).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import itertools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import aiohttp

from seqsched.data.answer_index import Located, copy_lines, iter_objects
from seqsched.data.batch_io import error_line, write_jsonl
from seqsched.data.journal import Journal
from seqsched.schedule.batch_lane import BATCH_PRIORITY
from seqsched.schedule.front_door import Ticket
from seqsched.serve.batches.continuation import Progress, absorb, answer, encode, next_call
from seqsched.serve.batches.lines import ENDPOINTS, Line, LineError, body_of, read_lines
from seqsched.serve.batches.store import MODE, Store
from seqsched.serve.upstream import UNREACHABLE, Exchange

if TYPE_CHECKING:
    from seqsched.serve.config import ServeConfig
    from seqsched.serve.dispatcher import Dispatcher
    from seqsched.serve.metrics import ServeMetrics
    from seqsched.serve.predictor import Batcher
    from seqsched.serve.upstream import Upstreams


class Host(Protocol):
    """What a batch runs in (the service, ``service.py``)."""

    config: ServeConfig
    store: Store
    dispatcher: Dispatcher
    upstreams: Upstreams
    predictions: Batcher
    metrics: ServeMetrics

    def ended(self, runner: BatchRunner) -> None: ...

MAX_FAULTS = 3  # upstream faults a line may meet before it fails alone
_TOKEN = b'"finish_reason":null'
_groups = itertools.count()


@dataclass(eq=False)
class Item:
    """One line at work."""

    line: Line
    ticket: Ticket
    progress: Progress = field(default_factory=Progress)
    task: asyncio.Task[None] | None = None
    preempted: bool = False
    faults: int = 0


class BatchRunner:
    def __init__(self, service: Host, record: dict[str, Any]) -> None:
        self.service = service
        self.record = record
        self.id: str = record["id"]
        self.endpoint = ENDPOINTS[record["endpoint"]]
        self.input = service.store.file_path(record["input_file_id"])
        self.journal_path = service.store.journal_path(self.id)
        self.group = next(_groups)
        self.items: dict[Ticket, Item] = {}
        self.errors: list[LineError] = []
        self.journal: Journal | None = None
        self.num_lines = 0
        self.num_done = 0
        self.num_failed = 0
        self.stopping: str | None = None  # "cancelled" | "expired" | "closed"
        self.checked = False  # its lines are checked and predicted
        self._finished = asyncio.Event()

    # -- the life of a batch ---------------------------------------------------------------------

    async def run(self) -> None:
        """Check, predict and send every line not yet journaled; end when all are done."""
        try:
            lines = await self._check()
        except OSError as e:
            await self._fail(f"the input file {self.record['input_file_id']} cannot be read: {e.strerror or e}")
            return
        done = self._journaled()
        left = [line for line in lines if line.custom_id not in done]
        self.checked = True
        if self.stopping == "closed":
            return
        if self.stopping is not None or self.record["status"] == "cancelling":  # cancelled while checked, or
            await self.finalize(self.stopping or "cancelled", left)  # before the server stopped: end it
            return
        self.journal = Journal(self.journal_path, fresh=False, mode=MODE)
        self._update(status="in_progress", in_progress_at=self.record.get("in_progress_at") or _now())
        for line in left:
            ticket = Ticket(f"{self.id}:{line.number}", line.predicted_len, lane="batch", group=self.group,
                            preemptible=line.continuable)  # fmt: skip
            item = Item(line, ticket)
            self.items[ticket] = item
            self.service.dispatcher.submit(ticket, functools.partial(self._granted, item),
                                           functools.partial(self._preempt, item))  # fmt: skip
        if not self.items:
            await self.finalize("completed")
        else:
            await self._finished.wait()

    async def _check(self) -> list[Line]:
        """Every line checked (in a thread) and predicted (a chunk at a time)."""
        checked = await asyncio.to_thread(lambda: list(read_lines(self.input, self.record["endpoint"],
                                                                  self.service.config.max_tokens_limit)))  # fmt: skip
        lines = [entry for entry, _ in checked if isinstance(entry, Line)]
        self.errors = [entry for entry, _ in checked if isinstance(entry, LineError)]
        self.num_lines = len(checked)
        items = [(text, entry.max_tokens) for entry, text in checked if isinstance(entry, Line)]
        predicted = await self.service.predictions.predict_many(items)
        for line, length in zip(lines, predicted, strict=True):
            line.predicted_len = length
        return lines

    def _journaled(self) -> dict[str, int]:
        """custom_id -> line number of each line the journal already holds (a restart)."""
        from seqsched.data.journal import cut_torn_tail

        cut_torn_tail(self.journal_path)
        done: dict[str, int] = {}
        if self.journal_path.exists():
            for _, line in iter_objects(self.journal_path):
                if line is not None and isinstance(line.get("custom_id"), str):
                    done[line["custom_id"]] = line.get("seqsched", {}).get("line", 0)
                    if _is_answer(line):
                        self.num_done += 1
                    else:
                        self.num_failed += 1
        return done

    # -- a line at work --------------------------------------------------------------------------

    def _granted(self, item: Item, lease: int) -> None:
        item.task = asyncio.get_running_loop().create_task(self._call(item, lease))

    def _preempt(self, item: Item) -> None:
        if item.task is not None and not item.task.done():
            item.preempted = True
            item.task.cancel()

    async def _call(self, item: Item, lease: int) -> None:
        ticket, service = item.ticket, self.service
        try:
            original = await asyncio.to_thread(body_of, self.input, item.line)
            path, body = next_call(original, self.endpoint, item.progress)
            priority = BATCH_PRIORITY + ticket.predicted_len
            exchange = await service.upstreams.send_on(
                ticket, lease, path, lambda p: encode(body, priority if p else None)
            )
            try:
                finished = await self._stream(item, exchange)
            finally:
                exchange.close()
        except asyncio.CancelledError:
            if not item.preempted:
                raise  # the batch was cancelled, or the server stops
            item.preempted = False
            if item.progress.finish_reason is None:
                return  # it waits again, to be continued
            self.service.dispatcher.withdraw(ticket)  # it had finished when the door stopped it
            finished = True
        except (*UNREACHABLE, aiohttp.ClientError, asyncio.TimeoutError) as e:
            self._fault(item, f"{type(e).__name__}: {e}")
            return
        if finished is True:
            self._answered(item, original)
        elif isinstance(finished, tuple):
            self._request_failed(item, *finished)

    async def _stream(self, item: Item, exchange: Exchange) -> bool | tuple[int, Any] | None:
        """Read the call to its end: True (finished), (status, body) (refused: the line
        fails), None (a fault: it goes back to the queue)."""
        if exchange.status != 200:
            content = await exchange.read()
            if 400 <= exchange.status < 500 and exchange.status not in (408, 429):
                return exchange.status, _json_or_text(content)
            self._fault(item, f"upstream {exchange.upstream.url} answered {exchange.status}")
            return None
        chunks: list[bytes] = []
        counted = len(item.progress.token_ids)  # what earlier calls made
        try:
            async for raw in exchange.answer.content.iter_any():
                chunks.append(raw)
                counted += raw.count(_TOKEN)
                self.service.dispatcher.progress(item.ticket, counted)
        finally:  # whatever came, complete events only, is kept (a preemption lands here too)
            absorb(item.progress, b"".join(chunks))
        if item.progress.finish_reason is None:
            self._fault(item, f"upstream {exchange.upstream.url} ended the stream before the answer did")
            return None
        return True

    def _fault(self, item: Item, why: str) -> None:
        item.faults += 1
        if item.faults >= MAX_FAULTS:
            self._request_failed(item, 502, {"error": {"message": f"upstream failed {item.faults} times: {why}"}})
            return
        self.service.dispatcher.resubmit(item.ticket)  # continued from what it has

    # -- results -----------------------------------------------------------------------------------

    def _answered(self, item: Item, original: dict[str, Any]) -> None:
        body = answer(item.progress, self.endpoint, original)
        line = {
            "id": f"batch_req_{_digest(self.id, item.line.custom_id)}",
            "custom_id": item.line.custom_id,
            "response": {"status_code": 200, "request_id": body.get("id"), "body": body},
            "error": None,
            "seqsched": self._notes(item),
        }
        self.num_done += 1
        metrics = self.service.metrics
        metrics.batch_tokens.inc(len(item.progress.token_ids) or body["usage"]["completion_tokens"])
        metrics.batch_recomputed.inc(item.progress.num_recomputed)
        metrics.batch_requests.labels("completed").inc()
        self._journal(item, line)

    def _request_failed(self, item: Item, status: int, body: Any) -> None:
        line = {
            "id": f"batch_req_{_digest(self.id, item.line.custom_id)}",
            "custom_id": item.line.custom_id,
            "response": {"status_code": status, "request_id": None, "body": body},
            "error": None,
            "seqsched": self._notes(item),
        }
        self.num_failed += 1
        self.service.metrics.batch_requests.labels("failed").inc()
        self._journal(item, line)

    def _notes(self, item: Item) -> dict[str, Any]:
        return {"line": item.line.number, "predicted_len": item.ticket.predicted_len,
                "num_preemptions": item.ticket.num_preemptions, "num_calls": item.progress.num_calls}  # fmt: skip

    def _journal(self, item: Item, line: dict[str, Any]) -> None:
        assert self.journal is not None
        self.journal.append(line)
        self.service.dispatcher.withdraw(item.ticket)
        del self.items[item.ticket]
        if not self.items and self.stopping is None:
            asyncio.get_running_loop().create_task(self.finalize("completed"))

    # -- endings -------------------------------------------------------------------------------------

    async def stop(self, why: str) -> None:
        """Cancel (``cancelled``), expire (``expired``) or pause for a restart (``closed``):
        no line is sent again; those running are stopped (their upstream calls closed)."""
        if self.stopping is not None:
            return
        self.stopping = why
        if why == "cancelled":
            self._update(status="cancelling", cancelling_at=_now())
        if not self.checked:  # the check is under way: ``run`` ends the batch when it is done
            if why == "closed":
                self._finished.set()
            return
        tasks = [item.task for item in self.items.values() if item.task is not None and not item.task.done()]
        for ticket in list(self.items):
            self.service.dispatcher.withdraw(ticket)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if why == "closed":
            if self.journal is not None:
                self.journal.close()
            self._finished.set()
        else:
            await self.finalize(why)

    async def finalize(self, status: str, unfinished: list[Line] | None = None) -> None:
        """Write the output and error files (in line order) and end the batch as ``status``;
        a cancelled or expired batch's ``unfinished`` lines go to its error file."""
        if status == "completed":
            self._update(status="finalizing", finalizing_at=_now())
        if self.journal is not None:
            self.journal.close()
        if unfinished is None:
            unfinished = [item.line for item in self.items.values()] if status in ("cancelled", "expired") else []
        output_id, error_id, counts = await asyncio.to_thread(self._write_files, unfinished, status)
        self._update(status=status, output_file_id=output_id, error_file_id=error_id, request_counts=counts,
                     **{f"{status}_at": _now()})  # fmt: skip
        self.journal_path.unlink(missing_ok=True)
        self._finished.set()
        self.service.ended(self)

    async def _fail(self, message: str) -> None:
        errors = {"object": "list", "data": [{"code": "invalid_input_file", "message": message, "param": None,
                                             "line": None}]}  # fmt: skip
        self._update(status="failed", failed_at=_now(), errors=errors)
        self._finished.set()
        self.service.ended(self)

    def _write_files(self, unfinished: list[Line], status: str) -> tuple[str | None, str | None, dict[str, int]]:
        """The answers (status 200) to the output file and the rest to the error file, each
        in line order; files with no line are not made (OpenAI's ids are then null)."""
        answers: list[tuple[int, int]] = []
        failed: list[tuple[int, int]] = []
        if self.journal_path.exists():
            for offset, line in _offsets(self.journal_path):
                (answers if _is_answer(line) else failed).append((line.get("seqsched", {}).get("line", 0), offset))
        code = f"batch_{status}"
        extra = [(e.number, error_line(e.custom_id, e.message)) for e in self.errors]
        extra += [(line.number, error_line(line.custom_id, f"the batch was {status} before this request ran", code))
                  for line in unfinished]  # fmt: skip
        store = self.service.store
        output_id = error_id = None
        if answers:
            output_id = _file_id(self.id, "output")
            copy_lines(
                (Located(self.journal_path, off, None) for _, off in sorted(answers)), store.file_path(output_id), MODE
            )
            store.save_file(
                output_id, f"{self.id}_output.jsonl", "batch_output", store.file_path(output_id).stat().st_size
            )
        if failed or extra:
            error_id = _file_id(self.id, "errors")
            self._write_errors(store.file_path(error_id), sorted(failed), sorted(extra, key=lambda p: p[0]))
            store.save_file(
                error_id, f"{self.id}_errors.jsonl", "batch_output", store.file_path(error_id).stat().st_size
            )
        counts = {"total": self.num_lines, "completed": len(answers), "failed": len(failed) + len(extra)}
        return output_id, error_id, counts

    def _write_errors(self, path: Path, failed: list[tuple[int, int]], extra: list[tuple[int, dict[str, Any]]]) -> None:
        lines: list[tuple[int, dict[str, Any]]] = list(extra)
        if failed:
            with self.journal_path.open("rb") as f:
                for number, offset in failed:
                    f.seek(offset)
                    lines.append((number, json.loads(f.readline())))
        write_jsonl(path, [line for _, line in sorted(lines, key=lambda p: p[0])], MODE)

    # -- the record ----------------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Live: the record on disk is written when the status changes, not per answer."""
        return {"total": self.num_lines, "completed": self.num_done, "failed": self.num_failed + len(self.errors)}

    def _update(self, **changes: Any) -> None:
        self.record.update(changes)
        if "request_counts" not in changes:
            self.record["request_counts"] = self.counts()
        self.service.store.save_batch(self.record)


def _is_answer(line: dict[str, Any]) -> bool:
    return line.get("error") is None and (line.get("response") or {}).get("status_code") == 200


def _offsets(path: Path) -> list[tuple[int, dict[str, Any]]]:
    out, offset = [], 0
    with path.open("rb") as f:
        for raw in f:
            try:
                line = json.loads(raw)
            except ValueError:
                line = None
            if isinstance(line, dict):
                out.append((offset, line))
            offset += len(raw)
    return out


def _json_or_text(content: bytes) -> Any:
    try:
        return json.loads(content)
    except ValueError:
        return {"error": {"message": content[:300].decode("utf-8", "replace")}}


def _digest(*parts: str) -> str:
    return hashlib.sha1("\x00".join(parts).encode("utf-8")).hexdigest()[:24]


def _file_id(batch_id: str, what: str) -> str:
    """Deterministic: a finalize redone after a crash writes the same file, not a second."""
    return f"file-{_digest(batch_id, what)}"


def _now() -> int:
    return int(time.time())
