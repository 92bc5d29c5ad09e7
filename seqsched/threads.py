"""How many CPU threads torch gets when the user does not say.

OpenMP threads spin while they wait for each other. On a CPU that other processes keep
busy, a thread per core means every parallel region waits for a thread that is not
running, and a 2-core machine under two busy loops ran the built-in bench's vanilla 2x
slower with 2 threads than with 1 (`benchmarks/threads_under_load.sh`). So the default
is one thread per core the load leaves free, and never fewer than one:

    threads = max(1, cores - floor(1-minute load average))

The load average lags by up to a minute; ``--threads`` overrides the choice.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    cores: int  # usable by this process (its CPU affinity)
    load_average: float | None  # 1 minute, at the choice; None where the OS has none
    chosen_by: str  # "--threads" or "auto"

    def describe(self) -> str:
        load = "unknown" if self.load_average is None else f"{self.load_average:.2f}"
        if self.chosen_by == "auto":
            return (
                f"{self.threads} CPU thread{'s' if self.threads > 1 else ''} "
                f"(auto: {self.cores} cores, load average {load}; --threads N to choose)"
            )
        plural = "s" if self.threads > 1 else ""
        return f"{self.threads} CPU thread{plural} (--threads; {self.cores} cores, load average {load})"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def auto_threads(cores: int, load: float | None) -> int:
    """One thread per core the load leaves free, at least one."""
    if load is None:
        return max(1, cores - 1)
    return max(1, cores - math.floor(load))


def choose_threads(requested: int | None) -> ThreadChoice:
    """``requested`` if given, else :func:`auto_threads` on this machine now."""
    cores, load = usable_cores(), load_average()
    if requested is not None:
        if requested < 1:
            raise ValueError(f"--threads ({requested}) must be >= 1")
        return ThreadChoice(requested, cores, load, "--threads")
    return ThreadChoice(auto_threads(cores, load), cores, load, "auto")
