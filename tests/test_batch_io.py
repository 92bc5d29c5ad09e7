"""Reading request files (both shapes, every kind of bad line) and writing output lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from seqsched.data.batch_io import (
    error_line,
    read_answered,
    read_requests,
    result_line,
    write_jsonl,
)
from seqsched.request import RequestStatus, Result


def _write(tmp_path: Path, lines: list[object | str]) -> Path:
    path = tmp_path / "requests.jsonl"
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


def _openai(custom_id: str, **body: object) -> dict[str, object]:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}


GOOD_CHAT = _openai("a", model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=7)


def test_openai_and_plain_lines(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        [
            GOOD_CHAT,
            {"prompt": "hello", "temperature": 0.5, "top_p": 0.9, "seed": 3},
            {"custom_id": "c", "body": {"prompt": "x", "max_completion_tokens": 4}},
        ],
    )
    requests, errors = read_requests(path, max_new_tokens=99)
    assert errors == []
    a, b, c = requests
    assert (a.request_id, a.messages, a.max_new_tokens, a.index) == (
        "a",
        [{"role": "user", "content": "hi"}],
        7,
        0,
    )
    assert (b.request_id, b.prompt, b.max_new_tokens, b.index) == ("request-2", "hello", 99, 1)
    assert (b.sampling.temperature, b.sampling.top_p, b.sampling.seed) == (0.5, 0.9, 3)
    assert (c.prompt, c.max_new_tokens) == ("x", 4)


@pytest.mark.parametrize(
    ("line", "field", "value"),
    [
        ('{"prompt": "hi", ', "invalid JSON", '{"prompt": "hi",'),
        ([1, 2], "must be a JSON object", "[1, 2]"),
        ({"custom_id": "x"}, "field 'prompt'", "null"),
        (
            _openai("x", prompt="p", max_tokens=-3),
            "field 'body.max_tokens': must be a positive integer",
            "-3",
        ),
        ({"prompt": "p", "max_tokens": 2.5}, "field 'max_tokens'", "2.5"),
        ({"prompt": "p", "max_tokens": True}, "field 'max_tokens'", "true"),
        ({"prompt": "p", "temperature": -1}, "field 'temperature'", "-1"),
        ({"prompt": "p", "temperature": "hot"}, "field 'temperature'", '"hot"'),
        ({"messages": "hi"}, "field 'messages'", '"hi"'),
        ({"messages": [{"content": "hi"}]}, "field 'messages[0].role'", "null"),
        ({"messages": [{"role": "user", "content": 5}]}, "field 'messages[0].content'", "5"),
        ({"prompt": "p", "messages": [{"role": "user", "content": "c"}]}, "field 'prompt'", '"p"'),
        ({"custom_id": 7, "prompt": "p"}, "field 'custom_id'", "7"),
        ({"body": "text"}, "field 'body'", '"text"'),
    ],
)
def test_bad_line_names_file_line_field_value(tmp_path: Path, line: object, field: str, value: str) -> None:
    path = _write(tmp_path, [GOOD_CHAT, line, {"custom_id": "z", "prompt": "ok"}])
    requests, errors = read_requests(path)
    assert [r.request_id for r in requests] == ["a", "z"]  # the valid ones still parse
    assert [r.index for r in requests] == [0, 2]
    (error,) = errors
    assert error.line == 2
    assert error.message.startswith("requests.jsonl:2: ")
    assert field in error.message
    assert f"got {value}" in error.message


def test_duplicate_custom_id(tmp_path: Path) -> None:
    path = _write(tmp_path, [GOOD_CHAT, {"custom_id": "b", "prompt": "p"}, GOOD_CHAT])
    requests, errors = read_requests(path)
    assert [r.request_id for r in requests] == ["a", "b"]
    (error,) = errors
    assert (error.line, error.custom_id) == (3, "a")
    assert error.message == "requests.jsonl:3: field 'custom_id': duplicate of line 1, got \"a\""


def test_blank_lines_keep_line_numbers(tmp_path: Path) -> None:
    path = _write(tmp_path, ["", json.dumps({"prompt": "p"}), "   ", "{bad"])
    requests, errors = read_requests(path)
    assert [(r.index, r.request_id) for r in requests] == [(1, "request-2")]
    assert [(e.line, e.custom_id) for e in errors] == [(4, "request-4")]


@pytest.mark.parametrize("text", ["", "\n  \n"])
def test_empty_file_is_an_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text(text)
    with pytest.raises(ValueError, match=r"empty\.jsonl: empty file"):
        read_requests(path)


def test_result_lines_have_the_openai_batch_shape(tmp_path: Path) -> None:
    path = _write(tmp_path, [GOOD_CHAT, {"custom_id": "t", "prompt": "p"}, {"custom_id": "e", "prompt": "q"}])
    (chat, text, failed), _ = read_requests(path)
    chat.status, text.status = RequestStatus.FINISHED_STOPPED, RequestStatus.FINISHED_LENGTH
    chat.prompt_token_ids, chat.predicted_len = [1, 2, 3], 5
    failed.fail("prompt (900 tokens) is over the context (256)")

    line = result_line(Result(chat, token_ids=[4, 5], text="yo", length=6, num_runs=1), "tiny")
    assert line["custom_id"] == "a" and line["error"] is None
    body = line["response"]["body"]
    assert line["response"]["status_code"] == 200
    assert (body["object"], body["model"]) == ("chat.completion", "tiny")
    assert body["choices"] == [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "yo"}}]
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    assert line["seqsched"] == {"predicted_len": 5, "length": 6, "num_runs": 1}

    body = result_line(Result(text, token_ids=[9], text="z"), "tiny")["response"]["body"]
    assert body["object"] == "text_completion"
    assert body["choices"] == [{"index": 0, "finish_reason": "length", "text": "z"}]

    line = result_line(Result(failed), "tiny")
    assert line["response"] is None
    assert line["error"]["message"] == "prompt (900 tokens) is over the context (256)"


def test_write_then_read_answered(tmp_path: Path) -> None:
    path = _write(tmp_path, [GOOD_CHAT])
    (request,), _ = read_requests(path)
    request.status = RequestStatus.FINISHED_STOPPED
    good = result_line(Result(request, token_ids=[1], text="t"), "m")
    bad = error_line("b", "requests.jsonl:2: boom")
    out = tmp_path / "sub" / "out.jsonl"
    write_jsonl(out, [good, bad])
    assert [json.loads(x) for x in out.read_text().splitlines()] == [good, bad]
    assert list(tmp_path.joinpath("sub").iterdir()) == [out]  # no temporary file left
    assert bad["error"] == {"code": "invalid_request", "message": "requests.jsonl:2: boom"}
    with out.open("a") as f:
        f.write('{"custom_id": "torn", "resp')  # a crash mid-line
    assert read_answered(out) == {"a": good}
