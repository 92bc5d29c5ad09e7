"""Scale-out on Ray: replicas of the tiny model give what one process gives."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

import seqsched
from seqsched.distributed import RayConfig
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
    with pytest.raises(FileNotFoundError, match="no-such-model"):
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
