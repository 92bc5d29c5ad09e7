"""A batch's output and error files, written from its journal (never from memory, so a
restart can always finalize), each in line order, each atomically: a full disk leaves the
old state, and the same call later writes the same files (their ids are deterministic).

The output file holds the answers (status 200); the error file the lines the upstream
refused or that failed, the lines found bad when checked, and, for a batch cancelled or
expired, the lines that never ran. Files with no line are not made (OpenAI's ids are then
null).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any

from seqsched.data.answer_index import Located, copy_lines
from seqsched.data.batch_io import error_line, write_jsonl
from seqsched.serve.batches.journal import read_journal
from seqsched.serve.batches.store import MODE, Store


@dataclass(frozen=True)
class Extra:
    """An error line not in the journal: a line found bad, or one that never ran."""

    number: int
    custom_id: str | None
    message: str
    code: str = "invalid_request"


def write_outputs(store: Store, batch_id: str, total: int, extra: list[Extra]) -> dict[str, Any]:
    """Write the files; return the record's ``output_file_id``, ``error_file_id`` and
    ``request_counts`` (raises OSError if the disk refuses: nothing is recorded then)."""
    journal = store.journal_path(batch_id)
    _, entries = read_journal(journal)
    answers = sorted((e.number, e.offset) for e in entries.values() if e.answered)
    failed = sorted((e.number, e.offset) for e in entries.values() if not e.answered)
    output_id = error_id = None
    if answers:
        output_id = file_id(batch_id, "output")
        path = store.file_path(output_id)
        copy_lines((Located(journal, offset, None) for _, offset in answers), path, MODE)
        store.save_file(output_id, f"{batch_id}_output.jsonl", "batch_output", path.stat().st_size)
    if failed or extra:
        error_id = file_id(batch_id, "errors")
        path = store.file_path(error_id)
        lines = [(e.number, error_line(e.custom_id, e.message, e.code)) for e in extra]
        if failed:
            with open(journal, "rb") as f:
                for number, offset in failed:
                    f.seek(offset)
                    lines.append((number, json.loads(f.readline())))
        write_jsonl(path, [line for _, line in sorted(lines, key=lambda p: p[0])], MODE)
        store.save_file(error_id, f"{batch_id}_errors.jsonl", "batch_output", path.stat().st_size)
    counts = {"total": total, "completed": len(answers), "failed": len(failed) + len(extra)}
    return {"output_file_id": output_id, "error_file_id": error_id, "request_counts": counts}


def file_id(batch_id: str, what: str) -> str:
    """Deterministic: a finalize redone after a crash writes the same file, not a second."""
    return f"file-{digest(batch_id, what)}"


def digest(*parts: str) -> str:
    return hashlib.sha1("\x00".join(parts).encode("utf-8")).hexdigest()[:24]


def remove_partial(store: Store, batch_id: str) -> None:
    """After a finalize the disk refused: no output file without its record."""
    for what in ("output", "errors"):
        fid = file_id(batch_id, what)
        if store.file(fid) is None:
            with contextlib.suppress(OSError):
                os.unlink(store.file_path(fid))
