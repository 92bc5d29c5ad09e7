"""A batch job: request file in, answers out, nothing lost.

NOTE on what a job guarantees:
- Every path is checked before the model loads. An existing output or journal is never
  replaced unless the job is told ``overwrite`` (or ``resume``, which continues it).
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

import contextlib
import dataclasses
import json
import os
import sys
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from glob import escape as glob_escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

from seqsched.data.answer_index import Located, copy_lines, scan_answers
from seqsched.data.atomic import is_disk_full
from seqsched.data.batch_io import error_line, is_answered, read_requests, result_line, write_json, write_jsonl
from seqsched.data.journal import Journal, answer_fingerprint, settings_fingerprint
from seqsched.data.lock import job_lock, lock_path
from seqsched.data.traces import read_length_map
from seqsched.engine.source import check_device, check_hub_model, check_source
from seqsched.eta import PredictedEta, format_seconds
from seqsched.metrics import Metrics, compute_metrics
from seqsched.pipeline import Pipeline, RunReport
from seqsched.request import Request, RequestStatus, Result
from seqsched.signals import Stopped, finishing

if TYPE_CHECKING:
    from seqsched.config import Progress, RunConfig
    from seqsched.data.batch_io import InputError

STDIN = Path("-")


@dataclass(frozen=True)
class JobPaths:
    output: Path
    errors: Path
    status: Path
    journal: Path
    mode: int = 0o666  # the files' permissions (less the umask): the input's, so answers are no more readable


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


def job_paths(output: Path, errors: Path | None = None) -> JobPaths:
    return JobPaths(
        output=output,
        errors=errors if errors is not None else output.with_name(output.name + ".errors.jsonl"),
        status=output.with_name(output.name + ".status.json"),
        journal=journal_path(output),
    )


def journal_path(output_path: Path) -> Path:
    """Where answers are appended as they finish, until the ordered output is written."""
    return output_path.with_name(output_path.name + ".partial")


def check_paths(config: RunConfig) -> JobPaths:
    """Every path the job will read or write, checked before anything loads: each file
    the job creates is not a symbolic link or a directory, its directory is writable, and
    no two of the job's files (the input included) are the same file."""
    paths = job_paths(config.output_path, config.errors_path)
    if config.input_path != STDIN:
        _readable_file(config.input_path, "input")
    created = {
        "output": paths.output,
        "error file": paths.errors,
        "status file": paths.status,
        "journal": paths.journal,
        "lock file": lock_path(paths.output),
    }
    for what, path in created.items():
        if path.is_symlink():
            raise ValueError(f"the {what} {path} is a symbolic link: seqsched does not write through links")
        if path.is_dir():
            raise ValueError(f"the {what} path {path} is a directory")
        _writable_dir(path.parent, what, path)
    named = {**({"input": config.input_path} if config.input_path != STDIN else {}), **created}
    seen: dict[Path, str] = {}
    for what, path in named.items():
        same = seen.setdefault(path.resolve(), what)
        if same != what:
            raise ValueError(f"the {what} and the {same} would be the same file ({path}): give them different paths")
    if config.predictor is not None and not Path(config.predictor).is_dir():
        raise ValueError(f"predictor {config.predictor} is not a directory (a saved predictor)")
    if config.oracle_lengths is not None:
        _readable_file(config.oracle_lengths, "oracle lengths")
    check_source(str(config.engine.model), "model")
    check_source(config.engine.tokenizer_path, "tokenizer")
    check_hub_model(str(config.engine.model))
    check_device(config.engine.device)
    if config.input_path != STDIN:
        paths = dataclasses.replace(paths, mode=config.input_path.stat().st_mode & 0o666)
    return paths


def _check_fresh(config: RunConfig, paths: JobPaths) -> None:
    """Refuse to replace earlier work unasked; called holding the job's lock, so no other
    job can create it in between."""
    if not (config.resume or config.overwrite):
        existing = [p for p in (paths.output, paths.journal) if p.exists()]
        if existing:
            raise ValueError(
                f"{existing[0]} exists: resume that job (--resume, or resume=True in Python), or start afresh "
                "(--overwrite, or overwrite=True)"
            )


def _remove_stale_temporaries(paths: JobPaths) -> None:
    """Temporary files an earlier job on this output left when it was killed mid-write
    (``.NAME.tmp-PID``); safe to remove under the lock."""
    for path in (paths.output, paths.errors, paths.status):
        for tmp in path.parent.glob(f".{glob_escape(path.name)}.tmp-*"):
            if tmp.is_file() and not tmp.is_symlink():
                tmp.unlink(missing_ok=True)


