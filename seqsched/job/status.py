"""The job's status file, written in one place: ``running`` once the job starts its work,
then exactly one of ``completed``, ``interrupted`` (a signal) or ``failed`` (an error, a
full disk named as such)."""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from seqsched.data.atomic import is_disk_full
from seqsched.data.batch_io import write_json
from seqsched.job.paths import JobPaths
from seqsched.signals import Stopped

if TYPE_CHECKING:
    from seqsched.config import RunConfig


class JobStatus:
    def __init__(self, paths: JobPaths, config: RunConfig, total: int) -> None:
        self.paths, self.config, self.total = paths, config, total
        self.started = time.time()

    def __enter__(self) -> JobStatus:
        # Written at the start: on a full disk it can still be rewritten in place.
        self._write("running")
        return self

    def completed(self, counts: dict[str, int]) -> None:
        self._write("completed", counts)

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        if error is not None:
            self._write("interrupted" if isinstance(error, Stopped) else "failed", error=error)

    def _write(self, state: str, counts: dict[str, int] | None = None, error: BaseException | None = None) -> None:
        paths = self.paths
        status: dict[str, Any] = {
            "state": state,
            "input": str(self.config.input_path),
            "output": str(paths.output) if state == "completed" else None,
            "errors": str(paths.errors) if state == "completed" else None,
            "journal": str(paths.journal) if state != "completed" else None,
            "request_counts": {"total": self.total, **(counts or {})},
            "seconds": round(time.time() - self.started, 3),
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
