"""The Batches API on the built-in model through the vLLM CPU build, with the official
`openai` client: every output line validates as vLLM's own ``BatchRequestOutput``; a
request stopped mid-answer and continued from its token ids gives exactly the greedy
tokens of one that was not; a server killed with -9 mid-batch and restarted writes the
output an uninterrupted run writes. One vLLM for the module; CI sets
SEQSCHED_REQUIRE_VLLM=1, so a missing vLLM fails here instead of skipping."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

if os.environ.get("SEQSCHED_REQUIRE_VLLM"):
    import vllm  # noqa: F401
else:
    pytest.importorskip("vllm", reason="vLLM is optional: bash scripts/install.sh vllm")

from openai import OpenAI

from seqsched.serve.launch import LocalVLLMConfig, local_vllm
from tests.serve_helpers import killable_serve, seqsched_serve, wait_for

MODEL = str(Path(__file__).parent.parent / "seqsched" / "assets" / "default_model")
PROMPTS = ["Tell me about the sea.", "What is a robot?", "Write about bread.", "Describe the moon at night.",
           "How do trains work?", "Why do we sleep?", "Name a color.", "Explain rain to a child."]  # fmt: skip
ENDED = ("completed", "failed", "cancelled", "expired")


@pytest.fixture(scope="module")
def vllm_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("vllm") / "vllm.log"
    with local_vllm(LocalVLLMConfig(model=MODEL, dtype="float32", max_num_seqs=4, log_path=log)) as url:
        yield url


def _serve(vllm_url: str, batch_dir: Path, *extra: str) -> Any:
    return seqsched_serve("--upstream", vllm_url, "--batch-dir", str(batch_dir), "--max-inflight", "4", *extra)


def _lines(n: int, max_tokens: int = 48, **extra: Any) -> list[dict[str, Any]]:
    return [{"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
             "body": {"model": MODEL, "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)] + f" ({i})"}],
                      "max_tokens": max_tokens, "temperature": 0, **extra}}
            for i in range(n)]  # fmt: skip


def _run_batch(url: str, path: Path, timeout: float = 300) -> tuple[Any, list[dict[str, Any]], list[dict[str, Any]]]:
    client = OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)
    batch = client.batches.create(input_file_id=client.files.create(file=path.open("rb"), purpose="batch").id,
                                  endpoint="/v1/chat/completions", completion_window="24h")  # fmt: skip
    return _finish(client, batch.id, timeout)


def _finish(
    client: OpenAI, batch_id: str, timeout: float = 300
) -> tuple[Any, list[dict[str, Any]], list[dict[str, Any]]]:
    deadline = time.monotonic() + timeout
    while (batch := client.batches.retrieve(batch_id)).status not in ENDED:
        assert time.monotonic() < deadline, f"batch {batch.status} after {timeout} s"
        time.sleep(0.2)

    def lines(file_id: str | None) -> list[dict[str, Any]]:
        return [] if file_id is None else [json.loads(x) for x in client.files.content(file_id).text.splitlines()]

    return batch, lines(batch.output_file_id), lines(batch.error_file_id)


def _write(path: Path, lines: list[Any]) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def _content(line: dict[str, Any]) -> tuple[str, str, int, str]:
    body = line["response"]["body"]
    choice = body["choices"][0]
    return line["custom_id"], choice["message"]["content"], body["usage"]["completion_tokens"], choice["finish_reason"]


def test_the_openai_client_runs_a_batch_on_vllm(vllm_url: str, tmp_path: Path) -> None:
    from vllm.entrypoints.launchers.run_batch import BatchRequestOutput

    lines = [*_lines(6), "{torn", {"custom_id": "r9", "method": "POST", "url": "/v1/chat/completions",
                                   "body": {"model": MODEL, "messages": []}}]  # fmt: skip
    with _serve(vllm_url, tmp_path / "d") as url:
        batch, output, errors = _run_batch(url, _write(tmp_path / "in.jsonl", lines))
        direct = OpenAI(base_url=f"{vllm_url}/v1", api_key="none")
        reference = [direct.chat.completions.create(model=MODEL, messages=x["body"]["messages"], max_tokens=48,
                                                     temperature=0) for x in lines[:6]]  # fmt: skip
    assert batch.status == "completed" and (batch.request_counts.completed, batch.request_counts.failed) == (6, 2)
    for line in output:
        BatchRequestOutput.model_validate(line)
    assert [_content(x)[1:] for x in output] == [
        (r.choices[0].message.content, r.usage.completion_tokens, r.choices[0].finish_reason) for r in reference
    ], "each answer is vLLM's own greedy answer"
    assert [e["custom_id"] for e in errors] == [None, "r9"]  # a line with no readable custom_id has none
    BatchRequestOutput.model_validate(errors[1])


def test_answers_with_n_and_logprobs_are_vllms_own(vllm_url: str, tmp_path: Path) -> None:
    """Lines never stopped (n > 1, logprobs) answer with vLLM's own non-streamed body."""
    lines = _lines(2, 16)
    lines[0]["body"].update(n=2, temperature=0.8, seed=11)
    lines[1]["body"].update(logprobs=True, top_logprobs=2)
    with _serve(vllm_url, tmp_path / "d") as url:
        batch, output, errors = _run_batch(url, _write(tmp_path / "in.jsonl", lines))
        own = [httpx.post(f"{vllm_url}/v1/chat/completions", json=x["body"], timeout=60).json() for x in lines]
    assert batch.status == "completed" and errors == []
    for line, reference in zip(output, own, strict=True):
        body = line["response"]["body"]
        assert body["choices"] == reference["choices"] and body["usage"] == reference["usage"]
    assert [c["index"] for c in output[0]["response"]["body"]["choices"]] == [0, 1]
    assert output[1]["response"]["body"]["choices"][0]["logprobs"]["content"][0]["top_logprobs"]


