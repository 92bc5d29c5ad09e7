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
from tests.helpers import read_lines as _read
from tests.helpers import write_lines as _write

GOOD: list[dict[str, Any]] = [
    {
        "custom_id": "a",
        "body": {"messages": [{"role": "user", "content": "the model predicts"}], "max_tokens": 6},
    },
    {"custom_id": "b", "prompt": "my cat sorts the queue", "max_tokens": 9},
    {"custom_id": "c", "prompt": "a request waits for", "max_tokens": 3},
    {"custom_id": "d", "messages": [{"role": "user", "content": "our team groups"}]},
]


def _run(model: Path, inp: Path, out: Path, *extra: str) -> int:
    args = ["run", str(inp), "--model", str(model), "--output", str(out), "--device", "cpu"]
    return main([*args, "--batch-size", "2", "--max-new-tokens", "8", *extra])


def _text(line: dict[str, Any]) -> str:
    choice = line["response"]["body"]["choices"][0]
    return choice["message"]["content"] if "message" in choice else choice["text"]


def _errors(out: Path) -> list[dict[str, Any]]:
    return _read(out.with_name(out.name + ".errors.jsonl"))


def test_answers_in_the_output_failed_lines_in_the_error_file(tiny_model_dir: Path, tmp_path: Path) -> None:
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
    assert _run(tiny_model_dir, inp, out) == 3, "some lines failed: exit 3"
    lines = _read(out)
    assert [line["custom_id"] for line in lines] == ["a", "b", "c", "d"]
    assert all(line["error"] is None for line in lines)
    errors = _errors(out)
    assert [(e["line"], e["custom_id"]) for e in errors] == [(2, None), (4, "n"), (6, "b"), (7, "m"), (9, "long")]
    messages = [e["error"]["message"] for e in errors]
    assert messages[0].startswith("requests.jsonl:2: invalid JSON")
    assert messages[1] == "requests.jsonl:4: field 'max_tokens': must be a positive integer, got -3"
    assert messages[2] == "requests.jsonl:6: field 'custom_id': duplicate of line 3, got \"b\""
    assert messages[3].startswith("requests.jsonl:7: field 'messages'")
    assert errors[4]["error"]["code"] == "request_failed" and "context" in messages[4]
    for line, limit in zip(lines, (6, 9, 3, 8), strict=True):
        body = line["response"]["body"]
        assert 1 <= body["usage"]["completion_tokens"] <= limit
        assert body["choices"][0]["finish_reason"] in ("stop", "length")
    assert lines[0]["response"]["body"]["object"] == "chat.completion"
    status = json.loads(out.with_name("out.jsonl.status.json").read_text())
    assert status["state"] == "completed"
    assert status["request_counts"] == {"total": 9, "completed": 4, "failed": 5, "resumed": 0}
    assert not out.with_name("out.jsonl.partial").exists()


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
    assert (
        _run(tiny_model_dir, inp, resumed, "--oracle-lengths", str(lengths), "--fcr-mode", "resume", "--vbs", "off")
        == 0
    )
    assert [_text(x) for x in _read(resumed)] == [_text(x) for x in _read(tmp_path / "vanilla.jsonl")]
    assert any(x["seqsched"]["num_runs"] == 2 for x in _read(resumed)), "2-token caps should make FCR resume some"


def test_unknown_model_path_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inp = _write(tmp_path / "requests.jsonl", GOOD)
    missing = tmp_path / "no-such-model"
    assert _run(missing, inp, tmp_path / "out.jsonl") == 2
    assert str(missing) in capsys.readouterr().err


def test_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_model_dir: Path) -> None:
    inp = _write(tmp_path / "requests.jsonl", GOOD)
    assert _run(tiny_model_dir, inp, tmp_path / "o.jsonl", "--strategy", "seqsch") == 2
    assert "needs a predictor" in capsys.readouterr().err
    lengths = _write(tmp_path / "lengths.jsonl", [{"id": "a", "length": 2}])
    assert _run(tiny_model_dir, inp, tmp_path / "o.jsonl", "--oracle-lengths", str(lengths)) == 2
    assert "no length for 3 request(s): 'b', 'c', 'd'" in capsys.readouterr().err


