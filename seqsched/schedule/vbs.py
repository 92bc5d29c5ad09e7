"""Variable batch size: how many rows a bin of predicted lengths gets."""

from __future__ import annotations

from collections.abc import Callable

from seqsched.schedule.config import ScheduleConfig

# The paper's table: predicted-length bin -> batch size; 250 and above -> 16.
PAPER_TABLE: dict[int, int] = {50: 256, 100: 128, 150: 64, 200: 32}
PAPER_DEFAULT = 16
PAPER_MIN_ROWS = 16  # the paper's code: a bin's last micro-batch under max(rows // 2, 16) merges up


def batch_size_fn(cfg: ScheduleConfig, max_limit: int) -> Callable[[int], int]:
    """Return ``bin ceiling -> rows`` for the configured VBS mode."""
    if cfg.vbs == "paper":
        return lambda ceiling: PAPER_TABLE.get(ceiling, PAPER_DEFAULT)
    if cfg.vbs == "budget":
        budget = cfg.token_budget or cfg.batch_size * max_limit
        return lambda ceiling: min(cfg.max_batch_size, max(cfg.batch_size, budget // ceiling))
    return lambda ceiling: cfg.batch_size


def bin_ceiling(predicted_len: int, bin_size: int) -> int:
    """Round up to the cell boundary: 1..50 -> 50, 51..100 -> 100 (cell 50)."""
    return -(-predicted_len // bin_size) * bin_size
