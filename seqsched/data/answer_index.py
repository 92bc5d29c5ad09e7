"""Where each answer's line is, not the line: what lets a job of a million answers resume
and write its output in bounded memory.

``scan_answers`` reads an output or journal file one line at a time and keeps, per
``custom_id``, the byte offset of its latest successful answer and that answer's
fingerprint. ``copy_lines`` then moves lines by offset, never holding more than one.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from seqsched.data.atomic import atomic_file


@dataclass(frozen=True, slots=True)
class Located:
    path: Path
    offset: int
    fingerprint: str | None


def iter_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(offset, line without its newline) for every line of ``path``, streamed."""
    with path.open("rb") as f:
        offset = 0
        for raw in f:
            yield offset, raw.rstrip(b"\n")
            offset += len(raw)


def iter_objects(path: Path) -> Iterator[tuple[int, dict[str, Any] | None]]:
    """(offset, object) for every non-blank line of ``path``, streamed; the object is None
    for a line that is not a JSON object (a torn tail, damage)."""
    for offset, raw in iter_lines(path):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except (ValueError, RecursionError):
            line = None
        yield offset, line if isinstance(line, dict) else None


def scan_answers(path: Path, found: dict[str, Located]) -> int:
    """Add the successful answers in ``path`` to ``found`` (a later line wins); return how
    many lines were unreadable."""
    bad = 0
    for offset, line in iter_objects(path):
        if line is None:
            bad += 1
            continue
        custom_id, response = line.get("custom_id"), line.get("response")
        answered = line.get("error") is None and isinstance(response, dict) and response.get("status_code") == 200
        if isinstance(custom_id, str) and answered:
            extra = line.get("seqsched")
            fingerprint = extra.get("fingerprint") if isinstance(extra, dict) else None
            found[custom_id] = Located(path, offset, fingerprint if isinstance(fingerprint, str) else None)
    return bad


def read_line_at(f: IO[bytes], offset: int) -> bytes:
    """The line at ``offset``, its newline included."""
    f.seek(offset)
    line = f.readline()
    return line if line.endswith(b"\n") else line + b"\n"


def copy_lines(sources: Iterable[Located], destination: Path, mode: int = 0o666) -> list[int]:
    """Write the lines at ``sources`` to ``destination`` atomically, in the given order,
    one line in memory at a time; return each line's offset in ``destination``."""
    offsets: list[int] = []
    with contextlib.ExitStack() as handles, atomic_file(destination, mode) as out:
        opened: dict[Path, IO[bytes]] = {}
        position = 0
        for source in sources:
            if source.path not in opened:
                opened[source.path] = handles.enter_context(source.path.open("rb"))
            line = read_line_at(opened[source.path], source.offset)
            out.write(line)
            offsets.append(position)
            position += len(line)
    return offsets
