"""Reading a job and planning it: its requests (fingerprinted with the generation
settings), its bad lines, and, on ``resume``, which earlier answers it keeps and which
requests are left to run."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO

from seqsched.data.answer_index import Located, scan_answers
from seqsched.data.batch_io import read_requests
from seqsched.data.journal import answer_fingerprint, cut_torn_tail, settings_fingerprint
from seqsched.job.paths import STDIN, JobPaths
from seqsched.request import Request

if TYPE_CHECKING:
    from seqsched.config import RunConfig
    from seqsched.data.batch_io import InputError


@dataclass
class JobInput:
    requests: list[Request]
    errors: list[InputError]

    @property
    def total(self) -> int:
        return len(self.requests) + len(self.errors)


@dataclass
class JobPlan:
    """What a run does: keep ``kept`` (custom_id -> where its answer is), run ``todo``."""

    todo: list[Request]
    kept: dict[str, Located] = field(default_factory=dict)
    num_changed: int = 0  # earlier answers re-run because their request or settings changed
    num_dropped: int = 0  # earlier answers whose custom_id is not in the input
    num_cut: int = 0  # bytes of a torn last journal line


def read_input(config: RunConfig, stdin: BinaryIO | None = None) -> JobInput:
    """The requests and the bad lines; stdin is read a line at a time, as a file is."""
    name = "<stdin>" if config.input_path == STDIN else config.input_path
    requests, errors = read_requests(name, config.max_new_tokens, stream=stdin, max_line_bytes=config.max_line_bytes)
    settings = settings_of(config)
    for r in requests:
        r.fingerprint = answer_fingerprint(r.fingerprint, settings)
    return JobInput(requests, errors)


def plan(config: RunConfig, paths: JobPaths, job: JobInput) -> JobPlan:
    """On resume, the answers to reuse (streamed: the files are read a line at a time, only
    offsets kept) and what is left; otherwise, everything."""
    if not config.resume:
        return JobPlan(todo=list(job.requests))
    cut = cut_torn_tail(paths.journal)
    found: dict[str, Located] = {}
    for path in (paths.output, paths.journal):  # the journal is newer: it wins
        if path.exists():
            scan_answers(path, found)
    wanted = {r.request_id: r.fingerprint for r in job.requests}
    kept = {cid: at for cid, at in found.items() if cid in wanted and at.fingerprint == wanted[cid]}
    result = JobPlan(
        todo=[r for r in job.requests if r.request_id not in kept],
        kept=kept,
        num_changed=sum(1 for cid in found if cid in wanted and cid not in kept),
        num_dropped=sum(1 for cid in found if cid not in wanted),
        num_cut=cut,
    )
    if paths.output.exists() or paths.journal.exists():
        print(
            f"seqsched run: resuming: {len(kept)} answers kept, {result.num_changed} re-run (request or settings "
            f"changed), {result.num_dropped} dropped (not in the input)"
            + (f", a torn last line cut ({cut} bytes)" if cut else ""),
            file=sys.stderr,
            flush=True,
        )
    return result


def _settings(config: RunConfig) -> dict[str, object]:
    engine = config.engine
    return {
        "model": engine.model,
        "tokenizer": engine.tokenizer_path,
        "dtype": engine.dtype,
        "chat_template": engine.chat_template,
        "seed": engine.seed,
        "engine": config.engine_kind,
        "default_max_new_tokens": config.max_new_tokens,
    }


def settings_of(config: RunConfig) -> str:
    """The generation settings' fingerprint, as answers carry it."""
    return settings_fingerprint(_settings(config), config.engine.model)
