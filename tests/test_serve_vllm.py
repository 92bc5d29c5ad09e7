"""`seqsched serve --model M` on the built-in model through the vLLM CPU build, with the
official `openai` client. One server for the whole module (vLLM takes a minute or two to
start on a CPU). CI sets SEQSCHED_REQUIRE_VLLM=1, so a missing vLLM fails here instead of
skipping."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

if os.environ.get("SEQSCHED_REQUIRE_VLLM"):
    import vllm  # noqa: F401
else:
    pytest.importorskip("vllm", reason="vLLM is optional: bash scripts/install.sh vllm")

from openai import BadRequestError, OpenAI

from seqsched.serve.app import build_app
from seqsched.serve.config import ServeConfig
from tests.serve_helpers import free_port, running

MODEL = str(Path(__file__).parent.parent / "seqsched" / "assets" / "default_model")


class Served:
    def __init__(self, url: str, vllm_url: str, trace: Path, pid: int) -> None:
        self.url, self.vllm_url, self.trace, self.pid = url, vllm_url, trace, pid
        self.client = OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)
        self.direct = OpenAI(base_url=f"{vllm_url}/v1", api_key="none", max_retries=0)
        self.model = self.client.models.list().data[0].id


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("serve")
    port, log = free_port(), tmp / "serve.log"
    command = [
        sys.executable, "-m", "seqsched", "serve", "--model", MODEL, "--port", str(port), "--dtype", "float32",
        "--max-num-seqs", "4", "--trace", str(tmp / "served.jsonl"), "--vllm-log", str(tmp / "vllm.log"),
    ]  # fmt: skip
    with log.open("w") as out:
        process = subprocess.Popen(command, stderr=out, stdout=out)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 900
        while not _healthy(url):
            assert process.poll() is None, f"seqsched serve exited {process.returncode}: {log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, "seqsched serve was not healthy in 900 s"
            time.sleep(1)
        vllm_url = re.search(r"starting vLLM on (http://\S+)", log.read_text())
        assert vllm_url is not None
        yield Served(url, vllm_url.group(1), tmp / "served.jsonl", process.pid)
    finally:
        process.terminate()
        code = process.wait(60)
    assert code == 0, "seqsched serve exits 0 after a SIGTERM"
    assert vllm_url is not None and not _healthy(vllm_url.group(1)), "the local vLLM stopped with seqsched"


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _chat(client: OpenAI, model: str, content: str, **options: Any) -> Any:
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": content}], **options)


def test_chat_answers_as_vllm_itself_does(served: Served) -> None:
    prompt = "Give three tips for staying healthy."
    ours = _chat(served.client, served.model, prompt, max_tokens=48, temperature=0)
    theirs = _chat(served.direct, served.model, prompt, max_tokens=48, temperature=0)
    assert ours.choices[0].message.content == theirs.choices[0].message.content
    assert ours.usage.completion_tokens == theirs.usage.completion_tokens


def test_a_stream_carries_the_same_text_as_the_answer(served: Served) -> None:
    prompt = "Once upon a time"
    whole = served.client.completions.create(model=served.model, prompt=prompt, max_tokens=24, temperature=0)
    parts = served.client.completions.create(
        model=served.model, prompt=prompt, max_tokens=24, temperature=0, stream=True
    )
    assert "".join(p.choices[0].text for p in parts if p.choices) == whole.choices[0].text
    chat = _chat(served.client, served.model, "Name a color.", max_tokens=16, temperature=0, stream=True)
    streamed = "".join(c.choices[0].delta.content or "" for c in chat if c.choices)
    answer = _chat(served.client, served.model, "Name a color.", max_tokens=16, temperature=0)
    assert streamed == answer.choices[0].message.content


def test_stop_and_max_tokens(served: Served) -> None:
    short = _chat(served.client, served.model, "Write a long story about a dragon.", max_tokens=3, temperature=0)
    assert short.usage.completion_tokens == 3 and short.choices[0].finish_reason == "length"
    stopped = served.client.completions.create(
        model=served.model, prompt="Once upon a time", max_tokens=64, temperature=0, stop=[" the"]
    )
    assert " the" not in stopped.choices[0].text and stopped.choices[0].finish_reason == "stop"


def test_errors_come_back_in_openais_shape(served: Served) -> None:
    with pytest.raises(BadRequestError, match="'messages' must be a non-empty list"):
        served.client.chat.completions.create(model=served.model, messages=[])
    with pytest.raises(BadRequestError) as too_long:  # vLLM's own refusal passes through
        _chat(served.client, served.model, "hi", max_tokens=100_000)
    assert too_long.value.status_code == 400


def test_with_one_slot_a_burst_finishes_in_predicted_order(served: Served, tmp_path: Path) -> None:
    """A second seqsched in front of the same vLLM, one slot, its predictor a lookup. With
    vLLM paused, a first request takes the slot and five more wait in seqsched's queue
    (so none can finish before the rest arrive, however fast or loaded this machine);
    resumed, with one slot, the order the trace records answers in is the order they were
    sent in."""
    predicted = {f"Say {w}.": n for w, n in [("yes", 40), ("no", 10), ("maybe", 30), ("ok", 20), ("fine", 50)]}
    trace = tmp_path / "order.jsonl"
    config = ServeConfig(upstreams=(served.vllm_url,), max_inflight=1, policy="sjf", trace_path=trace)
    app = build_app(config, lambda text, _: predicted.get(text, 1000))
    with running(app) as url:
        client = OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)

        def ask(prompt: str) -> None:
            _chat(client, served.model, prompt, max_tokens=8, temperature=0, extra_body={"ignore_eos": True})

        holder = threading.Thread(target=ask, args=("Hold the slot.",))
        threads = [threading.Thread(target=ask, args=(p,)) for p in predicted]
        with _paused(served.pid):
            holder.start()
            _wait_for(lambda: _metric(url, "seqsched_inflight") == 1, "the first request never took the slot")
            for t in threads:
                t.start()
            _wait_for(lambda: _metric(url, "seqsched_queue_length") == len(predicted), "the five never all waited")
        for t in [holder, *threads]:
            t.join(120)
    import json

    answered = [json.loads(line)["instruction"] for line in trace.read_text().splitlines()]
    assert answered == ["Hold the slot.", *sorted(predicted, key=predicted.__getitem__)]


def _wait_for(condition: Callable[[], bool], failure: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, failure
        time.sleep(0.02)


def _metric(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


@contextlib.contextmanager
def _paused(pid: int) -> Iterator[None]:
    """The processes seqsched serve started (its vLLM) stopped, then resumed."""
    import psutil

    children = psutil.Process(pid).children(recursive=True)
    for child in children:
        child.suspend()
    try:
        yield
    finally:
        for child in children:
            child.resume()


def test_a_client_that_leaves_mid_stream_is_aborted_in_vllm(served: Served) -> None:
    stream = served.client.chat.completions.create(
        model=served.model, messages=[{"role": "user", "content": "Tell me everything."}], max_tokens=900,
        temperature=0, stream=True, extra_body={"ignore_eos": True},
    )  # fmt: skip
    next(iter(stream))
    stream.close()
    deadline = time.monotonic() + 10
    while _metric(served.vllm_url, "vllm:num_requests_running") > 0:
        assert time.monotonic() < deadline, "vLLM kept generating for a client that left"
        time.sleep(0.2)


def test_served_traffic_is_a_trace_the_predictor_trains_on(served: Served, tmp_path: Path) -> None:
    for i in range(12):
        _chat(served.client, served.model, f"Give me {i + 1} reasons to read.", max_tokens=32, temperature=0)
    from seqsched.cli import main

    assert main(["predictor", "train", "--kind", "proxy", "--trace", str(served.trace), "--target", "L_served",
                 "--limit", "32", "-o", str(tmp_path / "p")]) == 0  # fmt: skip
    assert (tmp_path / "p" / "predictor.json").exists()
