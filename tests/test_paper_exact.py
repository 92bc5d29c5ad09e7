"""`paper_exact` plans exactly as the paper's code does, batch for batch: checked against a
transcription of its ``schedule()`` (zhengzangw/Sequence-Scheduling, ``src/utils.py``).
The clamp of predictions to the limit stays seqsched's in both modes, so caps above the
limit are compared clamped."""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path

import pytest

from seqsched.schedule import ScheduleConfig, plan_group
from tests.helpers import create_requests

SHARED_VAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "alpaca-val-8k-length.json"
LIMIT = 512


# --- the paper's code, transcribed (only names of the helpers kept) -----------------------
def buckit(x, cell=50):  # type: ignore[no-untyped-def]
    x = int(x)
    x = (x // cell + 1) * cell if x % cell != 0 else x
    return x


len_bs_dict = {50: 256, 100: 128, 150: 64, 200: 32, 250: 16, 300: 16}


def len_bs_dict_fn(x):  # type: ignore[no-untyped-def]
    return len_bs_dict.get(x, 16)


def schedule(lengths, mini_batch_size=1, vbs=False):  # type: ignore[no-untyped-def]
    lengths_with_id = [(i, l) for i, l in enumerate(lengths)]  # noqa: E741
    sorted_lengths_with_id = sorted(lengths_with_id, key=lambda x: x[1], reverse=False)
    batches = []
    if not vbs:
        for i in range(0, len(lengths), mini_batch_size):
            batch = sorted_lengths_with_id[i : i + mini_batch_size]
            batch_ids = [x[0] for x in batch]
            max_len = max([x[1] for x in batch])
            batches.append((batch_ids, max_len))
    else:
        ids_len_dict = defaultdict(list)
        for i, l in sorted_lengths_with_id:  # noqa: E741
            ids_len_dict[buckit(l)].append(i)
        max_l = max(lengths)
        for l, ids in ids_len_dict.items():  # noqa: E741
            bs = len_bs_dict_fn(l)
            for i in range(0, len(ids), bs):
                batch = ids[i : i + bs]
                if l < max_l and len(batch) < max(len_bs_dict_fn(l) // 2, 16):
                    l_ = l + 50
                    while l_ not in ids_len_dict:
                        l_ += 50
                    ids_len_dict[l_].extend(batch)
                    break
                batches.append((batch, l))
    return batches


# -------------------------------------------------------------------------------------------


def _ours(lengths: list[int], vbs: bool, paper_exact: bool = True) -> list[tuple[list[int], int]]:
    cfg = ScheduleConfig(
        batch_size=16, group_size=len(lengths), vbs="paper" if vbs else "off", fcr=True, paper_exact=paper_exact
    )
    return [
        (list(b.indices), b.max_new_tokens) for b in plan_group(create_requests(lengths, max_new_tokens=LIMIT), cfg)
    ]


def _papers(lengths: list[int], vbs: bool) -> list[tuple[list[int], int]]:
    return [(ids, max(1, min(cap, LIMIT))) for ids, cap in schedule(lengths, 16, vbs)]


def _trace(seed: int, n: int = 256) -> list[int]:
    rng = random.Random(seed)
    return [rng.choice([0, rng.randint(1, 60), rng.randint(1, 300), rng.randint(250, LIMIT)]) for _ in range(n)]


@pytest.mark.parametrize("vbs", [False, True], ids=["sort-only", "vbs"])
@pytest.mark.parametrize("seed", range(8))
def test_paper_exact_plans_are_the_papers_batch_for_batch(seed: int, vbs: bool) -> None:
    lengths = _trace(seed)
    assert _ours(lengths, vbs) == _papers(lengths, vbs)


def test_without_it_seqsched_plans_differently() -> None:
    differs = [seed for seed in range(8) if _ours(_trace(seed), True, paper_exact=False) != _papers(_trace(seed), True)]
    assert differs, "the flag should matter on these traces (merged rows prepended, 0 in bin 50)"


@pytest.mark.skipif(not SHARED_VAL.exists(), reason=f"needs the shared val trace at {SHARED_VAL}")
@pytest.mark.parametrize("vbs", [False, True], ids=["sort-only", "vbs"])
def test_on_the_papers_val_trace_every_group_matches(vbs: bool) -> None:
    from seqsched.data.traces import read_trace

    trace = read_trace(SHARED_VAL, sample_size=1024, seed=42)
    oracle = trace.oracle("max")
    lengths = [oracle[r.id] for r in trace.records]
    for start in range(0, len(lengths), 256):
        group = lengths[start : start + 256]
        assert _ours(group, vbs) == _papers(group, vbs)
