"""HFEngine on the tiny random Llama, checked against plain ``model.generate``.

The key test is schedule invariance: whatever the strategy (sorting, VBS, FCR caps and
re-runs), every request gets exactly the greedy tokens it gets when generated alone.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from seqsched.engine.config import EngineConfig
from seqsched.engine.hf import HFEngine
from seqsched.engine.source import ModelLoadError
from seqsched.pipeline import Pipeline
from seqsched.predict.base import LengthPredictor
from seqsched.predict.constant import ConstantPredictor
from seqsched.predict.oracle import OraclePredictor
from seqsched.request import Request, RequestStatus, SamplingParams
from seqsched.schedule import MicroBatch, ScheduleConfig
from seqsched.simulate.trace import trace_outcomes
from tests.tiny_model import MAX_POSITION_EMBEDDINGS, NUM_REQUESTS, tiny_requests

_requests = tiny_requests


def _eos(engine: HFEngine) -> int:
    return engine.eos_token_ids[0]


def test_tiny_model_ends_at_varied_lengths(tiny_engine: HFEngine, reference: list[list[int]]) -> None:
    finished = [len(t) for t in reference if t and t[-1] == _eos(tiny_engine)]
    assert len(finished) >= NUM_REQUESTS // 2, f"too few prompts reach EOS: {finished}"
    assert min(finished) <= 5 and max(finished) >= 30, f"lengths do not vary enough: {sorted(finished)}"
    assert len(set(finished)) >= 8, f"too few distinct lengths: {sorted(finished)}"


def _oracle(reference: list[list[int]], scale: float = 1.0) -> OraclePredictor:
    return OraclePredictor({f"r{i}": max(1, int(len(t) * scale)) for i, t in enumerate(reference)})


STRATEGIES = {
    "vanilla": (None, ScheduleConfig(batch_size=4, group_size=8)),
    "oracle": (1.0, ScheduleConfig(batch_size=4, group_size=8)),
    "oracle+fcr": (1.0, ScheduleConfig(batch_size=4, group_size=8, fcr=True)),
    "oracle+vbs-paper+fcr": (1.0, ScheduleConfig(batch_size=4, group_size=8, vbs="paper", fcr=True)),
    "oracle+vbs-budget+fcr": (
        1.0,
        ScheduleConfig(
            batch_size=2, group_size=8, vbs="budget", bin_size=16, token_budget=96, max_batch_size=8, fcr=True
        ),
    ),
    "under-predicting+fcr": (0.5, ScheduleConfig(batch_size=4, group_size=8, fcr=True)),
    "under-predicting+resume": (0.5, ScheduleConfig(batch_size=4, group_size=8, fcr=True, fcr_mode="resume")),
    "under-predicting+vbs-paper+resume": (
        0.3,
        ScheduleConfig(batch_size=2, group_size=12, vbs="paper", bin_size=8, fcr=True, fcr_mode="resume"),
    ),
}


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_every_strategy_returns_the_tokens_of_generating_alone(
    strategy: str, tiny_engine: HFEngine, reference: list[list[int]]
) -> None:
    scale, config = STRATEGIES[strategy]
    predictor: LengthPredictor = ConstantPredictor() if scale is None else _oracle(reference, scale)
    report = Pipeline(tiny_engine, predictor, config).run(_requests())
    assert len(report.batches) >= NUM_REQUESTS // 8, "expected at least one micro-batch per group"
    for i, result in enumerate(report.results):
        assert result.request.index == i
        assert result.token_ids == reference[i], f"{strategy}: request {i} differs from generating alone"
        ended = bool(reference[i]) and reference[i][-1] == _eos(tiny_engine)
        expected = RequestStatus.FINISHED_STOPPED if ended else RequestStatus.FINISHED_LENGTH
        assert result.status == expected
    if strategy.startswith("under-predicting"):
        assert report.num_failures > 0, "short predictions should make FCR re-run requests"


def _prepared(engine: HFEngine, requests: list[Request]) -> list[Request]:
    engine.prepare(requests)
    assert all(not r.status.is_finished for r in requests), [r.error for r in requests]
    return requests


def test_rows_stop_at_their_own_limit_or_eos(tiny_engine: HFEngine, reference: list[list[int]]) -> None:
    rows = _prepared(tiny_engine, _requests(8))
    for r, limit in zip(rows, (1, 2, 3, 5, 8, 13, 32, 20), strict=True):  # within the reference limits
        r.max_new_tokens = limit
    run = tiny_engine.run(MicroBatch(tuple(r.index for r in rows), 64), rows)
    steps = {o.num_steps for o in run.outcomes}
    assert len(steps) == 1, f"every row is charged the batch's steps, got {steps}"
    assert steps.pop() == max(o.num_output_tokens for o in run.outcomes)
    assert run.seconds > 0
    for r, o in zip(rows, run.outcomes, strict=True):
        want = reference[r.index][: r.max_new_tokens]
        assert o.token_ids == want, f"row {r.index} (limit {r.max_new_tokens})"
        assert o.finished == (_eos(tiny_engine) in want)
        assert o.finished == (bool(want) and want[-1] == _eos(tiny_engine)), "EOS ends the row's tokens"


def test_a_batch_cap_cuts_rows_unfinished(tiny_engine: HFEngine, reference: list[list[int]]) -> None:
    rows = _prepared(tiny_engine, _requests(8))
    cap = 6
    run = tiny_engine.run(MicroBatch(tuple(r.index for r in rows), cap), rows)
    for r, o in zip(rows, run.outcomes, strict=True):
        assert o.token_ids == reference[r.index][:cap]
        assert o.finished == (len(reference[r.index]) <= cap and reference[r.index][-1] == _eos(tiny_engine))
    long_rows = [o for r, o in zip(rows, run.outcomes, strict=True) if len(reference[r.index]) > cap]
    assert long_rows and all(o.num_steps == cap for o in run.outcomes)


def test_a_prompt_over_the_context_fails_alone(tiny_engine: HFEngine, reference: list[list[int]]) -> None:
    requests = _requests(4)
    requests[2].max_new_tokens = MAX_POSITION_EMBEDDINGS
    report = Pipeline(tiny_engine, ConstantPredictor(), ScheduleConfig(batch_size=2)).run(requests)
    failed = report.results[2]
    n = failed.request.num_prompt_tokens
    assert failed.status == RequestStatus.FINISHED_ERROR
    assert failed.request.error == (
        f"prompt has {n} tokens; with max_new_tokens {MAX_POSITION_EMBEDDINGS} "
        f"it exceeds the model's context of {MAX_POSITION_EMBEDDINGS}"
    )
    for i in (0, 1, 3):
        assert report.results[i].token_ids == reference[i]
        assert report.results[i].status in (RequestStatus.FINISHED_STOPPED, RequestStatus.FINISHED_LENGTH)


def test_replay_forces_the_trace_lengths(tiny_engine: HFEngine) -> None:
    rows = _prepared(tiny_engine, _requests(6))
    targets, limits = (1, 4, 17, 30, 9, 50), (64, 64, 64, 64, 5, 64)
    for r, target, limit in zip(rows, targets, limits, strict=True):
        r.target_len, r.max_new_tokens = target, limit
    for cap in (40, 64):  # 40: an FCR cap cuts the longest row
        batch = MicroBatch(tuple(r.index for r in rows), cap)
        got, want = tiny_engine.run(batch, rows).outcomes, trace_outcomes(batch, rows)
        assert [(o.num_output_tokens, o.finished, o.num_steps) for o in got] == [
            (o.num_output_tokens, o.finished, o.num_steps) for o in want
        ]
        for o in got:
            assert (o.token_ids[-1] == _eos(tiny_engine)) == o.finished
            assert _eos(tiny_engine) not in o.token_ids[:-1], "EOS is forbidden before the target"


def test_sampled_rows_depend_only_on_their_own_seed(tiny_engine: HFEngine, reference: list[list[int]]) -> None:
    rows = _prepared(tiny_engine, _requests(4))
    rows[1].sampling = SamplingParams(temperature=1.0, seed=7)
    rows[2].sampling = SamplingParams(temperature=0.8, top_p=0.9, seed=8)
    together = tiny_engine.run(MicroBatch((0, 1, 2, 3), 64), rows).outcomes
    alone = [tiny_engine.run(MicroBatch((r.index,), 64), [r]).outcomes[0] for r in rows[1:3]]
    assert [o.token_ids for o in together[1:3]] == [o.token_ids for o in alone]
    for i in (0, 3):  # greedy rows are untouched by their sampled batch mates
        assert together[i].token_ids == reference[i]
    rows[1].sampling = SamplingParams(temperature=1.0, seed=9)
    reseeded = tiny_engine.run(MicroBatch((1,), 64), [rows[1]]).outcomes[0]
    assert reseeded.token_ids != together[1].token_ids


def test_a_resumed_row_continues_as_an_uncapped_run_would(tiny_engine: HFEngine, reference: list[list[int]]) -> None:
    rows = _prepared(tiny_engine, _requests(4))
    rows[1].sampling = SamplingParams(temperature=1.0, seed=7)
    uncapped = tiny_engine.run(MicroBatch((0, 1, 2, 3), 64), rows).outcomes
    long_rows = [r for r, o in zip(rows, uncapped, strict=True) if o.num_output_tokens > 6]
    assert rows[1] in long_rows and len(long_rows) >= 2, "the test needs rows longer than the cap"
    capped = tiny_engine.run(MicroBatch(tuple(r.index for r in long_rows), 6), long_rows).outcomes
    for r, o in zip(long_rows, capped, strict=True):
        r.output_prefix = tuple(o.token_ids)
    resumed = tiny_engine.run(MicroBatch(tuple(r.index for r in long_rows), 64), long_rows).outcomes
    for r, o in zip(long_rows, resumed, strict=True):
        assert [*r.output_prefix, *o.token_ids] == uncapped[r.index].token_ids, f"row {r.index}"
        assert o.num_output_tokens <= r.remaining_tokens


def test_replay_counts_a_resumed_rows_kept_tokens(tiny_engine: HFEngine) -> None:
    rows = _prepared(tiny_engine, _requests(2))
    for r, n in zip(rows, (9, 14), strict=True):
        r.target_len = n
        r.output_prefix = (5,) * 4
    run = tiny_engine.run(MicroBatch((0, 1), 64), rows)
    assert [(o.num_output_tokens, o.finished, o.num_steps) for o in run.outcomes] == [(5, True, 10), (10, True, 10)]
    simulated = trace_outcomes(MicroBatch((0, 1), 64), rows)
    assert [(o.num_output_tokens, o.finished, o.num_steps) for o in simulated] == [(5, True, 10), (10, True, 10)]


def test_tokenization_follows_the_chat_template_flag(tiny_model_dir: Path, tiny_engine: HFEngine) -> None:
    tok = tiny_engine.tokenizer
    chat = Request(0, "c", messages=[{"role": "user", "content": "my cat sorts"}])
    plain = Request(1, "p", prompt="my cat sorts")
    tiny_engine.prepare([chat, plain])
    assert chat.prompt_token_ids == plain.prompt_token_ids
    assert tok.decode(chat.prompt_token_ids) == "<s><|user|>my cat sorts</s><|assistant|>"
    raw = HFEngine(EngineConfig(str(tiny_model_dir), device="cpu", chat_template=False))
    plain2 = Request(1, "p", prompt="my cat sorts")
    raw.prepare([plain2])
    assert plain2.prompt_token_ids == tok("my cat sorts")["input_ids"]


def test_decode_skips_special_tokens(tiny_engine: HFEngine) -> None:
    tok = tiny_engine.tokenizer
    ids = tok("the queue")["input_ids"] + [_eos(tiny_engine)]
    assert tiny_engine.decode(ids) == "the queue"


def test_warmup_leaves_requests_alone(tiny_engine: HFEngine) -> None:
    requests = _requests(3)
    tiny_engine.warmup(requests)
    assert all(r.prompt_token_ids is None and r.status == RequestStatus.WAITING for r in requests)


def test_unknown_model_paths_name_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelLoadError, match=re.escape(f"model path '{missing}' does not exist")):
        HFEngine(EngineConfig(str(missing)))
    with pytest.raises(ModelLoadError, match=r"is a directory without a config\.json"):
        HFEngine(EngineConfig(str(tmp_path)))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("device", "gpu", r"device \('gpu'\) must be"),
        ("dtype", "fp8", r"dtype \('fp8'\) must be one of auto, float32, bfloat16, float16"),
        ("model", "", r"model \(''\) must be"),
        ("seed", -1, r"seed \(-1\) must be >= 0"),
    ],
)
def test_engine_config_quotes_bad_values(field: str, value: object, message: str) -> None:
    kwargs: dict[str, object] = {"model": "some/model", field: value}
    with pytest.raises(ValueError, match=message):
        EngineConfig(**kwargs)  # type: ignore[arg-type]


def test_engine_package_imports_without_torch() -> None:
    code = "import sys, seqsched.engine, seqsched.engine.config; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("continuous", [False, True], ids=["static", "continuous"])
def test_stop_strings_end_a_row_and_are_left_out_of_its_text(
    tiny_engine: HFEngine, reference: list[list[int]], continuous: bool
) -> None:
    from seqsched.engine.continuous import HFContinuousEngine
    from seqsched.engine.prompts import stop_at, text_before_stop
    from seqsched.pipeline import Pipeline
    from seqsched.predict.constant import ConstantPredictor
    from seqsched.schedule import ScheduleConfig
    from tests.tiny_model import tiny_requests

    requests = tiny_requests(6)
    long_ones = [i for i in range(6) if len(reference[i]) >= 8]
    stops = {
        i: tiny_engine.decode(reference[i][4:6]).strip() or tiny_engine.decode(reference[i][4:7]) for i in long_ones
    }
    for i, stop in stops.items():
        requests[i].stop = (stop,)
    engine = HFContinuousEngine(tiny_engine) if continuous else tiny_engine
    report = Pipeline(engine, ConstantPredictor(), ScheduleConfig(batch_size=3)).run(requests)
    for i, result in enumerate(report.results):
        if i not in stops:
            assert result.token_ids == reference[i]
            continue
        end = stop_at(reference[i], [stops[i]], tiny_engine.decode)
        assert end is not None and result.token_ids == reference[i][:end]
        assert result.text == text_before_stop(tiny_engine.decode(reference[i][:end]), [stops[i]])
        assert stops[i] not in result.text
        assert result.status == RequestStatus.FINISHED_STOPPED
