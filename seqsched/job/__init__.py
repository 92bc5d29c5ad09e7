"""A batch job: request file in, answers out, nothing lost.

A job reads as its steps: **read** the requests (``plan.py``), **plan** what to run (on
resume, which earlier answers it keeps), **load** the model (``run.py``: before any file
exists), **run** (each answer journaled the moment it exists), **write** the error file
and the output (``write.py``). The status file is written by one object
(``status.py``); the paths are checked, and earlier work refused, in ``paths.py``.

NOTE on what a job guarantees:
- Every path is checked before the model loads. No file of an earlier job (output,
  journal, error file, status) is ever replaced unless the job is told ``overwrite`` (or
  ``resume``, which continues it).
- A model that fails to load fails the job before it creates a file; a job that fails or
  is stopped before its first answer removes what it created (but a full disk's status,
  which says to resume): the corrected command runs as it is.
- Each answer is appended to the journal (``OUT.partial``) the moment it exists, so a
  killed job loses nothing that finished. ``resume`` reuses an answer only when its
  request line and the generation settings are unchanged (``data/journal.py``); it
  re-runs the rest and drops answers for ids no longer in the input.
- On success the output holds the answers, in input order; failed lines (bad input, or a
  request the engine refused) go to the error file with their ``custom_id``, line and
  message, as the OpenAI Batch API splits them; a status JSON gives the counts. Then the
  journal goes. The output is written atomically: it exists only when it is complete.
- A job stopped by a signal, or by an error, writes no output: the journal keeps what
  finished, and the status says ``interrupted`` or ``failed``.
"""

from __future__ import annotations

import dataclasses
import time
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from seqsched.data.answer_index import copy_lines
from seqsched.data.atomic import is_disk_full
from seqsched.data.journal import Journal
from seqsched.data.lock import job_lock
from seqsched.data.traces import read_length_map
from seqsched.job.paths import (
    STDIN,
    JobPaths,
    check_paths,
    job_paths,
    journal_path,
    refuse_existing,
    remove_stale_temporaries,
)
from seqsched.job.plan import JobInput, JobPlan, plan, read_input
from seqsched.job.run import run, runner
from seqsched.job.status import JobStatus
from seqsched.job.write import write_results
from seqsched.metrics import Metrics, compute_metrics
from seqsched.request import Request, RequestStatus
from seqsched.signals import Stopped, finishing

if TYPE_CHECKING:
    from seqsched.config import Progress, RunConfig

__all__ = ["STDIN", "JobPaths", "RunSummary", "check_paths", "execute", "job_paths", "journal_path"]


@dataclass(frozen=True)
class RunSummary:
    metrics: Metrics  # over the requests run this time
    num_lines: int  # answers in the output
    num_answered: int  # new answers
    num_resumed: int  # answers kept from the journal or an earlier output
    num_input_errors: int
    num_failed: int  # requests the engine refused (over the context, ...)
    num_changed: int  # earlier answers re-run because their request or settings changed
    num_dropped: int  # earlier answers whose custom_id is not in the input
    output_path: Path
    errors_path: Path
    num_oom_splits: int = 0  # micro-batches halved after running out of memory
    job_seconds: float = 0.0  # the whole job's wall time: reading, loading, generating, writing

    @property
    def num_errors(self) -> int:
        return self.num_input_errors + self.num_failed


def execute(config: RunConfig, progress: Progress | None = None, stdin: BinaryIO | None = None) -> RunSummary:
    """Run a resolved config; ``stdin`` is the input when it is ``-``. The job holds an
    exclusive lock on its output from here to its end (``data/lock.py``)."""
    began = time.perf_counter()
    paths = check_paths(config)
    with job_lock(paths.output):
        refuse_existing(config, paths)
        remove_stale_temporaries(paths)
        job = read_input(config, stdin)
        todo = plan(config, paths, job)
        run_requests = runner(config, todo.todo, _oracle_lengths(config, todo.todo)) if todo.todo else None
        summary = _run_and_write(config, paths, job, todo, run_requests, progress)
    return dataclasses.replace(summary, job_seconds=time.perf_counter() - began)


def _run_and_write(config: RunConfig, paths: JobPaths, job: JobInput, todo: JobPlan, run_requests: object,
                   progress: Progress | None) -> RunSummary:  # fmt: skip
    # Each answer's line lives in the journal only; ``where`` says where (-1: none), by request index.
    where = array("q", [-1]) * (max((r.index for r in job.requests), default=-1) + 1)
    if config.resume:  # the journal holds exactly the answers kept, in input order, written atomically
        order = [r for r in job.requests if r.request_id in todo.kept]
        for r, offset in zip(order, copy_lines((todo.kept[r.request_id] for r in order), paths.journal, paths.mode),
                             strict=True):  # fmt: skip
            where[r.index] = offset
    journal = Journal(paths.journal, fresh=not config.resume, mode=paths.mode)
    try:
        with JobStatus(paths, config, job.total) as status:
            report = run(config, run_requests, todo.todo, journal, where, progress)  # type: ignore[arg-type]
            failed = [res for res in report.results if res.status == RequestStatus.FINISHED_ERROR]
            with finishing():
                journal.close()
                num_lines = write_results(paths, job.requests, where, job.errors, failed)
                counts = {"completed": num_lines, "failed": len(job.errors) + len(failed), "resumed": len(todo.kept)}
                status.completed(counts)
                journal.remove()
    except BaseException as e:
        journal.close()
        _forget_if_empty(config, paths, e)
        raise
    return RunSummary(
        metrics=compute_metrics(report),
        num_lines=num_lines,
        num_answered=num_lines - len(todo.kept),
        num_resumed=len(todo.kept),
        num_input_errors=len(job.errors),
        num_failed=len(failed),
        num_changed=todo.num_changed,
        num_dropped=todo.num_dropped,
        output_path=paths.output,
        errors_path=paths.errors,
        num_oom_splits=report.num_oom_splits,
    )


def _forget_if_empty(config: RunConfig, paths: JobPaths, error: BaseException) -> None:
    """A fresh job that journaled nothing leaves no file to block the corrected command;
    but a full disk keeps its status (it says to free space and resume)."""
    if config.resume or (is_disk_full(error) and not isinstance(error, Stopped)):
        return
    if paths.journal.exists() and paths.journal.stat().st_size == 0:
        paths.journal.unlink()
        paths.status.unlink(missing_ok=True)


def _oracle_lengths(config: RunConfig, todo: list[Request]) -> dict[str, int] | None:
    """The oracle's lengths, read once, checked to cover every request to run."""
    if config.oracle_lengths is None:
        return None
    lengths = read_length_map(config.oracle_lengths)
    missing = [r.request_id for r in todo if r.request_id not in lengths]
    if missing:
        shown = ", ".join(repr(m) for m in missing[:5])
        raise ValueError(f"{config.oracle_lengths}: no length for {len(missing)} request(s): {shown}")
    return lengths
