"""The Files and Batches API's state: files kept under ``--batch-dir``, batches created,
run by the batch lane (``runner.py``), listed, cancelled and expired; batches a stopped
server left unfinished are resumed when it starts again.

Limits, each with its own 4xx naming it: a file's size (413), a batch's lines (400),
batches not yet ended at once (429). A file a batch reads cannot be deleted while the
batch runs (409).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Any

from seqsched.serve.batches.lines import ENDPOINTS, count_lines
from seqsched.serve.batches.runner import BatchRunner
from seqsched.serve.batches.store import ACTIVE, Store
from seqsched.serve.config import BatchLimits, ServeConfig
from seqsched.serve.dispatcher import Dispatcher
from seqsched.serve.metrics import ServeMetrics
from seqsched.serve.predictor import Batcher
from seqsched.serve.protocol import ApiError
from seqsched.serve.upstream import Upstreams

log = logging.getLogger("seqsched.serve")
WINDOW_S = 24 * 3600  # "24h", the one completion window OpenAI offers
_TICK_S = 1.0


class Batches:
    def __init__(self, config: ServeConfig, dispatcher: Dispatcher, upstreams: Upstreams, predictions: Batcher,
                 metrics: ServeMetrics) -> None:  # fmt: skip
        assert config.batch_dir is not None
        self.config = config
        self.limits: BatchLimits = config.batch_limits
        self.store = Store(config.batch_dir)
        self.dispatcher, self.upstreams, self.predictions, self.metrics = dispatcher, upstreams, predictions, metrics
        self.runners: dict[str, BatchRunner] = {}
        self._creating = 0  # creations past the limit's check, not yet recorded
        self._tasks: set[asyncio.Task[None]] = set()
        self._ticker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Index the directory (damaged records quarantined, logged), resume every batch a
        stopped server left unfinished, start the lane's clock."""
        await asyncio.to_thread(self.store.load)
        for record in self.store.active_batches():
            log.warning("seqsched serve: resuming batch %s (%s)", record["id"], record["status"])
            self._run(BatchRunner(self, record))
        self._ticker = asyncio.get_running_loop().create_task(self._tick())

    async def close(self) -> None:
        """Stop running batches without ending them: a restart resumes them."""
        if self._ticker is not None:
            self._ticker.cancel()
        await asyncio.gather(*(r.stop("closed") for r in list(self.runners.values())), return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- files ------------------------------------------------------------------------------------

    def new_file(self, filename: str, purpose: str) -> tuple[str, Path]:
        if purpose != "batch":
            raise ApiError(400, f"purpose must be 'batch' (seqsched keeps files for batches), got {purpose!r}",
                           "purpose")  # fmt: skip
        file_id = self.store.new_file_id()
        return file_id, self.store.file_path(file_id)

    def file(self, file_id: str) -> dict[str, Any]:
        record = self.store.file(file_id)
        if record is None:
            raise ApiError(404, f"no file {file_id!r}", "file_id", kind="not_found_error")
        return record

    def delete_file(self, file_id: str) -> dict[str, Any]:
        self.file(file_id)
        users = [r.id for r in self.runners.values() if r.record["input_file_id"] == file_id]
        if users:
            raise ApiError(409, f"file {file_id} is the input of batch {users[0]}, which is running: cancel it first",
                           "file_id", kind="conflict")  # fmt: skip
        self.store.delete_file(file_id)
        return {"id": file_id, "object": "file", "deleted": True}

    # -- batches ------------------------------------------------------------------------------------

    async def create(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ApiError(400, "the request body must be a JSON object")
        file_id, endpoint, window = body.get("input_file_id"), body.get("endpoint"), body.get("completion_window")
        if endpoint not in ENDPOINTS:
            raise ApiError(400, f"endpoint must be one of {', '.join(ENDPOINTS)}, got {_shown(endpoint)}", "endpoint")
        if window != "24h":
            raise ApiError(400, f"completion_window must be '24h', got {_shown(window)}", "completion_window")
        metadata = body.get("metadata")
        if metadata is not None:
            _check_metadata(metadata)
        if not isinstance(file_id, str):
            raise ApiError(400, f"input_file_id must be a file id, got {_shown(file_id)}", "input_file_id")
        if self.file(file_id)["purpose"] != "batch":
            raise ApiError(400, f"file {file_id} was not uploaded with purpose 'batch'", "input_file_id")
        active = sum(1 for _ in self.store.active_batches()) + self._creating
        if active >= self.limits.max_active_batches:
            raise ApiError(429, f"{active} batches are not yet done, the most this server runs at once "
                           f"(--max-active-batches {self.limits.max_active_batches}): wait for one to end",
                           kind="rate_limit_exceeded")  # fmt: skip
        self._creating += 1  # counted from here, before the first await: creation is atomic
        try:
            try:
                lines = await asyncio.to_thread(count_lines, self.store.file_path(file_id))
            except OSError as e:
                raise ApiError(400, f"file {file_id} cannot be read: {e}", "input_file_id") from None
            if lines > self.limits.max_batch_lines:
                raise ApiError(400, f"file {file_id} has {lines:,} lines, over this server's limit of "
                               f"{self.limits.max_batch_lines:,} a batch (--max-batch-lines)",
                               "input_file_id")  # fmt: skip
            now = int(time.time())
            record: dict[str, Any] = {
                "id": self.store.new_batch_id(), "object": "batch", "endpoint": endpoint, "errors": None,
                "input_file_id": file_id, "completion_window": "24h", "status": "validating",
                "output_file_id": None, "error_file_id": None, "created_at": now, "in_progress_at": None,
                "expires_at": now + WINDOW_S, "finalizing_at": None, "completed_at": None, "failed_at": None,
                "expired_at": None, "cancelling_at": None, "cancelled_at": None,
                "request_counts": {"total": lines, "completed": 0, "failed": 0}, "metadata": metadata,
            }  # fmt: skip
            if not self.store.save_batch(record):
                why = self.store.unsaved.get(record["id"], "")
                self.store.forget_batch(record["id"])
                raise ApiError(507, f"the batch could not be recorded: {why}", kind="insufficient_storage")
            self._run(BatchRunner(self, record))
        finally:
            self._creating -= 1
        return self.get(record["id"])

    def get(self, batch_id: str) -> dict[str, Any]:
        runner = self.runners.get(batch_id)
        if runner is not None:
            return {**runner.record, "request_counts": runner.counts() if runner.num_lines else
                    runner.record["request_counts"]}  # fmt: skip
        record = self.store.batch(batch_id)
        if record is None:
            raise ApiError(404, f"no batch {batch_id!r}", "batch_id", kind="not_found_error")
        return record

    def list(self, after: str | None, limit: int) -> dict[str, Any]:
        """Newest first; ``after`` an id from an earlier page."""
        if not 1 <= limit <= 100:
            raise ApiError(400, f"limit must be in [1, 100], got {limit}", "limit")
        batches = self.store.list_batches()
        if after is not None:
            ids = [b["id"] for b in batches]
            if after not in ids:
                raise ApiError(400, f"after: no batch {after!r}", "after")
            batches = batches[ids.index(after) + 1 :]
        page = [self.get(b["id"]) for b in batches[:limit]]
        return {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None, "has_more": len(batches) > limit}  # fmt: skip

    async def cancel(self, batch_id: str) -> dict[str, Any]:
        record = self.get(batch_id)
        runner = self.runners.get(batch_id)
        if record["status"] not in ACTIVE or runner is None:
            raise ApiError(409, f"batch {batch_id} is {record['status']}: only one not yet done can be cancelled",
                           kind="conflict")  # fmt: skip
        if record["status"] == "cancelling":
            return record
        task = asyncio.get_running_loop().create_task(runner.stop("cancelled"))
        self._keep(task)
        await asyncio.sleep(0)  # the status is cancelling once this returns
        return self.get(batch_id)

    def ended(self, runner: BatchRunner) -> None:
        self.runners.pop(runner.id, None)

    # -- inside -------------------------------------------------------------------------------------

    def _run(self, runner: BatchRunner) -> None:
        self.runners[runner.id] = runner
        self._keep(asyncio.get_running_loop().create_task(self._guard(runner)))

    async def _guard(self, runner: BatchRunner) -> None:
        try:
            await runner.run()
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a bug must not leave a batch silently stuck: it fails, loudly
            log.exception("batch %s failed", runner.id)
            with contextlib.suppress(Exception):
                await runner.stop("closed")
            runner.record.update(status="failed", failed_at=int(time.time()), errors={"object": "list", "data": [
                {"code": "server_error", "message": f"the batch failed inside seqsched ({type(e).__name__}: {e})",
                 "param": None, "line": None}]})  # fmt: skip
            self.store.save_batch(runner.record)
            self.ended(runner)

    def _keep(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _tick(self) -> None:
        """Every second: the governor may let more batch work in (no event does that on its
        own while nothing ends), records and answers a full disk refused are written again,
        and batches past their window expire."""
        while True:
            await asyncio.sleep(_TICK_S)
            try:
                self.dispatcher.pump()
                self.store.retry()
                now = time.time()
                for runner in list(self.runners.values()):
                    runner.tick()
                    if runner.record["expires_at"] <= now and runner.stopping is None:
                        self._keep(asyncio.get_running_loop().create_task(runner.stop("expired")))
            except Exception:  # the clock must go on
                log.exception("the batches' clock")


METADATA_PAIRS, METADATA_KEY_CHARS, METADATA_VALUE_CHARS = 16, 64, 512  # OpenAI's limits


def _check_metadata(value: Any) -> None:
    """OpenAI's rule: at most 16 pairs, keys of at most 64 characters, string values of at most 512."""
    if not isinstance(value, dict):
        raise ApiError(400, f"metadata must be an object of string pairs, got {_shown(value)}", "metadata")
    if len(value) > METADATA_PAIRS:
        raise ApiError(400, f"metadata has {len(value)} pairs, over the limit of {METADATA_PAIRS}", "metadata")
    for key, item in value.items():
        if len(key) > METADATA_KEY_CHARS:
            raise ApiError(400, f"metadata key {_shown(key)} is {len(key)} characters, over the limit of "
                           f"{METADATA_KEY_CHARS}", "metadata")  # fmt: skip
        if not isinstance(item, str):
            raise ApiError(400, f"metadata[{_shown(key)}] must be a string, got {_shown(item)}", "metadata")
        if len(item) > METADATA_VALUE_CHARS:
            raise ApiError(400, f"metadata[{_shown(key)}] is {len(item):,} characters, over the limit of "
                           f"{METADATA_VALUE_CHARS}", "metadata")  # fmt: skip


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