def test_an_empty_input_gives_an_empty_output(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    assert _run(tiny_model_dir, _write(tmp_path / "empty.jsonl", []), out) == 0
    assert out.read_text() == "" and _errors(out) == []


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["-o", "{tmp}/no/such/dir/out.jsonl"], "directory {tmp}/no/such/dir does not exist"),
        (["--predictor", "{tmp}/no-predictor"], "predictor {tmp}/no-predictor is not a directory"),
        (["--oracle-lengths", "{tmp}/no-lengths.jsonl"], "oracle lengths {tmp}/no-lengths.jsonl does not exist"),
        (["--errors", "{tmp}/requests.jsonl"], "the error file and the input would be the same file"),
        (["--errors", "{tmp}/out.jsonl.partial"], "the journal and the error file would be the same file"),
    ],
)
def test_bad_paths_fail_before_the_model_loads(
    tiny_model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    import seqsched.build

    def no_model(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the model must not load before the paths are checked")

    monkeypatch.setattr(seqsched.build, "build_engine", no_model)
    inp = _write(tmp_path / "requests.jsonl", GOOD)
    argv = [x.format(tmp=tmp_path) for x in extra]
    assert _run(tiny_model_dir, inp, tmp_path / "out.jsonl", *argv) == 2
    assert message.format(tmp=tmp_path) in capsys.readouterr().err


def test_an_existing_output_or_journal_is_never_replaced_unasked(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inp = _write(tmp_path / "requests.jsonl", GOOD[:2])
    out = tmp_path / "out.jsonl"
    assert _run(tiny_model_dir, inp, out) == 0
    first = out.read_bytes()
    assert _run(tiny_model_dir, inp, out) == 2
    err = capsys.readouterr().err
    assert "out.jsonl exists: resume that job (--resume, or resume=True in Python), or start afresh" in err
    assert out.read_bytes() == first
    journal = tmp_path / "other.jsonl.partial"
    journal.write_text("")
    assert _run(tiny_model_dir, inp, tmp_path / "other.jsonl") == 2
    assert "other.jsonl.partial exists" in capsys.readouterr().err
    assert _run(tiny_model_dir, inp, out, "--overwrite") == 0


def test_resume_reuses_only_unchanged_answers(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out.jsonl"
    assert (
        _run(tiny_model_dir, _write(tmp_path / "first.jsonl", [*GOOD[:3], {"custom_id": "z", "prompt": "gone"}]), out)
        == 0
    )
    before = {x["custom_id"]: x for x in _read(out)}
    marked = {cid: {**line, "id": f"kept-{cid}"} for cid, line in before.items()}
    _write(out, list(marked.values()))  # marked, to see which answers are kept rather than re-run
    changed = [GOOD[0], {**GOOD[1], "prompt": "a different prompt"}, {**GOOD[2], "max_tokens": 5}, GOOD[3]]
    inp = _write(tmp_path / "requests.jsonl", changed)
    assert _run(tiny_model_dir, inp, out, "--resume") == 0
    assert "resuming: 1 answers kept, 2 re-run (request or settings changed), 1 dropped" in capsys.readouterr().err
    after = _read(out)
    assert [x["custom_id"] for x in after] == ["a", "b", "c", "d"]
    assert [x["id"].startswith("kept-") for x in after] == [True, False, False, False]
    # Other generation settings (here the default limit) re-run everything.
    assert _run(tiny_model_dir, inp, out, "--resume", "--max-new-tokens", "7") == 0
    assert not any(x["id"].startswith("kept-") for x in _read(out))
    # Everything answered and unchanged: nothing runs, so the model is never loaded.
    import seqsched.build

    monkeypatch.setattr(seqsched.build, "build_engine", lambda *a, **k: (_ for _ in ()).throw(AssertionError()))
    final = out.read_bytes()
    assert _run(tiny_model_dir, inp, out, "--resume", "--max-new-tokens", "7") == 0
    assert out.read_bytes() == final


def test_a_crash_keeps_finished_work_in_the_journal(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from seqsched.engine.hf import HFEngine

    class Crash(BaseException):  # what the process dying looks like: nothing catches it
        pass

    real_run, calls = HFEngine.run, []

    def flaky_run(self: HFEngine, batch: Any, requests: Any) -> Any:
        calls.append(batch)
        if len(calls) == 2:
            raise Crash("the GPU fell off the bus")
        return real_run(self, batch, requests)

    monkeypatch.setattr(HFEngine, "run", flaky_run)
    monkeypatch.setattr(HFEngine, "warmup", lambda self, requests: None)
    inp = _write(tmp_path / "requests.jsonl", GOOD)
    out = tmp_path / "out.jsonl"
    with pytest.raises(Crash, match="fell off the bus"):
        _run(tiny_model_dir, inp, out)
    assert not out.exists(), "a failed job writes no output that looks complete"
    # Vanilla sorts by limit (c: 3, a: 6, d: 8, b: 9): the first micro-batch is c and a.
    assert sorted(x["custom_id"] for x in _read(tmp_path / "out.jsonl.partial")) == ["a", "c"]
    assert json.loads((tmp_path / "out.jsonl.status.json").read_text())["state"] == "failed"
    monkeypatch.setattr(HFEngine, "run", real_run)
    assert _run(tiny_model_dir, inp, out, "--resume") == 0
    assert [x["custom_id"] for x in _read(out)] == ["a", "b", "c", "d"]


def test_a_full_disk_names_the_journal_and_resume_recovers(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import errno

    from seqsched.data.journal import Journal

    real_append, appended = Journal.append, []

    def full_disk(self: Journal, line: dict[str, Any]) -> int:
        if appended:
            with self.path.open("a") as f:
                f.write('{"custom_id": "torn", "resp')  # what a write cut short leaves
            raise OSError(errno.ENOSPC, f"cannot write the journal {self.path}: No space left on device")
        appended.append(line)
        return real_append(self, line)

    monkeypatch.setattr(Journal, "append", full_disk)
    inp = _write(tmp_path / "requests.jsonl", GOOD)
    out = tmp_path / "out.jsonl"
    assert _run(tiny_model_dir, inp, out) == 4, "disk full has its own exit status"
    err = capsys.readouterr().err
    assert f"disk full: [Errno 28] cannot write the journal {out}.partial: No space left on device" in err
    status = json.loads((tmp_path / "out.jsonl.status.json").read_text())
    assert status["state"] == "failed" and status["error"].startswith("disk full")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "out.jsonl.partial",
        "out.jsonl.status.json",
        "requests.jsonl",
    ], "no output and no temporary file"
    monkeypatch.setattr(Journal, "append", real_append)
    assert _run(tiny_model_dir, inp, out, "--resume") == 0
    assert "a torn last line cut" in capsys.readouterr().err
    assert [x["custom_id"] for x in _read(out)] == ["a", "b", "c", "d"]


def test_requests_from_stdin(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    data = "".join(json.dumps(x) + "\n" for x in GOOD).encode()
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data)))
    out = tmp_path / "out.jsonl"
    assert _run(tiny_model_dir, Path("-"), out) == 0
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


def test_resume_cuts_a_torn_journal_line_and_keeps_the_rest(tmp_path: Path, tiny_model_dir: Path) -> None:
    from seqsched.job import journal_path

    lines = [{"custom_id": f"q{i}", "prompt": f"hello {i}"} for i in range(3)]
    requests = _write(tmp_path / "requests.jsonl", lines)
    first = tmp_path / "first.jsonl"
    assert _run(tiny_model_dir, requests, first) == 0
    answers = {x["custom_id"]: x for x in _read(first)}
    out = tmp_path / "out.jsonl"
    kept = answers["q1"] | {"id": "from-the-journal"}  # marked, to see that it is kept, not re-run
    # A journal as a killed job leaves it: one answer, and a torn last line.
    journal_path(out).write_text(json.dumps(kept) + '\n{"custom_id": "q2", "resp')
    assert _run(tiny_model_dir, requests, out, "--resume") == 0
    after = _read(out)
    assert [x["custom_id"] for x in after] == ["q0", "q1", "q2"]
    assert after[1] == kept
    assert [_text(x) for x in after] == [_text(answers[f"q{i}"]) for i in range(3)]
    assert not journal_path(out).exists(), "the journal goes once the ordered output is written"
