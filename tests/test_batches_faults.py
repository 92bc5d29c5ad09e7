"""Batches that never hang: every upstream outcome (an error status, a reset, a stream with
no finish, a malformed event, silence) retries the line, continued from what it has, or
fails it alone; hostile ``custom_id``s; answers that must be vLLM's own (``n`` > 1,
``logprobs``, tools); creation under concurrency and its limits. Against the fake upstream
that streams token ids as vLLM does (``serve_helpers.py``)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.serve_helpers import FakeUpstream, letter, running, serving
from tests.test_batches import _client, _create, _jsonl, _lines, _wait, _write


def _run(url: str, path: Path, endpoint: str = "/v1/chat/completions", timeout: float = 60) -> Any:
    client = _client(url)
    batch = _create(client, path, endpoint)
    batch = _wait(client, batch.id, timeout)
    return batch, _jsonl(client, batch.output_file_id), _jsonl(client, batch.error_file_id)


def _content(line: dict[str, Any]) -> str:
    return str(line["response"]["body"]["choices"][0]["message"]["content"])


FAULTS = ["500", "503", "429", "408", "cut", "malformed", "reset", "hang"]


@pytest.mark.parametrize("endpoint", ["/v1/chat/completions", "/v1/completions"])
def test_every_upstream_fault_is_retried_and_the_answer_is_exact(tmp_path: Path, endpoint: str) -> None:
    lines = _lines(len(FAULTS) + 2, tokens=lambda i: 9, url=endpoint)
    key = "messages" if endpoint == "/v1/chat/completions" else "prompt"
    for i, kind in enumerate(FAULTS):
        text = f"tokens 9 flaky:{kind}:{1 + i % 2} #{i}"
        if key == "messages":
            lines[i]["body"]["messages"][0]["content"] = text
        else:
            lines[i]["body"]["prompt"] = text
    inp = _write(tmp_path / "in.jsonl", lines)
    fake = FakeUpstream(seconds_per_token=0.002)
    with serving(fake, max_inflight=4, batch_dir=tmp_path / "d", upstream_timeout_s=1.0) as url:
        batch, output, errors = _run(url, inp, endpoint)
        metrics = httpx.get(f"{url}/metrics").text
    assert batch.status == "completed" and errors == []
    assert [x["custom_id"] for x in output] == [f"r{i}" for i in range(len(lines))], "every line once, in order"
    want = "".join(letter(k) for k in range(9))
    for i, line in enumerate(output):
        choice = line["response"]["body"]["choices"][0]
        assert (choice["message"]["content"] if key == "messages" else choice["text"]) == want, line["custom_id"]
        assert line["response"]["body"]["usage"]["completion_tokens"] == 9
        assert line["seqsched"]["num_faults"] == (1 + i % 2 if i < len(FAULTS) else 0), line["custom_id"]
    for kind in ("status", "transport", "timeout", "unfinished", "malformed"):
        assert f'seqsched_batch_retries_total{{kind="{kind}"}}' in metrics


def test_a_line_that_keeps_failing_goes_to_the_error_file_after_three_retries(tmp_path: Path) -> None:
    lines = _lines(4)
    lines[1]["body"]["messages"][0]["content"] = "tokens 5 flaky:500:99"
    lines[2]["body"]["messages"][0]["content"] = "tokens 5 flaky:cut:99"
    inp = _write(tmp_path / "in.jsonl", lines)
    fake = FakeUpstream(seconds_per_token=0.001)
    with serving(fake, batch_dir=tmp_path / "d") as url:
        batch, output, errors = _run(url, inp)
    assert batch.status == "completed"
    assert (batch.request_counts.completed, batch.request_counts.failed) == (2, 2)
    assert [x["custom_id"] for x in output] == ["r0", "r3"]
    assert [x["custom_id"] for x in errors] == ["r1", "r2"]
    for line in errors:
        assert line["response"]["status_code"] == 502
        assert "failed 4 times" in line["response"]["body"]["error"]["message"]
    assert "answered 500" in errors[0]["response"]["body"]["error"]["message"]
    assert "ended the stream before the answer did" in errors[1]["response"]["body"]["error"]["message"]
    assert fake.attempts["tokens 5 flaky:500:99"] == 4, "the first call and three retries"


def test_an_upstream_that_is_gone_fails_the_lines_it_cannot_answer_without_hanging(tmp_path: Path) -> None:
    inp = _write(tmp_path / "in.jsonl", _lines(3))
    with running(FakeUpstream().app()) as dead:
        pass  # a port where nothing listens now
    with serving(dead, batch_dir=tmp_path / "d") as url:
        batch, output, errors = _run(url, inp, timeout=60)
    assert batch.status == "completed" and output == []
    assert [x["response"]["status_code"] for x in errors] == [502, 502, 502]


def test_hostile_custom_ids_go_to_the_error_file_and_the_batch_can_be_cancelled(tmp_path: Path) -> None:
    good = _lines(3, tokens=lambda i: 400)
    raw = json.dumps(good[1]).replace('"custom_id": "r1"', '"custom_id": "\\ud800"')
    long = {**good[2], "custom_id": "x" * 5000}
    inp = _write(tmp_path / "in.jsonl", [good[0], raw, long])
    with serving(FakeUpstream(seconds_per_token=0.01), batch_dir=tmp_path / "d") as url:
        client = _client(url)
        batch = _create(client, inp)
        time.sleep(0.5)
        client.batches.cancel(batch.id)
        batch = _wait(client, batch.id, 20)
        errors = _jsonl(client, batch.error_file_id)
    assert batch.status == "cancelled"
    assert batch.request_counts.total == 3 and batch.request_counts.failed == 3
    messages = {e["error"]["message"].split(":")[0]: e["error"]["message"] for e in errors}
    assert "lone surrogate" in messages["line 2"] and "5,000 characters" in messages["line 3"]
    assert [e["custom_id"] for e in errors] == ["r0", None, None]


def test_answers_that_cannot_be_rebuilt_from_a_stream_are_the_upstreams_own(tmp_path: Path) -> None:
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    extra = [{"n": 3}, {"logprobs": True, "top_logprobs": 2}, {"tools": tools}, {"stop": ["zz"]}]
    lines = _lines(len(extra))
    for line, fields in zip(lines, extra, strict=True):
        line["body"].update(fields)
    inp = _write(tmp_path / "in.jsonl", lines)
    fake = FakeUpstream(seconds_per_token=0.001)
    with serving(fake, batch_dir=tmp_path / "d") as url:
        batch, output, errors = _run(url, inp)
        with running(fake.app()) as direct:
            own = [httpx.post(f"{direct}/v1/chat/completions", json=x["body"]).json() for x in lines]
    assert batch.status == "completed" and errors == []
    assert [x["response"]["body"] for x in output] == own
    assert [len(x["response"]["body"]["choices"]) for x in output] == [3, 1, 1, 1]
    assert [c["index"] for c in output[0]["response"]["body"]["choices"]] == [0, 1, 2]
    assert output[1]["response"]["body"]["choices"][0]["logprobs"]["content"]
    message = output[2]["response"]["body"]["choices"][0]["message"]
    assert message["tool_calls"][0]["function"]["name"] == "lookup" and message["reasoning_content"]


def test_concurrent_creates_never_pass_the_active_limit(tmp_path: Path) -> None:
    inp = _write(tmp_path / "in.jsonl", _lines(2, tokens=lambda i: 300))
    with serving(FakeUpstream(seconds_per_token=0.01), batch_dir=tmp_path / "d", batch_limits=_limits(2)) as url:
        file_id = _client(url).files.create(file=inp.open("rb"), purpose="batch").id
        statuses: list[int] = []

        def create() -> None:
            body = {"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"}
            statuses.append(httpx.post(f"{url}/v1/batches", json=body, timeout=30).status_code)

        threads = [threading.Thread(target=create) for _ in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sorted(statuses) == [200] * 2 + [429] * 18


def _limits(active: int) -> Any:
    from seqsched.serve.config import BatchLimits

    return BatchLimits(max_active_batches=active)


def test_batch_creation_obeys_the_body_limits_and_openais_metadata_rules(tmp_path: Path) -> None:
    inp = _write(tmp_path / "in.jsonl", _lines(1))
    with serving(FakeUpstream(), batch_dir=tmp_path / "d", max_request_bytes=4096, body_timeout_s=1.0) as url:
        file_id = _client(url).files.create(file=inp.open("rb"), purpose="batch").id
        body = {"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"}
        big = httpx.post(f"{url}/v1/batches", json={**body, "metadata": {"k": "v" * 10_000}})
        long_value = httpx.post(f"{url}/v1/batches", json={**body, "metadata": {"k": "v" * 513}})
        long_key = httpx.post(f"{url}/v1/batches", json={**body, "metadata": {"k" * 65: "v"}})
        many = httpx.post(f"{url}/v1/batches", json={**body, "metadata": {f"k{i}": "v" for i in range(17)}})
        slow = _trickle(url, "/v1/batches", b'{"input_file_id": "' + b"x" * 40 + b'"}', "application/json")
        ok = httpx.post(f"{url}/v1/batches", json={**body, "metadata": {"k" * 64: "v" * 512}})
    assert big.status_code == 413 and "4096" in big.json()["error"]["message"]
    assert long_value.status_code == 400 and "513 characters" in long_value.json()["error"]["message"]
    assert long_key.status_code == 400 and "65 characters" in long_key.json()["error"]["message"]
    assert many.status_code == 400 and "17 pairs" in many.json()["error"]["message"]
    assert slow.status_code == 408
    assert ok.status_code == 200


def _trickle(url: str, path: str, body: bytes, kind: str) -> httpx.Response:
    """``body``'s first bytes, then a pause past the body timeout, then the rest (a slow client)."""

    def chunks() -> Any:
        yield body[:4]
        time.sleep(2.5)  # past the server's 1 s
        yield body[4:]

    return httpx.post(f"{url}{path}", content=chunks(), headers={"content-type": kind}, timeout=30)