def execute(config: RunConfig, progress: Progress | None = None, data: bytes | None = None) -> RunSummary:
    """Run a resolved config; ``data`` is the input's bytes when it is stdin (``-``). The
    job holds an exclusive lock on its output from here to its end (``data/lock.py``)."""
    began = time.perf_counter()
    paths = check_paths(config)
    with job_lock(paths.output):
        _check_fresh(config, paths)
        _remove_stale_temporaries(paths)
        summary = _execute_locked(config, paths, progress, data)
    return dataclasses.replace(summary, job_seconds=time.perf_counter() - began)


def _execute_locked(config: RunConfig, paths: JobPaths, progress: Progress | None, data: bytes | None) -> RunSummary:
    requests, errors = read_requests(
        "<stdin>" if config.input_path == STDIN else config.input_path,
        config.max_new_tokens,
        data=data,
        max_line_bytes=config.max_line_bytes,
    )
    settings = _settings_fingerprint(config)
    for r in requests:
        r.fingerprint = answer_fingerprint(r.fingerprint, settings)
    kept, changed, dropped, cut = _earlier_answers(config, paths, requests)
    if config.resume and (paths.output.exists() or paths.journal.exists()):
        print(
            f"seqsched run: resuming: {len(kept)} answers kept, {changed} re-run (request or settings "
            f"changed), {dropped} dropped (not in the input)"
            + (f", a torn last line cut ({cut} bytes)" if cut else ""),
            file=sys.stderr,
            flush=True,
        )
    todo = [r for r in requests if r.request_id not in kept]
    oracle = _oracle_lengths(config, todo)
    model_name = _model_name(config.engine.model)
    report = RunReport(results=[])
    # Each answer's line lives in the journal only; this says where (-1: none), by request index.
    where = array("q", [-1]) * (max((r.index for r in requests), default=-1) + 1)
    started = time.time()
    if config.resume:  # the journal holds exactly the answers kept, in input order, written atomically
        order = [r for r in requests if r.request_id in kept]
        offsets = copy_lines((kept[r.request_id] for r in order), paths.journal, paths.mode)
        for r, offset in zip(order, offsets, strict=True):
            where[r.index] = offset
    journal = Journal(paths.journal, fresh=not config.resume, mode=paths.mode)
    # A status exists from the start: on a full disk it can still be rewritten in place.
    _write_status(paths, config, "running", len(requests) + len(errors), started)
    try:
        if todo:
            run_requests = _local_runner(config, todo, oracle) if config.ray is None else _ray_runner(config)
            if progress is not None:
                progress.total = len(todo)
                progress.refresh()

            eta = PredictedEta(todo)
            learned = config.learned

            def save(result: Result) -> None:
                line = result_line(result, model_name)
                if is_answered(line):
                    line["seqsched"]["fingerprint"] = result.request.fingerprint
                    where[result.request.index] = journal.append(line)
                eta.finished(result.request)
                left = eta.seconds_left()
                if progress is not None and left is not None and hasattr(progress, "set_postfix_str"):
                    how = "by predicted lengths" if learned else "at each request's limit"
                    progress.set_postfix_str(f"{format_seconds(left)} left {how}", refresh=False)

            report = run_requests(todo, progress.update if progress else None, save)
    except Stopped:
        _write_status(paths, config, "interrupted", len(requests) + len(errors), started)
        journal.close()
        raise
    except BaseException as e:
        _write_status(paths, config, "failed", len(requests) + len(errors), started, error=e)
        journal.close()
        raise
    failed = [res for res in report.results if res.status == RequestStatus.FINISHED_ERROR]
    num_lines = sum(1 for r in requests if where[r.index] >= 0)
    counts = {"completed": num_lines, "failed": len(errors) + len(failed), "resumed": len(kept)}
    with finishing():
        journal.close()
        write_jsonl(paths.errors, _error_lines(errors, failed), paths.mode)
        answers = (Located(paths.journal, where[r.index], None) for r in requests if where[r.index] >= 0)
        copy_lines(answers, paths.output, paths.mode)  # input order, one line in memory at a time
        _write_status(paths, config, "completed", len(requests) + len(errors), started, counts)
        journal.remove()
    return RunSummary(
        metrics=compute_metrics(report),
        num_lines=num_lines,
        num_answered=num_lines - len(kept),
        num_resumed=len(kept),
        num_input_errors=len(errors),
        num_failed=len(failed),
        num_changed=changed,
        num_dropped=dropped,
        output_path=paths.output,
        errors_path=paths.errors,
        num_oom_splits=report.num_oom_splits,
    )


