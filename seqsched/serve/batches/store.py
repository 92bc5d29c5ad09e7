"""Files and batches on disk, under ``--batch-dir``: what the Files and Batches API serve.

Layout::

    files/file-<hex>.jsonl      a file's bytes, as uploaded (or an output / error file)
    files/file-<hex>.json       its OpenAI File object
    batches/batch_<hex>.json    a batch's OpenAI Batch object
    batches/batch_<hex>.journal its answers and failed lines, appended as they come
    quarantine/                 what was found damaged at start, each with a .reason file

NOTE on the directory as a database. Every record is written atomically
(``data/atomic.py``: the old one or the new one, never a torn one), owner-only (0600: they
hold prompts), and nothing here is ever opened through a symbolic link (``O_NOFOLLOW``, a
link planted at a record's or a file's name is refused). At start (:meth:`load`, in a
thread) every record is read once into an index that listing and lookups read, so no
request reads the directory. A record that is not valid JSON, or lacks a field its object
must have, or a file or journal that is a link, or a journal with no batch record, is moved
to ``quarantine/`` with its reason, and logged: the server starts, and serves the rest.

NOTE on a full disk. A record that cannot be written stays in the index (the server's
answers stay right) and is written again on the next :meth:`retry` (the batches' clock
calls it every second), so it reaches the disk once space returns. A batch's journal is
removed only once the record that says the batch ended is on disk.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from seqsched.data.atomic import atomic_file

log = logging.getLogger("seqsched.serve")
MODE = 0o600
ACTIVE = ("validating", "in_progress", "finalizing", "cancelling")
ENDED = ("completed", "failed", "cancelled", "expired")
_ENDPOINTS = ("/v1/chat/completions", "/v1/completions")


class Store:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.files = root / "files"
        self.batches = root / "batches"
        self.quarantine = root / "quarantine"
        for d in (root, self.files, self.batches, self.quarantine):
            if d.is_symlink():
                raise ValueError(f"the batch directory {d} is a symbolic link: seqsched does not write through links")
            if d.exists() and not d.is_dir():
                raise ValueError(f"the batch directory {d} is not a directory")
            d.mkdir(mode=0o700, exist_ok=True)
        self._files: dict[str, dict[str, Any]] = {}
        self._batches: dict[str, dict[str, Any]] = {}
        self.unsaved: dict[str, str] = {}  # batch id -> why its record is not on disk yet

    def load(self) -> list[str]:
        """Read every record into the index; quarantine what is damaged. Returns the reasons."""
        reasons: list[str] = []
        for path in sorted(self.files.iterdir()):
            why = self._load_file(path)
            if why is not None:
                reasons.append(self._quarantine(path, why))
        for path in sorted(self.batches.iterdir()):
            if path.suffix == ".json":
                why = self._load_batch(path)
                if why is not None:
                    reasons.append(self._quarantine(path, why))
        for path in sorted(self.batches.glob("batch_*.journal")):
            if path.is_symlink():
                reasons.append(self._quarantine(path, "the journal is a symbolic link"))
            elif path.stem not in self._batches:
                reasons.append(self._quarantine(path, f"a journal with no batch record ({path.stem}.json)"))
        return reasons

    def _load_file(self, path: Path) -> str | None:
        name = path.name
        if not path.exists() and not path.is_symlink():
            return None  # moved with its damaged record
        if name.startswith("."):
            return None  # an atomic write's leftover temporary
        if path.is_symlink():
            return "a symbolic link (seqsched never follows links in its directory)"
        if name.endswith(".jsonl"):
            if not (self.files / f"{name[: -len('.jsonl')]}.json").exists():
                return "a file's bytes with no file record"
            return None
        if not name.endswith(".json"):
            return None
        record, why = _read_record(path)
        if record is not None:
            why = _file_problem(record, path.stem)
            data = self.file_path(path.stem)
            if why is None and data.is_symlink():
                why = f"its bytes ({data.name}) are a symbolic link (seqsched never follows links in its directory)"
            elif why is None and not data.is_file():
                why = f"a file record whose bytes ({data.name}) are missing"
        if why is not None:
            data = self.file_path(path.stem)
            if data.exists() or data.is_symlink():
                self._quarantine(data, f"its record is not usable: {why}")
            return why
        assert record is not None
        self._files[record["id"]] = record
        return None

    def _load_batch(self, path: Path) -> str | None:
        if path.is_symlink():
            return "a symbolic link (seqsched never follows links in its directory)"
        record, why = _read_record(path)
        if record is not None:
            why = _batch_problem(record, path.stem)
        if why is not None:
            return why
        assert record is not None
        self._batches[record["id"]] = record
        return None

    def _quarantine(self, path: Path, why: str) -> str:
        stamp = time.strftime("%Y%m%dT%H%M%S")
        target = self.quarantine / f"{path.name}.{stamp}-{secrets.token_hex(3)}"
        message = f"{path}: {why}; moved to {target}"
        try:
            os.replace(path, target)
            with atomic_file(target.with_name(target.name + ".reason"), MODE) as f:
                f.write((why + "\n").encode())
        except OSError as e:
            message = f"{path}: {why}; left in place ({e})"
        log.warning("seqsched serve: quarantined %s", message)
        return message

    # -- files -----------------------------------------------------------------------------

    def new_file_id(self) -> str:
        return f"file-{secrets.token_hex(12)}"

    def file_path(self, file_id: str) -> Path:
        return self.files / f"{_safe(file_id, 'file-')}.jsonl"

    def save_file(self, file_id: str, filename: str, purpose: str, size: int) -> dict[str, Any]:
        """Record a file whose bytes are in place (raises OSError: the disk refused)."""
        record = {"id": file_id, "object": "file", "bytes": size, "created_at": int(time.time()),
                  "filename": filename, "purpose": purpose, "status": "processed", "expires_at": None}  # fmt: skip
        self._write_json(self.files / f"{file_id}.json", record)
        self._files[file_id] = record
        return record

    def file(self, file_id: str) -> dict[str, Any] | None:
        return self._files.get(file_id)

    def open_file(self, file_id: str) -> int:
        """A file's bytes, opened for reading without following a link (OSError if absent)."""
        return open_regular(self.file_path(file_id))

    def delete_file(self, file_id: str) -> None:
        self._files.pop(file_id, None)
        self.file_path(file_id).unlink(missing_ok=True)
        (self.files / f"{_safe(file_id, 'file-')}.json").unlink(missing_ok=True)

    def list_files(self) -> list[dict[str, Any]]:
        return sorted(self._files.values(), key=lambda f: (f["created_at"], f["id"]), reverse=True)

    # -- batches -----------------------------------------------------------------------------

    def new_batch_id(self) -> str:
        return f"batch_{secrets.token_hex(12)}"

    def save_batch(self, batch: dict[str, Any]) -> bool:
        """Index the record and write it; False if the disk refused (written again by
        :meth:`retry`). Once a record that says the batch ended is on disk, its journal goes."""
        self._batches[batch["id"]] = batch
        try:
            self._write_json(self.batches / f"{batch['id']}.json", batch)
        except OSError as e:
            if batch["id"] not in self.unsaved:
                log.warning("seqsched serve: batch %s's record is not on disk yet: %s", batch["id"], e)
            self.unsaved[batch["id"]] = str(e)
            return False
        self.unsaved.pop(batch["id"], None)
        if batch["status"] in ENDED:
            self.journal_path(batch["id"]).unlink(missing_ok=True)
        return True

    def forget_batch(self, batch_id: str) -> None:
        """A record never written (its creation failed)."""
        self._batches.pop(batch_id, None)
        self.unsaved.pop(batch_id, None)
        (self.batches / f"{_safe(batch_id, 'batch_')}.json").unlink(missing_ok=True)

    def retry(self) -> None:
        for batch_id in list(self.unsaved):
            record = self._batches.get(batch_id)
            if record is None:
                self.unsaved.pop(batch_id, None)
            elif self.save_batch(record):
                log.warning("seqsched serve: batch %s's record is on disk again", batch_id)

    def batch(self, batch_id: str) -> dict[str, Any] | None:
        return self._batches.get(batch_id)

    def journal_path(self, batch_id: str) -> Path:
        return self.batches / f"{_safe(batch_id, 'batch_')}.journal"

    def list_batches(self) -> list[dict[str, Any]]:
        """Newest first (OpenAI's order), ties by id."""
        return sorted(self._batches.values(), key=lambda b: (b["created_at"], b["id"]), reverse=True)

    def active_batches(self) -> Iterator[dict[str, Any]]:
        return (b for b in self.list_batches() if b["status"] in ACTIVE)

    def quarantine_journal(self, batch_id: str, why: str) -> str:
        return self._quarantine(self.journal_path(batch_id), why)

    # -- records -------------------------------------------------------------------------------

    def _write_json(self, path: Path, record: dict[str, Any]) -> None:
        with atomic_file(path, MODE) as f:
            f.write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))


