"""The local vLLM's command line, without starting it."""

from __future__ import annotations

import sys

import pytest

from seqsched.serve import launch
from seqsched.serve.launch import LocalVLLMConfig, command


def test_the_cpu_build_is_started_as_a_module_on_loopback_with_priorities(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launch, "_has_gpu", lambda: False)
    argv = command(LocalVLLMConfig(model="m", max_num_seqs=8, dtype="float32"), 4321, official_cli=False)
    assert argv[:3] == [sys.executable, "-m", "vllm.entrypoints.launchers.api_server.entry"]
    pairs = dict(zip(argv[3::2], argv[4::2], strict=False))
    assert pairs["--model"] == "m" and pairs["--host"] == "127.0.0.1" and pairs["--port"] == "4321"
    assert pairs["--scheduling-policy"] == "priority" and pairs["--max-num-seqs"] == "8"
    assert "--enforce-eager" in argv and argv[argv.index("--kv-cache-memory-bytes") + 1] == str(1 << 30)


def test_the_official_cli_where_it_works(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launch, "_has_gpu", lambda: True)
    argv = command(LocalVLLMConfig(model="org/model", scheduling_policy="fcfs"), 1, official_cli=True)
    assert argv[:3] == ["vllm", "serve", "org/model"]
    assert argv[argv.index("--scheduling-policy") + 1] == "fcfs"
    assert "--kv-cache-memory-bytes" not in argv


def test_no_vllm_on_the_path_means_the_module(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launch.shutil, "which", lambda name: None)
    assert launch._official_cli_works() is False


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("max_num_seqs", 0, "max_num_seqs \\(0\\)"),
        ("threads", 0, "threads \\(0\\)"),
        ("startup_timeout_s", 0, "startup"),
    ],
)
def test_bad_local_settings_are_refused(field: str, value: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LocalVLLMConfig(model="m", **{field: value})  # type: ignore[arg-type]
