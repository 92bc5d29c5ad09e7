"""Turning predicted lengths into micro-batches.

NOTE on the scheduling algorithm (Zheng et al., 2023, section 4):
Requests are planned one *group* (``group_size`` requests, in input order) at a time.
Inside a group they are sorted by predicted length, so that requests of similar length
share a micro-batch and few rows sit idle as padding while the longest one decodes.
- Without VBS, the sorted list is cut into micro-batches of ``batch_size`` rows.
- With VBS, predicted lengths are bucketed into cells of ``bin_size`` tokens, and each
  bin is cut into micro-batches whose row count depends on the bin (short bins get more
  rows). A bin's last micro-batch that is too small to fill (fewer than
  ``max(rows // 2, batch_size)`` rows) is merged into the next bin up; the last bin
  keeps it.
- With FCR, a micro-batch is capped at its predicted maximum (the bin ceiling under
  VBS). Rows that hit the cap without finishing are *failures*: the caller collects them
  and plans them again with :func:`plan_retries`, at their full limit, at the end of
  their group. Without FCR, every micro-batch may run to the largest limit of its rows.
  A request's limit is what it may still generate (``Request.remaining_tokens``): its
  ``max_new_tokens`` less any tokens an earlier run kept (``fcr_mode="resume"``).
A constant predictor (vanilla) makes the sort a no-op, which gives plain static batching
in input order.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from seqsched.request import Request
from seqsched.schedule.batch import MicroBatch
from seqsched.schedule.config import ScheduleConfig
from seqsched.schedule.prediction import clamped_prediction, raw_prediction
from seqsched.schedule.vbs import PAPER_MIN_ROWS, batch_size_fn, bin_ceiling


def plan_group(requests: Sequence[Request], cfg: ScheduleConfig) -> list[MicroBatch]:
    """Plan one group of requests, each with ``predicted_len`` set."""
    if not requests:
        return []
    # Sorting and bins: the clamped prediction, or, as in the paper's code, the raw one
    # (a prediction of 0 in bin 0, one over the limit after those at it); caps are clamped.
    predicted = {r.index: raw_prediction(r) if cfg.paper_exact else clamped_prediction(r) for r in requests}
    limit = {r.index: r.remaining_tokens for r in requests}
    order = [r.index for r in sorted(requests, key=lambda r: (predicted[r.index], r.index))]
    if cfg.vbs == "off":
        chunks = [
            (order[i : i + cfg.batch_size], max(predicted[j] for j in order[i : i + cfg.batch_size]))
            for i in range(0, len(order), cfg.batch_size)
        ]
    else:
        chunks = _vbs_chunks(order, predicted, cfg, max(limit.values()))
    plan = []
    for rows, predicted_max in chunks:
        row_limit = max(limit[i] for i in rows)
        cap = max(1, min(predicted_max, row_limit)) if cfg.fcr else row_limit
        plan.append(MicroBatch(tuple(rows), cap))
    _check_partition(plan, requests)
    return plan


def plan_retries(requests: Sequence[Request], cfg: ScheduleConfig) -> list[MicroBatch]:
    """Plan FCR failures: ``batch_size`` rows at a time, in the given order, full limits."""
    indices = [r.index for r in requests]
    limit = {r.index: r.remaining_tokens for r in requests}
    return [
        MicroBatch(tuple(rows), max(limit[i] for i in rows), is_retry=True)
        for rows in (indices[i : i + cfg.batch_size] for i in range(0, len(indices), cfg.batch_size))
    ]


def groups(requests: Sequence[Request], group_size: int) -> Iterator[list[Request]]:
    """The scheduling windows: ``group_size`` requests at a time, in input order."""
    for start in range(0, len(requests), group_size):
        yield list(requests[start : start + group_size])


def is_failure(request: Request, batch: MicroBatch, finished: bool, num_output_tokens: int) -> bool:
    """An FCR failure: stopped by a cap below the request's own limit, before its EOS.
    ``num_output_tokens`` counts this run's tokens; call it before the run's tokens are kept."""
    return (
        not finished and batch.max_new_tokens < request.remaining_tokens and num_output_tokens >= batch.max_new_tokens
    )


def _vbs_chunks(
    order: list[int], predicted: dict[int, int], cfg: ScheduleConfig, max_limit: int
) -> list[tuple[list[int], int]]:
    rows_for = batch_size_fn(cfg, max_limit)
    bins: dict[int, list[int]] = {}
    for index in order:
        bins.setdefault(bin_ceiling(predicted[index], cfg.bin_size), []).append(index)
    ceilings = sorted(bins)
    chunks: list[tuple[list[int], int]] = []
    for k, ceiling in enumerate(ceilings):
        members, rows = bins[ceiling], rows_for(ceiling)
        for start in range(0, len(members), rows):
            chunk = members[start : start + rows]
            last_bin = k == len(ceilings) - 1
            if not last_bin and len(chunk) < max(rows // 2, PAPER_MIN_ROWS if cfg.paper_exact else cfg.batch_size):
                if cfg.paper_exact:  # the paper's code appends them
                    bins[ceilings[k + 1]].extend(chunk)
                else:  # prepending keeps the next bin sorted by predicted length
                    bins[ceilings[k + 1]][:0] = chunk
                break
            chunks.append((chunk, ceiling))
    return chunks


def _check_partition(plan: list[MicroBatch], requests: Sequence[Request]) -> None:
    planned = sorted(i for batch in plan for i in batch.indices)
    assert planned == sorted(r.index for r in requests), "a plan must hold every request once"
