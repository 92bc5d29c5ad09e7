"""One job per output: an exclusive ``flock`` on ``OUT.lock``, held until the job ends.

A second job on the same output is refused at once, with the holder's pid, before it
reads anything; the kernel drops the lock when the holder dies, even by ``kill -9``, so a
stale lock file never blocks a later job. The lock file is opened without following a
symbolic link. After taking the lock the file is checked to still be the one at the
path (a job ending in between may have removed it), so two jobs can never both hold it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


class JobLocked(ValueError):
    """Another job holds the output's lock."""


def lock_path(output: Path) -> Path:
    return output.with_name(output.name + ".lock")


@contextlib.contextmanager
def job_lock(output: Path) -> Iterator[Path]:
    path = lock_path(output)
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError as e:
            if path.is_symlink():
                raise ValueError(f"{path} is a symbolic link: seqsched does not write through links") from e
            raise OSError(e.errno, f"cannot create the job's lock {path}: {e.strerror}") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise JobLocked(
                f"another seqsched job (pid {holder}) is writing {output} (it holds {path}): wait for it, or "
                "choose another --output"
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path, follow_symlinks=False).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the file was removed (or replaced) by the job that held it: take the new one
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield path
    finally:
        with contextlib.suppress(OSError):
            path.unlink()  # still holding the lock: a job that opened this file sees it gone
        os.close(fd)
