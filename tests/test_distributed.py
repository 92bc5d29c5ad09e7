"""Scale-out on Ray: replicas of the tiny model give what one process gives."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

import seqsched
from seqsched.config import RayConfig
from tests.tiny_model import prompts

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _requests(path: Path, n: int = 12) -> Path:
    lines = [{"custom_id": f"q{i}", "prompt": p, "max_tokens": 8 + 4 * (i % 3)} for i, p in enumerate(prompts(n, 5))]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_replicas_answer_as_one_process_does(local_ray: None, tiny_model_dir: Path, tmp_path: Path) -> None:
    inp = _requests(tmp_path / "requests.jsonl")
    lengths = tmp_path / "lengths.jsonl"  # oracle lengths that under-predict: FCR re-runs happen on the replicas
    lengths.write_text("".join(json.dumps({"id": f"q{i}", "length": 1 + i % 4}) + "\n" for i in range(12)))
    common = {"model": tiny_model_dir, "oracle_lengths": lengths, "batch_size": 2, "group_size": 4, "fcr": True}
    common["vbs"] = "off"  # fixed batches of 2, so the under-predicted lengths cap them
    local = seqsched.run(inp, tmp_path / "local.jsonl", device="cpu", num_threads=1, **common)
    spread = seqsched.run(
        inp, tmp_path / "ray.jsonl", device="cpu", num_threads=1, ray=RayConfig(num_workers=2), **common
    )
    a, b = _lines(tmp_path / "local.jsonl"), _lines(tmp_path / "ray.jsonl")
    assert [x["custom_id"] for x in b] == [f"q{i}" for i in range(12)]
    assert [x["response"]["body"]["choices"] for x in a] == [x["response"]["body"]["choices"] for x in b]
    assert [x["seqsched"] for x in a] == [x["seqsched"] for x in b]
    assert spread.metrics.failure_ratio == local.metrics.failure_ratio > 0
    assert spread.metrics.effective_token_ratio == local.metrics.effective_token_ratio
    assert not (tmp_path / "ray.jsonl.partial").exists()


def test_a_bad_model_path_is_named(local_ray: None, tmp_path: Path) -> None:
    with pytest.raises(OSError, match="no-such-model' does not exist"):  # before any replica starts
        seqsched.run(
            _requests(tmp_path / "r.jsonl", 2), tmp_path / "o.jsonl", model=tmp_path / "no-such-model", ray=RayConfig(2)
        )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_workers": 0}, "num_workers (0) must be >= 1"),
        ({"num_cpus": 0}, "num_cpus (0) must be > 0"),
        ({"num_gpus": -1}, "num_gpus (-1) must be >= 0"),
    ],
)
def test_bad_ray_config_is_rejected_with_the_value(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        RayConfig(**kwargs)


def test_a_killed_replica_loses_nothing(local_ray: None, tiny_model_dir: Path, tmp_path: Path) -> None:
    import psutil

    from seqsched.config import RunConfig
    from seqsched.data.batch_io import read_requests
    from seqsched.distributed import run_on_ray
    from seqsched.engine.config import EngineConfig
    from seqsched.schedule import ScheduleConfig

    inp = _requests(tmp_path / "requests.jsonl", 24)
    engine = EngineConfig(str(tiny_model_dir), device="cpu", num_threads=1)
    config = RunConfig(inp, tmp_path / "o.jsonl", engine, schedule=ScheduleConfig(batch_size=2, group_size=2))
    requests, _ = read_requests(inp)
    killed: list[int] = []

    def kill_a_replica(result: object) -> None:
        if killed:
            return
        for process in psutil.process_iter(["pid", "cmdline"]):
            if any("ray::Replica" in part for part in process.info["cmdline"] or []):
                process.kill()
                killed.append(process.info["pid"])
                return

    answers: list[str] = []
    report = run_on_ray(
        config, RayConfig(2), requests, on_result=lambda r: (answers.append(r.request.request_id), kill_a_replica(r))
    )
    assert killed, "a replica process should have been found and killed"
    assert report.num_replica_retries >= 1
    assert sorted(answers) == sorted(r.request_id for r in requests), "every answer once: none lost, none twice"
    local = seqsched.run(inp, tmp_path / "local.jsonl", model=tiny_model_dir, device="cpu", batch_size=2)
    assert local.num_lines == 24
    by_id = {x["custom_id"]: x["response"]["body"]["choices"][0]["text"] for x in _lines(tmp_path / "local.jsonl")}
    assert {r.request.request_id: r.text for r in report.results} == by_id


def test_replicas_that_cannot_be_placed_are_refused_at_once(local_ray: None, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="4 replicas x 1 CPU = 4 CPUs, but the Ray cluster has 2"):
        seqsched.run(_requests(tmp_path / "r.jsonl", 2), tmp_path / "o.jsonl", ray=RayConfig(4))