def test_cancel_and_paging_on_vllm(vllm_url: str, tmp_path: Path) -> None:
    with _serve(vllm_url, tmp_path / "d") as url:
        client = OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)
        file_id = client.files.create(
            file=_write(tmp_path / "in.jsonl", _lines(40, 200)).open("rb"), purpose="batch"
        ).id
        first = client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")
        time.sleep(1.1)
        second = client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")
        assert [b.id for b in client.batches.list(limit=1)] == [second.id, first.id]
        client.batches.cancel(first.id)
        client.batches.cancel(second.id)
        for batch_id in (first.id, second.id):
            batch, output, errors = _finish(client, batch_id)
            assert batch.status == "cancelled" and len(output) + len(errors) == 40


def _stream(url: str, body: dict[str, Any], stop_after: int | None = None, progress: Any = None) -> Any:
    """A streamed call with token ids, cut after ``stop_after`` ids: what it made (``Progress``)."""
    from seqsched.serve.batches.continuation import Progress, absorb

    progress, rest = progress or Progress(), b""
    with httpx.stream("POST", url, json={**body, "stream": True, "return_token_ids": True}, timeout=60) as answer:
        for raw in answer.iter_raw():
            rest = absorb(progress, rest + raw)
            if stop_after is not None and len(progress.token_ids) >= stop_after:
                break
    return progress


@pytest.mark.parametrize("cut", [1, 7, 30])
def test_a_request_stopped_and_continued_gives_the_greedy_tokens_of_one_that_was_not(vllm_url: str, cut: int) -> None:
    from seqsched.serve.batches.continuation import Progress, absorb, next_call

    for prompt in PROMPTS[:4]:
        body = {"model": MODEL, "messages": [{"role": "user", "content": prompt}], "max_tokens": 64, "temperature": 0}
        uninterrupted = _stream(f"{vllm_url}/v1/chat/completions", body)
        whole, whole_text = uninterrupted.token_ids, "".join(uninterrupted.text)
        progress = Progress()
        path, first = next_call(body, "chat", progress)
        progress = _stream(f"{vllm_url}{path}", first, stop_after=cut, progress=progress)
        path, rest = next_call(body, "chat", progress)  # the last chunk is made again
        if progress.token_ids:
            assert path == "/v1/completions" and rest["max_tokens"] == 64 - len(progress.token_ids)
        with httpx.stream("POST", f"{vllm_url}{path}", json=rest, timeout=60) as answer:
            absorb(progress, answer.read())
        assert progress.token_ids == whole, f"{prompt!r} cut after {cut}"
        assert "".join(progress.text) == whole_text


def test_batch_requests_preempted_by_interactive_ones_answer_as_if_they_never_were(
    vllm_url: str, tmp_path: Path
) -> None:
    lines = _lines(8, 200, return_token_ids=True)
    with _serve(vllm_url, tmp_path / "d", "--max-inflight", "2") as url:
        client = OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)
        batch = client.batches.create(
            input_file_id=client.files.create(file=_write(tmp_path / "in.jsonl", lines).open("rb"), purpose="batch").id,
            endpoint="/v1/chat/completions", completion_window="24h")  # fmt: skip
        for k in range(6):
            time.sleep(0.3)
            client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": f"Hi {k}"}],
                                           max_tokens=8, temperature=0)  # fmt: skip
        batch, output, _ = _finish(client, batch.id)
        direct = OpenAI(base_url=f"{vllm_url}/v1", api_key="none")
        reference = [direct.chat.completions.create(model=MODEL, messages=x["body"]["messages"], max_tokens=200,
                                                     temperature=0) for x in lines]  # fmt: skip
        preempted = sum(x["seqsched"]["num_preemptions"] for x in output)
    assert batch.status == "completed" and preempted >= 1, "interactive requests took batch slots"
    assert [_content(x)[1:] for x in output] == [
        (r.choices[0].message.content, r.usage.completion_tokens, r.choices[0].finish_reason) for r in reference
    ]


def test_a_server_killed_mid_batch_writes_what_an_uninterrupted_one_writes(vllm_url: str, tmp_path: Path) -> None:
    inp = _write(tmp_path / "in.jsonl", _lines(24, 96))
    with seqsched_serve(
        "--upstream", vllm_url, "--batch-dir", str(tmp_path / "reference"), "--max-inflight", "4"
    ) as url:
        _, reference, _ = _run_batch(url, inp)
    with killable_serve("--upstream", vllm_url, "--batch-dir", str(tmp_path / "d"), "--max-inflight", "4") as server:
        client = OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0)
        batch = client.batches.create(input_file_id=client.files.create(file=inp.open("rb"), purpose="batch").id,
                                      endpoint="/v1/chat/completions", completion_window="24h")  # fmt: skip
        wait_for(lambda: client.batches.retrieve(batch.id).request_counts.completed >= 6, "six answers", 120)
        server.kill()
        server.start()
        done, output, errors = _finish(client, batch.id)
    assert done.status == "completed" and errors == []
    assert [_content(x) for x in output] == [_content(x) for x in reference], "nothing lost, nothing twice"
