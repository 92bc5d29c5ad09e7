"""Writing a finished job: the error file (bad lines and requests the engine refused, in
line order), then the output, in input order, copied a line at a time from the journal."""

from __future__ import annotations

from array import array
from typing import Any

from seqsched.data.answer_index import Located, copy_lines
from seqsched.data.batch_io import InputError, error_line, write_jsonl
from seqsched.job.paths import JobPaths
from seqsched.request import Request, Result


def write_results(paths: JobPaths, requests: list[Request], where: array[int], errors: list[InputError],
                  failed: list[Result]) -> int:  # fmt: skip
    """Write the error file and the output; return the answers written."""
    write_jsonl(paths.errors, error_lines(errors, failed), paths.mode)
    answers = (Located(paths.journal, where[r.index], None) for r in requests if where[r.index] >= 0)
    copy_lines(answers, paths.output, paths.mode)  # input order, one line in memory at a time
    return sum(1 for r in requests if where[r.index] >= 0)


def error_lines(errors: list[InputError], failed: list[Result]) -> list[dict[str, Any]]:
    """Failed lines in line order: the OpenAI Batch error shape, with the line number."""
    lines = [(e.line, error_line(e.custom_id, e.message)) for e in errors]
    for res in failed:
        request = res.request
        line = error_line(request.request_id, request.error or "request failed", code="request_failed")
        lines.append((request.index + 1, line))
    return [{**line, "line": number} for number, line in sorted(lines, key=lambda p: p[0])]
