"""`seqsched run` end to end on the tiny model: input order, bad lines, resume, crashes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import seqsched
from seqsched.cli import main
from seqsched.predict.base import write_manifest
from seqsched.predict.constant import ConstantPredictor
from seqsched.predict.registry import load_predictor

GOOD: list[dict[str, Any]] = [
    {
        "custom_id": "a",
        "body": {"messages": [{"role": "user", "content": "the model predicts"}], "max_tokens": 6},
    },
    {"custom_id": "b", "prompt": "my cat sorts the queue", "max_tokens": 9},
    {"custom_id": "c", "prompt": "a request waits for", "max_tokens": 3},
    {"custom_id": "d", "messages": [{"role": "user", "content": "our team groups"}]},
]


def _write(path: Path, lines: list[Any]) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def _read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _run(model: Path, inp: Path, out: Path, *extra: str) -> int:
    args = ["run", str(inp), "--model", str(model), "--output", str(out), "--device", "cpu"]
    return main([*args, "--batch-size", "2", "--max-new-tokens", "8", *extra])


def _text(line: dict[str, Any]) -> str:
    choice = line["response"]["body"]["choices"][0]
    return choice["message"]["content"] if "message" in choice else choice["text"]


def test_good_and_bad_lines_in_input_order(tiny_model_dir: Path, tmp_path: Path) -> None:
    inp = _write(
        tmp_path / "requests.jsonl",
        [
            GOOD[0],
            '{"prompt": "x",',
            GOOD[1],
            {"custom_id": "n", "prompt": "p", "max_tokens": -3},
            GOOD[2],
            {**GOOD[1], "prompt": "again"},
            {"custom_id": "m", "messages": "hi"},
            GOOD[3],
            {"custom_id": "long", "prompt": "the batch", "max_tokens": 300},  # over the context
        ],
    )
    out = tmp_path / "out.jsonl"
    assert _run(tiny_model_dir, inp, out) == 0
    lines = _read(out)
    ids = ["a", "request-2", "b", "n", "c", "b", "m", "d", "long"]
    assert [line["custom_id"] for line in lines] == ids
    errors = {i: line["error"]["message"] for i, line in enumerate(lines) if line["error"] is not None}
    assert sorted(errors) == [1, 3, 5, 6, 8]
    assert errors[1].startswith("requests.jsonl:2: invalid JSON")
    assert errors[3] == "requests.jsonl:4: field 'max_tokens': must be a positive integer, got -3"
    assert errors[5] == "requests.jsonl:6: field 'custom_id': duplicate of line 3, got \"b\""
    assert errors[6].startswith("requests.jsonl:7: field 'messages'")
    assert lines[8]["error"]["code"] == "request_failed" and "context" in errors[8]
    for i, limit in ((0, 6), (2, 9), (4, 3), (7, 8)):
        body = lines[i]["response"]["body"]
        assert 1 <= body["usage"]["completion_tokens"] <= limit
        assert body["choices"][0]["finish_reason"] in ("stop", "length")
    assert lines[0]["response"]["body"]["object"] == "chat.completion"
    assert lines[2]["response"]["body"]["object"] == "text_completion"


def test_every_strategy_gives_the_same_greedy_answers(tiny_model_dir: Path, tmp_path: Path) -> None:
    inp = _write(tmp_path / "requests.jsonl", GOOD)
    vanilla = seqsched.run(
        inp, tmp_path / "vanilla.jsonl", model=tiny_model_dir, max_new_tokens=8, device="cpu", batch_size=2
    )
    assert (vanilla.num_answered, vanilla.num_lines) == (4, 4)
    lengths = _write(tmp_path / "lengths.jsonl", [{"id": x, "length": 2} for x in "abcd"])
    out = tmp_path / "oracle.jsonl"
    assert _run(tiny_model_dir, inp, out, "--oracle-lengths", str(lengths), "--fcr", "--vbs", "paper") == 0
    assert [_text(x) for x in _read(out)] == [_text(x) for x in _read(tmp_path / "vanilla.jsonl")]
    assert [x["seqsched"]["predicted_len"] for x in _read(out)] == [2, 2, 2, 2]
    resumed = tmp_path / "resumed.jsonl"
    assert _run(tiny_model_dir, inp, resumed, "--oracle-lengths", str(lengths), "--fcr-mode", "resume") == 0
    assert [_text(x) for x in _read(resumed)] == [_text(x) for x in _read(tmp_path / "vanilla.jsonl")]
    assert any(x["seqsched"]["num_runs"] == 2 for x in _read(resumed)), "2-token caps should make FCR resume some"


def test_unknown_model_path_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inp = _write(tmp_path / "requests.jsonl", GOOD)
    missing = tmp_path / "no-such-model"
    assert _run(missing, inp, tmp_path / "out.jsonl") == 2
    assert str(missing) in capsys.readouterr().err


def test_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inp = _write(tmp_path / "requests.jsonl", GOOD)
    assert _run(tmp_path, inp, tmp_path / "o.jsonl", "--strategy", "seqsch") == 2
    assert "needs a predictor" in capsys.readouterr().err
    empty = _write(tmp_path / "empty.jsonl", [])
    assert _run(tmp_path, empty, tmp_path / "o.jsonl") == 2
    assert "empty.jsonl: empty file" in capsys.readouterr().err
    lengths = _write(tmp_path / "lengths.jsonl", [{"id": "a", "length": 2}])
    assert _run(tmp_path, inp, tmp_path / "o.jsonl", "--oracle-lengths", str(lengths)) == 2
    assert "no length for 3 request(s): 'b', 'c', 'd'" in capsys.readouterr().err


def test_resume_keeps_answers_and_reruns_the_rest(tiny_model_dir: Path, tmp_path: Path) -> None:
    inp = _write(tmp_path / "requests.jsonl", GOOD)
    out = tmp_path / "out.jsonl"
    assert _run(tiny_model_dir, _write(tmp_path / "first.jsonl", GOOD[:2]), out) == 0
    before = _read(out)
    before[0]["response"]["body"]["choices"][0]["message"]["content"] = "FROM BEFORE"
    before[1] = {"id": "x", "custom_id": "b", "response": None, "error": {"code": "c", "message": "m"}}
    _write(out, before)
    assert _run(tiny_model_dir, inp, out, "--resume") == 0
    after = _read(out)
    assert [x["custom_id"] for x in after] == ["a", "b", "c", "d"]
    assert after[0] == before[0]  # kept as it was
    assert all(x["error"] is None for x in after)  # the error line was re-run
    # Everything answered: nothing runs, so the model is never even loaded.
    assert _run(tmp_path / "no-such-model", inp, out, "--resume") == 0
    assert _read(out) == after


def test_a_crash_keeps_finished_work(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from seqsched.engine.hf import HFEngine

    real_run, calls = HFEngine.run, []

    def flaky_run(self: HFEngine, batch: Any, requests: Any) -> Any:
        calls.append(batch)
        if len(calls) == 2:
            raise RuntimeError("out of memory")
        return real_run(self, batch, requests)

    monkeypatch.setattr(HFEngine, "run", flaky_run)
    monkeypatch.setattr(HFEngine, "warmup", lambda self, requests: None)
    inp = _write(tmp_path / "requests.jsonl", GOOD)
    out = tmp_path / "out.jsonl"
    with pytest.raises(RuntimeError, match="out of memory"):
        _run(tiny_model_dir, inp, out)
    # Vanilla sorts by limit (c: 3, a: 6, d: 8, b: 9): the first micro-batch is c and a.
    assert [x["custom_id"] for x in _read(out)] == ["a", "c"]
    monkeypatch.setattr(HFEngine, "run", real_run)
    assert _run(tiny_model_dir, inp, out, "--resume") == 0
    assert [x["custom_id"] for x in _read(out)] == ["a", "b", "c", "d"]


def test_registry_loads_by_kind(tmp_path: Path) -> None:
    ConstantPredictor(7).save(tmp_path / "constant")
    predictor = load_predictor(tmp_path / "constant")
    assert isinstance(predictor, ConstantPredictor) and predictor.value == 7
    write_manifest(tmp_path / "odd", "crystal-ball", {})
    with pytest.raises(ValueError, match="unknown predictor kind 'crystal-ball'; known kinds: constant, "):
        load_predictor(tmp_path / "odd")


def test_importing_the_api_does_not_import_torch() -> None:
    code = "import sys, seqsched, seqsched.api, seqsched.cli.run; seqsched.run; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_a_killed_run_leaves_a_journal_that_resume_reads(tmp_path: Path, tiny_model_dir: Path) -> None:
    from seqsched.api import journal_path
    from seqsched.data.batch_io import read_answered

    requests = tmp_path / "requests.jsonl"
    requests.write_text("".join(json.dumps({"custom_id": f"q{i}", "prompt": f"hello {i}"}) + "\n" for i in range(3)))
    out = tmp_path / "out.jsonl"
    # A journal as a killed job leaves it: one answer, and a torn last line.
    assert (
        main(
            [
                "run",
                str(requests),
                "-o",
                str(tmp_path / "first.jsonl"),
                "--model",
                str(tiny_model_dir),
                "--max-new-tokens",
                "8",
            ]
        )
        == 0
    )
    first = read_answered(tmp_path / "first.jsonl")
    kept = first["q1"] | {"id": "from-the-journal"}  # marked, to see that it is kept, not re-run
    journal_path(out).write_text(json.dumps(kept) + '\n{"custom_id": "q2", "resp')
    assert (
        main(
            [
                "run",
                str(requests),
                "-o",
                str(out),
                "--model",
                str(tiny_model_dir),
                "--max-new-tokens",
                "8",
                "--resume",
            ]
        )
        == 0
    )
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["custom_id"] for x in lines] == ["q0", "q1", "q2"]
    assert lines == [first["q0"], kept, first["q2"]]
    assert not journal_path(out).exists(), "the journal goes once the ordered output is written"