def _earlier_answers(
    config: RunConfig, paths: JobPaths, requests: list[Request]
) -> tuple[dict[str, Located], int, int, int]:
    """Where the answers to reuse are (by custom_id), and how many were re-run, dropped, and
    torn bytes cut. Streamed: the files are read a line at a time, only offsets kept."""
    if not config.resume:
        return {}, 0, 0, 0
    from seqsched.data.journal import cut_torn_tail

    cut = cut_torn_tail(paths.journal)
    found: dict[str, Located] = {}
    for path in (paths.output, paths.journal):  # the journal is newer: it wins
        if path.exists():
            scan_answers(path, found)
    wanted = {r.request_id: r.fingerprint for r in requests}
    kept = {cid: at for cid, at in found.items() if cid in wanted and at.fingerprint == wanted[cid]}
    changed = sum(1 for cid in found if cid in wanted and cid not in kept)
    dropped = sum(1 for cid in found if cid not in wanted)
    return kept, changed, dropped, cut


def _error_lines(errors: list[InputError], failed: list[Result]) -> list[dict[str, Any]]:
    """Failed lines in line order: the OpenAI Batch error shape, with the line number."""
    lines = [(e.line, error_line(e.custom_id, e.message)) for e in errors]
    for res in failed:
        request = res.request
        line = error_line(request.request_id, request.error or "request failed", code="request_failed")
        lines.append((request.index + 1, line))
    return [{**line, "line": number} for number, line in sorted(lines, key=lambda p: p[0])]


def _write_status(
    paths: JobPaths,
    config: RunConfig,
    state: str,
    total: int,
    started: float,
    counts: dict[str, int] | None = None,
    error: BaseException | None = None,
) -> None:
    status: dict[str, Any] = {
        "state": state,
        "input": str(config.input_path),
        "output": str(paths.output) if state == "completed" else None,
        "errors": str(paths.errors) if state == "completed" else None,
        "journal": str(paths.journal) if state != "completed" else None,
        "request_counts": {"total": total, **(counts or {})},
        "seconds": round(time.time() - started, 3),
    }
    if error is not None and is_disk_full(error):
        status["error"] = f"disk full: {getattr(error, 'strerror', None) or error}"
    try:
        write_json(paths.status, status, paths.mode)
    except OSError:
        if state == "completed":
            raise
        _overwrite_in_place(paths.status, status)  # a full disk: the old status's blocks are reused


def _overwrite_in_place(path: Path, status: dict[str, Any]) -> None:
    """Rewrite a small file where it is (no second copy): what still works on a full disk.
    Never raises: it must not hide the job's own error."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.truncate(0)
            f.write(json.dumps(status, indent=2) + "\n")


def _settings_fingerprint(config: RunConfig) -> str:
    engine = config.engine
    settings = {
        "model": engine.model,
        "tokenizer": engine.tokenizer_path,
        "dtype": engine.dtype,
        "chat_template": engine.chat_template,
        "seed": engine.seed,
        "engine": config.engine_kind,
        "default_max_new_tokens": config.max_new_tokens,
    }
    return settings_fingerprint(settings, engine.model)


RunRequests = Callable[[list[Request], Callable[[int], None] | None, Callable[[Result], None]], RunReport]


def _local_runner(config: RunConfig, todo: list[Request], oracle: dict[str, int] | None) -> RunRequests:
    """The pipeline in this process."""
    from seqsched.build import build_engine, build_predictor

    engine = build_engine(config.engine, config.engine_kind, config.vllm)
    predictor = build_predictor(config, engine, oracle)
    engine.warmup(todo)  # so the first micro-batch's timing is not the kernels' start-up

    def run_requests(
        requests: list[Request], progress: Callable[[int], None] | None, on_result: Callable[[Result], None]
    ) -> RunReport:
        return Pipeline(engine, predictor, config.schedule, progress, on_result=on_result).run(requests)

    return run_requests


def _ray_runner(config: RunConfig) -> RunRequests:
    """Replicas on Ray (``seqsched.distributed``); each worker loads its own model."""
    import functools

    from seqsched.distributed import run_on_ray

    assert config.ray is not None
    return functools.partial(run_on_ray, config, config.ray)


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


def _model_name(model: str | Path) -> str:
    path = Path(model).expanduser()
    return path.name if path.exists() else str(model)


def _readable_file(path: Path, what: str) -> None:
    if not path.exists():
        raise FileNotFoundError(f"{what} {path} does not exist")
    if not path.is_file():
        raise ValueError(f"{what} {path} is not a file")
    if not os.access(path, os.R_OK):
        raise PermissionError(f"{what} {path} is not readable")


def _writable_dir(directory: Path, what: str, path: Path) -> None:
    directory = directory if str(directory) else Path(".")
    if not directory.is_dir():
        raise FileNotFoundError(f"the {what}'s directory {directory} does not exist (for {path})")
    if not os.access(directory, os.W_OK):
        raise PermissionError(f"the {what}'s directory {directory} is not writable (for {path})")