def test_uploads_obey_the_body_timeout_and_name_their_limits(tmp_path: Path) -> None:
    from seqsched.serve.config import BatchLimits

    boundary = "b0undary"
    form = (f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.jsonl"\r\n\r\n'
            + "x" * 200 + f"\r\n--{boundary}--\r\n").encode()  # fmt: skip
    limits = BatchLimits(max_file_bytes=1000)
    with serving(FakeUpstream(), batch_dir=tmp_path / "d", body_timeout_s=1.0, batch_limits=limits) as url:
        slow = _trickle(url, "/v1/files", form, f"multipart/form-data; boundary={boundary}")
        huge = b"y" * (200 << 10)
        chunked = httpx.post(f"{url}/v1/files", content=iter([form[:150], huge, form[150:]]),
                             headers={"content-type": f"multipart/form-data; boundary={boundary}"})  # fmt: skip
        named = [httpx.post(f"{url}/v1/files", files={"file": ("n" * size + ".jsonl", b"{}\n")},
                            data={"purpose": "batch"}) for size in (300, 5000)]  # fmt: skip
        files = httpx.get(f"{url}/v1/files").json()["data"]
    assert slow.status_code == 408 and "--body-timeout" in slow.json()["error"]["message"]
    assert chunked.status_code == 413 and "limit of 1,000 bytes" in chunked.json()["error"]["message"]
    assert [r.status_code for r in named] == [400, 400]
    assert "the filename is 306 characters, over the limit of 255" in named[0].json()["error"]["message"]
    assert "filename, which may be at most 255 characters" in named[1].json()["error"]["message"]
    assert files == []
    assert not any((tmp_path / "d" / "files").iterdir()), "nothing left behind"