def open_regular(path: Path) -> int:
    """A descriptor for reading ``path``, refused (OSError) if it is a link or not a plain file."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"{path} is not a regular file")
    return fd


def _read_record(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    try:
        with os.fdopen(open_regular(path), "rb") as f:
            record = json.loads(f.read())
    except OSError as e:
        return None, f"cannot be read ({e})"
    except (ValueError, RecursionError):
        return None, "not valid JSON"
    if not isinstance(record, dict):
        return None, "not a JSON object"
    return record, None


def _file_problem(record: dict[str, Any], stem: str) -> str | None:
    want = {"id": str, "object": str, "bytes": int, "created_at": int, "filename": str, "purpose": str}
    return _fields_problem(record, want) or (None if record["id"] == stem else f"its id {record['id']!r} is not {stem}")


def _batch_problem(record: dict[str, Any], stem: str) -> str | None:
    want = {"id": str, "object": str, "endpoint": str, "input_file_id": str, "status": str, "created_at": int,
            "expires_at": int, "request_counts": dict}  # fmt: skip
    problem = _fields_problem(record, want)
    if problem is not None:
        return problem
    if record["id"] != stem:
        return f"its id {record['id']!r} is not {stem}"
    if record["endpoint"] not in _ENDPOINTS:
        return f"endpoint {record['endpoint']!r} is not one seqsched serves"
    if record["status"] not in ACTIVE + ENDED:
        return f"status {record['status']!r} is not a batch status"
    return None


def _fields_problem(record: dict[str, Any], want: dict[str, type]) -> str | None:
    for name, kind in want.items():
        value = record.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            return f"field {name!r} is missing or not {kind.__name__} (got {json.dumps(value)[:60]})"
    return None


def _safe(identifier: str, prefix: str) -> str:
    """An id as a file name: its prefix and hex digits only (no path can be smuggled in)."""
    rest = identifier.removeprefix(prefix)
    if (
        not identifier.startswith(prefix)
        or not rest
        or len(rest) > 64
        or not all(c in "0123456789abcdef" for c in rest)
    ):
        return f"{prefix}invalid"
    return identifier
