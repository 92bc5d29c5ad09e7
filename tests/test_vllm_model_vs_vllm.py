"""The scheduler model (simulate/vllm_model.py) against vLLM itself: the same requests,
and every step's shape (requests, tokens, contexts) read from vLLM's own scheduler must
match the model's, with chunked prefill under a small token budget and with a KV cache
small enough to preempt (recompute, prefix-cache hits on the victim's blocks)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

if os.environ.get("SEQSCHED_REQUIRE_VLLM"):
    import vllm  # noqa: F401 - CI: vLLM must be there
else:
    pytest.importorskip("vllm", reason="vLLM is optional: bash scripts/install.sh vllm")

from seqsched.engine.config import EngineConfig, VLLMConfig
from seqsched.engine.vllm_engine import VLLMEngine
from seqsched.simulate.calibrate_vllm import StepRecorder
from seqsched.simulate.step_cost import ContinuousCost, StepShape
from seqsched.simulate.vllm_model import SchedulerLimits, SchedulerModel, SimRequest
from tests.tiny_model import save_tiny_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny-vllm-model"), seed=0, num_heads=2)


def _vllm_shapes(engine: VLLMEngine, specs: list[tuple[int, int, int]], seed: int) -> tuple[list[StepShape], int]:
    from vllm import SamplingParams

    recorder = StepRecorder(engine.engine)
    before = engine._preemptions()
    rng = random.Random(seed)
    vocab = int(engine.engine.vllm_config.model_config.get_vocab_size())
    for i, (prompt, output, priority) in enumerate(specs):
        tokens = [rng.randrange(10, vocab) for _ in range(prompt)]
        params = SamplingParams(max_tokens=output, ignore_eos=True, detokenize=False)
        engine.engine.add_request(f"{seed}-{i}", {"prompt_token_ids": tokens}, params, priority=priority)
    while engine.engine.has_unfinished_requests():
        engine.engine.step()
    engine.llm.reset_prefix_cache()
    return [s for s in recorder.shapes if s.tokens > 0], engine._preemptions() - before


def _model_shapes(
    engine: VLLMEngine, specs: list[tuple[int, int, int]], blocks: int | None
) -> tuple[list[StepShape], int]:
    sc = engine.engine.vllm_config.scheduler_config
    limits = SchedulerLimits(sc.max_num_seqs, sc.max_num_batched_tokens, blocks, engine.block_size, "priority")
    model = SchedulerModel(limits, ContinuousCost(a=1.0, t=0.0))
    for i, (prompt, output, priority) in enumerate(specs):
        model.add(SimRequest(i, prompt, output, priority=priority, arrival=i))
    shapes = []
    while model.has_unfinished():
        shapes.append(model.step().shape)
    return shapes, model.num_preemptions


def _specs(seed: int, n: int = 14) -> list[tuple[int, int, int]]:
    rng = random.Random(seed)
    ranks = list(range(n))
    rng.shuffle(ranks)
    return [(rng.randint(5, 100), rng.randint(1, 80), ranks[i]) for i in range(n)]


@pytest.mark.parametrize("num_blocks", [None, 8, 12])
def test_every_step_matches_vllm(model_dir: Path, num_blocks: int | None) -> None:
    config = EngineConfig(model=str(model_dir), dtype="float32", num_threads=1)
    engine = VLLMEngine(config, VLLMConfig(max_num_seqs=4, max_num_batched_tokens=64, num_gpu_blocks=num_blocks,
                                           block_size=32, max_model_len=180, kv_cache_gib=0.02))  # fmt: skip
    try:
        for seed in (0, 1):
            specs = _specs(seed)
            want, want_preemptions = _vllm_shapes(engine, specs, seed)
            got, preemptions = _model_shapes(engine, specs, num_blocks)
            assert got == want
            assert preemptions == want_preemptions
            if num_blocks == 8:
                assert preemptions > 0  # the case is KV-bound indeed
    finally:
        del engine


def test_calibrate_fits_vllms_steps_from_a_trace(model_dir: Path, tmp_path: Path) -> None:
    import json

    from seqsched.cli import main

    trace = tmp_path / "trace.jsonl"
    trace.write_text("".join(json.dumps({"id": f"r{i}", "instruction": f"say {i} things", "L_t0.0": 3 + i % 9}) + "\n"
                             for i in range(24)))  # fmt: skip
    out = tmp_path / "cost.json"
    argv = ["calibrate", "--engine", "vllm", "--model", str(model_dir), "--trace", str(trace), "--batch-sizes", "2,8",
            "--threads", "1", "--dtype", "float32", "-o", str(out), "--force"]  # fmt: skip
    assert main(argv) == 0
    data = json.loads(out.read_text())
    assert data["kind"] == "vllm-step" and data["a"] + data["t"] + data["s"] > 0
    prov = data["provenance"]
    assert prov["source"] == "seqsched calibrate --engine vllm" and prov["grid"]["concurrency"] == [2, 8]
    assert prov["max_num_seqs"] == 8 and prov["num_steps_timed"] > 20 and abs(prov["fit_total_rel_error"]) < 1e-6
    # the HF engine has no trace mode: refused before any model loads
    assert main(["calibrate", "--trace", str(trace), "-o", str(tmp_path / "x.json")]) == 2