def test_blank_lines_do_not_count_and_an_empty_file_fails_the_batch(tmp_path: Path) -> None:
    from seqsched.serve.config import BatchLimits

    lines = _lines(3)
    inp = _write(tmp_path / "in.jsonl", [lines[0], "", "   ", lines[1], "", lines[2], ""])
    empty = _write(tmp_path / "empty.jsonl", ["", "  "])
    with serving(FakeUpstream(seconds_per_token=0.001), batch_dir=tmp_path / "d",
                 batch_limits=BatchLimits(max_batch_lines=3)) as url:  # fmt: skip
        client = _client(url)
        created = _create(client, inp)
        batch = _wait(client, created.id)
        nothing = _create(client, empty)
        nothing = _wait(client, nothing.id)
    assert created.request_counts.total == 3
    assert batch.status == "completed" and batch.request_counts.completed == 3
    assert nothing.status == "failed" and nothing.errors.data[0].code == "empty_file"


def test_a_bug_while_recording_an_outcome_fails_the_batch_loudly_and_keeps_what_finished(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import seqsched.serve.batches.runner as runner

    real = runner.digest

    def broken(*parts: str) -> str:
        if parts[-1] == "r1":
            raise RuntimeError("injected")
        return real(*parts)

    monkeypatch.setattr(runner, "digest", broken)
    inp = _write(tmp_path / "in.jsonl", _lines(3, tokens=lambda i: [3, 20, 400][i]))
    with serving(FakeUpstream(seconds_per_token=0.01), batch_dir=tmp_path / "d") as url:
        batch, output, errors = _run(url, inp, timeout=30)
    assert batch.status == "failed" and batch.errors.data[0].code == "server_error"
    assert "RuntimeError: injected" in batch.errors.data[0].message
    assert [x["custom_id"] for x in output] == ["r0"]
    assert [(x["custom_id"], x["error"]["code"]) for x in errors] == [("r1", "batch_failed"), ("r2", "batch_failed")]


def test_a_stream_that_never_ends_is_cut_at_max_tokens_and_retried_from_the_start(tmp_path: Path) -> None:
    lines = _lines(2, tokens=lambda i: 6)
    lines[0]["body"].update(max_tokens=20)
    lines[0]["body"]["messages"][0]["content"] = "tokens 6 flaky:endless:1"
    lines[1]["body"]["messages"][0]["content"] = "tokens 6 flaky:endless:99"  # no max_tokens: ...
    lines[1]["body"].update(max_tokens=10)  # ... with one, every call is cut: the line fails, bounded
    inp = _write(tmp_path / "in.jsonl", lines)
    with serving(FakeUpstream(seconds_per_token=0.001), batch_dir=tmp_path / "d") as url:
        batch, output, errors = _run(url, inp, timeout=60)
    assert batch.status == "completed"
    assert [x["custom_id"] for x in output] == ["r0"] and _content(output[0]) == "abcdef"
    assert output[0]["seqsched"]["num_faults"] == 1
    assert [x["custom_id"] for x in errors] == ["r1"]
    assert "streamed past max_tokens (10)" in errors[0]["response"]["body"]["error"]["message"]
