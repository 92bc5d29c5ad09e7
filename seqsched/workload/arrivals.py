"""When requests arrive: all at once, Poisson or gamma at a rate, or recorded. No I/O
beyond reading a recorded file.

Rates follow vLLM's benchmark client (``vllm bench serve``, ``get_request``): gaps are
gamma-distributed with shape ``burstiness`` and mean ``1 / rate`` (``burstiness`` 1 is
Poisson; below 1 burstier, above 1 more even), summed, and rescaled so the last request
arrives at exactly ``n / rate``, as the client does to steady its throughput figures.
The draws are the client's own (numpy's legacy generator seeded with ``--seed``), so the
same seed gives the times a ``vllm bench serve --seed`` run sent its requests at.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np


def arrival_times(n: int, rate: float, burstiness: float = 1.0, seed: int = 0) -> list[float]:
    """``n`` arrival times in seconds from 0; ``rate`` inf: every request at 0 (a burst)."""
    if n < 0:
        raise ValueError(f"the number of requests ({n}) must be >= 0")
    if not rate > 0:
        raise ValueError(f"rate ({rate}) must be > 0 requests/s (inf: all at once)")
    if not (burstiness > 0 and math.isfinite(burstiness)):
        raise ValueError(f"burstiness ({burstiness}) must be a finite number > 0")
    if n == 0:
        return []
    if math.isinf(rate):
        return [0.0] * n
    gaps = np.random.RandomState(seed).gamma(shape=burstiness, scale=1.0 / (rate * burstiness), size=n)
    times = np.cumsum(gaps)
    times *= (n / rate) / times[-1]
    return [float(t) for t in times]


def read_arrivals(path: str | Path, field: str = "arrival") -> list[float]:
    """Recorded arrival times, one JSON object per line with ``field`` (seconds, any
    origin: shifted so the first is 0), in file order."""
    path = Path(path)
    times = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path.name}:{n}: invalid JSON ({err.msg})") from None
        value = obj.get(field) if isinstance(obj, dict) else None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{path.name}:{n}: field {field!r}: must be a number of seconds, got {json.dumps(value)}")
        times.append(float(value))
    if not times:
        raise ValueError(f"{path}: no arrival times")
    if any(b < a for a, b in itertools.pairwise(times)):
        raise ValueError(f"{path}: arrival times must not decrease (line order is arrival order)")
    return [t - times[0] for t in times]
