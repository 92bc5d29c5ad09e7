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
    url = "/v1/chat/completions" if "messages" in body else "/v1/completions"
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


GOOD_CHAT = _openai("a", model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=7)


def test_openai_and_plain_lines(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        [
            GOOD_CHAT,
            {"custom_id": "b", "prompt": "hello", "temperature": 0.5, "top_p": 0.9, "seed": 3, "stop": "END"},
            {"custom_id": "c", "body": {"prompt": "x", "max_completion_tokens": 4, "stop": ["a", "b"]}},
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
    assert (b.request_id, b.prompt, b.max_new_tokens, b.index, b.stop) == ("b", "hello", 99, 1, ("END",))
    assert (b.sampling.temperature, b.sampling.top_p, b.sampling.seed) == (0.5, 0.9, 3)
    assert (c.prompt, c.max_new_tokens, c.stop) == ("x", 4, ("a", "b"))
    assert len({r.fingerprint for r in requests}) == 3


@pytest.mark.parametrize(
    ("line", "field", "value"),
    [
        ('{"prompt": "hi", ', "invalid JSON", '{"prompt": "hi",'),
        ([1, 2], "must be a JSON object", "[1, 2]"),
        (42, "must be a JSON object", "42"),
        (None, "must be a JSON object", "null"),
        (True, "must be a JSON object", "true"),
        (list(range(500)), "must be a JSON object", "[0, 1, 2"),
        ({"custom_id": "x"}, "field 'prompt'", "null"),
        (
            _openai("x", prompt="p", max_tokens=-3),
            "field 'body.max_tokens': must be a positive integer",
            "-3",
        ),
        ({"custom_id": "x", "prompt": "p", "max_tokens": 2.5}, "field 'max_tokens'", "2.5"),
        ({"custom_id": "x", "prompt": "p", "max_tokens": True}, "field 'max_tokens'", "true"),
        ({"custom_id": "x", "prompt": "p", "temperature": -1}, "field 'temperature'", "-1"),
        ({"custom_id": "x", "prompt": "p", "temperature": "hot"}, "field 'temperature'", '"hot"'),
        ({"custom_id": "x", "messages": "hi"}, "field 'messages'", '"hi"'),
        ({"custom_id": "x", "messages": [{"content": "hi"}]}, "field 'messages[0].role'", "null"),
        ({"custom_id": "x", "messages": [{"role": "user", "content": 5}]}, "field 'messages[0].content'", "5"),
        ({"custom_id": "x", "prompt": "p", "messages": [{"role": "user", "content": "c"}]}, "field 'prompt'", '"p"'),
        ({"custom_id": 7, "prompt": "p"}, "field 'custom_id'", "7"),
        ({"custom_id": "x", "body": "text"}, "field 'body'", '"text"'),
        ({"custom_id": "x", "prompt": "p", "stop": 5}, "field 'stop'", "5"),
        ({"custom_id": "x", "prompt": "p", "stop": ["a", "b", "c", "d", "e"]}, "field 'stop'", '["a"'),
        ({"custom_id": "x", "prompt": "p", "n": 2}, "field 'n'", "2"),
        # Fields seqsched does not support are named, not ignored.
        (_openai("x", prompt="p", stream=True), "field 'body.stream'", "true"),
        (_openai("x", prompt="p", logprobs=True), "field 'body.logprobs'", "true"),
        (_openai("x", prompt="p", response_format={"type": "json"}), "field 'body.response_format'", '{"type"'),
        (_openai("x", prompt="p", tools=[]), "field 'body.tools': not supported", "[]"),
        ({**_openai("x", prompt="p"), "url": "/v1/embeddings"}, "field 'url'", '"/v1/embeddings"'),
        ({**_openai("x", prompt="p"), "method": "GET"}, "field 'method'", '"GET"'),
        ({**_openai("x", prompt="p"), "url": "/v1/chat/completions"}, "needs messages", "null"),
        ({**_openai("x", prompt="p"), "extra": 1}, "field 'extra'", "1"),
    ],
)
def test_bad_line_names_file_line_field_value(tmp_path: Path, line: object, field: str, value: str) -> None:
    path = _write(
        tmp_path, [GOOD_CHAT, line if isinstance(line, str) else json.dumps(line), {"custom_id": "z", "prompt": "ok"}]
    )
    requests, errors = read_requests(path)
    assert [r.request_id for r in requests] == ["a", "z"]  # the valid ones still parse
    assert [r.index for r in requests] == [0, 2]
    (error,) = errors
    assert error.line == 2
    assert error.message.startswith("requests.jsonl:2: ")
    assert field in error.message
    assert f"got {value}" in error.message


def test_a_line_without_custom_id_is_an_error_unless_ids_may_be_made_up(tmp_path: Path) -> None:
    path = _write(tmp_path, [{"prompt": "p"}, GOOD_CHAT])
    requests, errors = read_requests(path)
    assert [r.request_id for r in requests] == ["a"]
    assert [(e.line, e.custom_id) for e in errors] == [(1, None)]
    assert "field 'custom_id': missing" in errors[0].message
    requests, errors = read_requests(path, require_custom_id=False)
    assert [r.request_id for r in requests] == ["request-1", "a"] and errors == []


def test_duplicate_custom_id(tmp_path: Path) -> None:
    path = _write(tmp_path, [GOOD_CHAT, {"custom_id": "b", "prompt": "p"}, GOOD_CHAT])
    requests, errors = read_requests(path)
    assert [r.request_id for r in requests] == ["a", "b"]
    (error,) = errors
    assert (error.line, error.custom_id) == (3, "a")
    assert error.message == "requests.jsonl:3: field 'custom_id': duplicate of line 1, got \"a\""


def test_blank_lines_keep_line_numbers(tmp_path: Path) -> None:
    path = _write(tmp_path, ["", json.dumps({"custom_id": "p", "prompt": "p"}), "   ", "{bad"])
    requests, errors = read_requests(path)
    assert [(r.index, r.request_id) for r in requests] == [(1, "p")]
    assert [(e.line, e.custom_id) for e in errors] == [(4, None)]


def test_lines_end_at_newline_only(tmp_path: Path) -> None:
    # U+2028, U+2029 and U+0085 are legal inside JSON strings and do not end a line.
    odd = {"custom_id": "u", "prompt": "one\u2028two\u2029three\u0085four"}
    path = tmp_path / "requests.jsonl"
    path.write_bytes(json.dumps(odd, ensure_ascii=False).encode() + b"\r\n" + json.dumps(GOOD_CHAT).encode() + b"\n")
    requests, errors = read_requests(path)
    assert errors == []
    assert [(r.request_id, r.index) for r in requests] == [("u", 0), ("a", 1)]
    assert requests[0].prompt == odd["prompt"]


def test_a_byte_order_mark_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "requests.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(GOOD_CHAT).encode() + b"\n")
    requests, errors = read_requests(path)
    assert errors == [] and [r.request_id for r in requests] == ["a"]


def test_bytes_that_are_not_utf8_fail_only_their_line(tmp_path: Path) -> None:
    path = tmp_path / "requests.jsonl"
    bad = b'{"custom_id": "x", "prompt": "caf\xe9"}'
    path.write_bytes(json.dumps(GOOD_CHAT).encode() + b"\n" + bad + b"\n" + b'{"custom_id": "z", "prompt": "ok"}\n')
    requests, errors = read_requests(path)
    assert [r.request_id for r in requests] == ["a", "z"]
    (error,) = errors
    assert error.line == 2
    assert error.message == "requests.jsonl:2: not UTF-8 (byte 0xe9 at byte 34 of the line)"


def test_an_over_long_line_is_rejected_before_it_is_parsed(tmp_path: Path) -> None:
    path = _write(tmp_path, [{"custom_id": "big", "prompt": "x" * 5000}, GOOD_CHAT])
    requests, errors = read_requests(path, max_line_bytes=1000)
    assert [r.request_id for r in requests] == ["a"]
    assert errors[0].message == "requests.jsonl:1: line is 5,034 bytes, over the limit of 1,000 (--max-line-bytes)"


@pytest.mark.parametrize("line", ["[" * 100_000, '{"custom_id": "x", "prompt": "p", "seed": 1' + "0" * 5000 + "}"])
def test_json_python_cannot_hold_is_a_line_error(tmp_path: Path, line: str) -> None:
    requests, errors = read_requests(_write(tmp_path, [line, GOOD_CHAT]))
    assert [r.request_id for r in requests] == ["a"]
    assert errors[0].line == 1 and "invalid JSON" in errors[0].message


@pytest.mark.parametrize("text", ["", "\n  \n"])
def test_an_empty_file_has_no_requests_and_no_errors(tmp_path: Path, text: str) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text(text)
    assert read_requests(path) == ([], [])


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
    assert line["response"]["request_id"] == f"seqsched-{line['id'].removeprefix('batch_req_')}", "deterministic"
    assert (body["object"], body["model"]) == ("chat.completion", "m"), "the name the request asked for"
    message = {"role": "assistant", "content": "yo"}
    assert body["choices"] == [{"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}]
    assert body["system_fingerprint"] is None
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    assert line["seqsched"] == {"predicted_len": 5, "length": 6, "num_runs": 1}

    body = result_line(Result(text, token_ids=[9], text="z"), "tiny")["response"]["body"]
    assert (body["object"], body["model"]) == ("text_completion", "tiny"), "no name asked for: the model's"
    assert body["choices"] == [{"index": 0, "text": "z", "logprobs": None, "finish_reason": "length"}]

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
