"""The journal of a batch job: each answer appended the moment it exists, so a killed job
loses nothing, and what ``--resume`` reads back.

NOTE on what resume may reuse. Every answer carries a fingerprint of what it was made
from: the request's input line and the generation settings (the model and its files'
sizes, change times and content hashes, ``model_files``; tokenizer, dtype, engine, seed,
default limit). ``--resume`` keeps an answer only when the
same ``custom_id`` now has the same fingerprint; an answer for a changed request or
changed settings is re-run, and one for an id no longer in the input is dropped.

A crash (or a full disk) can leave the journal's last line torn: bytes after the last
newline. Opening the journal to append cuts them first, so a new answer never glues onto
half of an old one.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import time
from pathlib import Path
from typing import IO, Any

from seqsched.data.answer_index import iter_objects
from seqsched.data.batch_io import dumps_line


def answer_fingerprint(request_fingerprint: str | None, settings: str) -> str:
    return hashlib.sha256(f"{request_fingerprint}|{settings}".encode()).hexdigest()[:32]


def settings_fingerprint(settings: dict[str, Any], model: str) -> str:
    """A hash of the generation settings and of the model's files (``model_files``)."""
    text = json.dumps({"settings": settings, "files": model_files(model)}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


FULL_HASH_BYTES = 64 << 20  # files up to this size are hashed whole
SAMPLES, SAMPLE_BYTES = 16, 64 << 10  # larger ones: 16 blocks of 64 KiB spread over the file


def model_files(model: str) -> list[tuple[str, int, int, str]]:
    """What resume checks of a local model, per file (recursively): its relative path, size,
    inode change time (``st_ctime_ns``: any write or metadata change moves it, and unlike
    the mtime no user tool sets it back), and a content hash: whole for files up to 64 MiB
    (config, tokenizer, small weights), else of 16 blocks of 64 KiB spread over the file
    (1 MiB read for a 14 GB shard, where hashing all of it would take ~14 s a job). A
    renamed or copied model re-runs its answers: the change time moves. A hub id has no
    local files: its name alone is checked."""
    root = Path(model).expanduser()
    if not root.is_dir():
        return []
    files = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        info = path.stat()
        files.append((str(path.relative_to(root)), info.st_size, info.st_ctime_ns, _content_digest(path, info.st_size)))
    return files


def _content_digest(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        if size <= FULL_HASH_BYTES:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        else:
            for i in range(SAMPLES):
                f.seek((size - SAMPLE_BYTES) * i // (SAMPLES - 1))
                digest.update(f.read(SAMPLE_BYTES))
    return digest.hexdigest()[:16]


def read_lines(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The JSON object lines of a journal or output file, and how many lines were
    unreadable (a torn tail, damage)."""
    lines, bad = [], 0
    for _, line in iter_objects(path):
        if line is None:
            bad += 1
        else:
            lines.append(line)
    return lines, bad


def cut_torn_tail(path: Path) -> int:
    """Drop bytes after the last newline (a line a crash left half-written); return how many."""
    if not path.exists():
        return 0
    size = path.stat().st_size
    if size == 0:
        return 0
    with path.open("rb+") as f:
        f.seek(max(0, size - 1))
        if f.read(1) == b"\n":
            return 0
        data = path.read_bytes()
        keep = data.rfind(b"\n") + 1
        f.truncate(keep)
    return size - keep


SYNC_SECONDS = 0.05  # fsync when the last one is older: every answer on disk within 50 ms


class Journal:
    """Appends one JSON line per answer and flushes it to the OS at once; fsyncs when
    the last fsync is over ``SYNC_SECONDS`` old, and on close. So a power cut loses at most
    the last 50 ms of answers (a kill loses none: the OS has them), and however fast answers
    come, fsync costs at most 20 calls a second (0.18 ms each on this machine's disk)."""

    def __init__(self, path: Path, fresh: bool, mode: int = 0o666) -> None:
        self.path = path
        self.num_cut = 0 if fresh else cut_torn_tail(path)
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_TRUNC if fresh else os.O_APPEND)
        try:
            fd = os.open(path, flags, mode)
        except OSError as e:
            raise OSError(e.errno, f"cannot open the journal {path}: {e.strerror}") from e
        # Unbuffered: a write the disk refuses leaves nothing in a buffer for a later flush.
        self._file: IO[bytes] = os.fdopen(fd, "wb" if fresh else "ab", buffering=0)
        self._end = os.fstat(fd).st_size  # where the next line goes
        self._synced = time.monotonic()

    def append(self, line: dict[str, Any]) -> int:
        """Write one answer line; return its byte offset in the journal."""
        data = dumps_line(line).encode("utf-8")
        try:
            view = memoryview(data)
            while view:  # a short write (a disk filling up) goes on from where it stopped
                written = self._file.write(view)
                if not written:
                    raise OSError(errno.ENOSPC, "no byte could be written")
                view = view[written:]
            if time.monotonic() - self._synced >= SYNC_SECONDS:
                self.sync()
        except OSError as e:
            raise OSError(e.errno, f"cannot write the journal {self.path}: {e.strerror}") from e
        offset, self._end = self._end, self._end + len(data)
        return offset

    def sync(self) -> None:
        os.fsync(self._file.fileno())
        self._synced = time.monotonic()

    def close(self) -> None:
        if self._file.closed:
            return
        with contextlib.suppress(OSError):  # a full disk: the next --resume cuts the torn tail
            self._file.flush()
            self.sync()
        with contextlib.suppress(OSError):
            self._file.close()

    def remove(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)
