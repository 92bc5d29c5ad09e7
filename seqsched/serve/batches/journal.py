"""A batch's journal: a header that names the batch and its input, then one line for each
request line answered or failed, appended the moment it exists (``data/journal.py``).

NOTE on trust. A journal is reused on restart only if its header names the same batch and
the same input (its SHA-256): a journal copied from another batch, or an input replaced
by hand, is quarantined and the batch runs from the start. A line journaled twice (a copy
made by hand, a crash between two writes) counts once: the first for its ``custom_id``.

NOTE on a full disk. A line the disk refuses is kept in memory, in order, with the reason
(:attr:`BatchJournal.error`), and written when :meth:`flush` next succeeds. The journal's
torn tail is cut before it (``Journal`` reopens the file), so nothing half-written stays.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seqsched.data.journal import Journal, cut_torn_tail
from seqsched.serve.batches.store import MODE

HEADER = "seqsched_batch"


@dataclass(frozen=True)
class Entry:
    """A journaled line: where it is, its request line's number, and whether it is an answer."""

    offset: int
    number: int
    answered: bool


def header(batch_id: str, input_digest: str) -> dict[str, Any]:
    return {HEADER: {"id": batch_id, "input_sha256": input_digest}}


def read_journal(path: Path) -> tuple[dict[str, Any] | None, dict[str, Entry]]:
    """The journal's header (None: none, or not a header), and its lines by ``custom_id``
    (the first of each)."""
    cut_torn_tail(path)
    first: dict[str, Any] | None = None
    entries: dict[str, Entry] = {}
    if not path.exists():
        return None, entries
    offset = 0
    with path.open("rb") as f:
        for index, raw in enumerate(f):
            try:
                line = json.loads(raw)
            except ValueError:
                line = None
            if index == 0:
                first = line if isinstance(line, dict) and HEADER in line else None
                if first is not None:
                    offset += len(raw)
                    continue
            custom_id = line.get("custom_id") if isinstance(line, dict) else None
            if isinstance(custom_id, str) and custom_id not in entries:
                assert isinstance(line, dict)
                number = (line.get("seqsched") or {}).get("line", 0)
                entries[custom_id] = Entry(offset, number if isinstance(number, int) else 0, is_answer(line))
            offset += len(raw)
    return first, entries


def is_answer(line: dict[str, Any]) -> bool:
    return line.get("error") is None and (line.get("response") or {}).get("status_code") == 200


class BatchJournal:
    def __init__(self, path: Path, head: dict[str, Any]) -> None:
        self.path, self.head = path, head
        self.pending: list[dict[str, Any]] = []
        self.error: str | None = None  # why the last write failed (None: all is on disk)
        self._journal: Journal | None = None

    def append(self, line: dict[str, Any]) -> list[dict[str, Any]]:
        """Journal ``line`` (after any kept before it); return the lines now on disk. A line
        the disk refuses is kept, for :meth:`flush`, and :attr:`error` says why."""
        self.pending.append(line)
        return self.flush()

    def flush(self) -> list[dict[str, Any]]:
        """Write the lines kept, in order; return those written (``error``: why not all)."""
        written: list[dict[str, Any]] = []
        try:
            if self._journal is None:
                self._journal = Journal(self.path, fresh=False, mode=MODE)  # cuts a torn tail
                if self.path.stat().st_size == 0:
                    self._journal.append(self.head)
            while self.pending:
                self._journal.append(self.pending[0])
                written.append(self.pending.pop(0))
        except OSError as e:
            self.error = str(e)
            self.close()  # reopened (its torn tail cut) on the next try
            return written
        self.error = None
        return written

    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None
