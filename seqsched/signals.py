"""Stopping a job cleanly: SIGINT and SIGTERM become :class:`Stopped`, raised at once, so
the job keeps its journal, writes no output that looks complete, and exits 130 / 143."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any


class Stopped(BaseException):
    """A job stopped by a signal: a BaseException, so no library's ``except Exception``
    swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


_finishing = False  # the job is writing its final files: a stop now would only tear them


@contextlib.contextmanager
def finishing() -> Iterator[None]:
    """Defer stop signals while a job writes its output, errors and status: once those are
    written the job is complete, and a signal that came meanwhile has nothing to stop."""
    global _finishing
    _finishing = True
    try:
        yield
    finally:
        _finishing = False


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    def _raise(signum: int, frame: Any) -> None:
        if not _finishing:
            raise Stopped(signum)

    try:
        previous = {sig: signal.signal(sig, _raise) for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
