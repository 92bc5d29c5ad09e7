"""Files and batches on disk, under ``--batch-dir``: what the Files and Batches API serve.

Layout::

    files/file-<hex>.jsonl      a file's bytes, as uploaded (or an output / error file)
    files/file-<hex>.json       its OpenAI File object
    batches/batch_<hex>.json    a batch's OpenAI Batch object
    batches/batch_<hex>.journal its answers and failed lines, appended as they come

Every record is written atomically (``data/atomic.py``: the old one or the new one, never
a torn one), never through a symbolic link, owner-only (0600: they hold prompts). A
journal is ``data/journal.py``'s: fsynced within 50 ms, its torn last line cut on reopen.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from seqsched.data.atomic import atomic_file

MODE = 0o600
ACTIVE = ("validating", "in_progress", "finalizing", "cancelling")
ENDED = ("completed", "failed", "cancelled", "expired")


class Store:
    def __init__(self, root: Path) -> None:
        if root.is_symlink():
            raise ValueError(f"the batch directory {root} is a symbolic link: seqsched does not write through links")
        if root.exists() and not root.is_dir():
            raise ValueError(f"the batch directory {root} is not a directory")
        self.root = root
        self.files = root / "files"
        self.batches = root / "batches"
        for d in (root, self.files, self.batches):
            d.mkdir(mode=0o700, exist_ok=True)

    # -- files -----------------------------------------------------------------------------

    def new_file_id(self) -> str:
        return f"file-{secrets.token_hex(12)}"

    def file_path(self, file_id: str) -> Path:
        return self.files / f"{_safe(file_id, 'file-')}.jsonl"

    def save_file(self, file_id: str, filename: str, purpose: str, size: int) -> dict[str, Any]:
        record = {"id": file_id, "object": "file", "bytes": size, "created_at": int(time.time()),
                  "filename": filename, "purpose": purpose, "status": "processed", "expires_at": None}  # fmt: skip
        self._write_json(self.files / f"{file_id}.json", record)
        return record

    def file(self, file_id: str) -> dict[str, Any] | None:
        return self._read_json(self.files / f"{_safe(file_id, 'file-')}.json")

    def delete_file(self, file_id: str) -> None:
        self.file_path(file_id).unlink(missing_ok=True)
        (self.files / f"{_safe(file_id, 'file-')}.json").unlink(missing_ok=True)

    def list_files(self) -> list[dict[str, Any]]:
        found = (self._read_json(p) for p in self.files.glob("file-*.json"))
        return sorted((f for f in found if f is not None), key=lambda f: (f["created_at"], f["id"]), reverse=True)

    # -- batches -----------------------------------------------------------------------------

    def new_batch_id(self) -> str:
        return f"batch_{secrets.token_hex(12)}"

    def save_batch(self, batch: dict[str, Any]) -> None:
        self._write_json(self.batches / f"{batch['id']}.json", batch)

    def batch(self, batch_id: str) -> dict[str, Any] | None:
        return self._read_json(self.batches / f"{_safe(batch_id, 'batch_')}.json")

    def journal_path(self, batch_id: str) -> Path:
        return self.batches / f"{_safe(batch_id, 'batch_')}.journal"

    def list_batches(self) -> list[dict[str, Any]]:
        """Newest first (OpenAI's order), ties by id."""
        found = (self._read_json(p) for p in self.batches.glob("batch_*.json"))
        return sorted((b for b in found if b is not None), key=lambda b: (b["created_at"], b["id"]), reverse=True)

    def active_batches(self) -> Iterator[dict[str, Any]]:
        return (b for b in self.list_batches() if b["status"] in ACTIVE)

    # -- records -------------------------------------------------------------------------------

    def _write_json(self, path: Path, record: dict[str, Any]) -> None:
        with atomic_file(path, MODE) as f:
            f.write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))

    def _read_json(self, path: Path) -> dict[str, Any] | None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return None
        with os.fdopen(fd, "rb") as f:
            try:
                record = json.loads(f.read())
            except ValueError:
                return None
        return record if isinstance(record, dict) else None


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
