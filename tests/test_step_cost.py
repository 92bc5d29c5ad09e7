"""The continuous step cost: its fit, its files, and the shapes read from vLLM's output."""

from __future__ import annotations

import json
import random
from pathlib import Path
from types import SimpleNamespace

import pytest

from seqsched.simulate.calibrate_vllm import fit, pooled, shape_of
from seqsched.simulate.cost_model import BUILTIN as STATIC_BUILTIN
from seqsched.simulate.cost_model import StepCostModel
from seqsched.simulate.step_cost import BUILTIN, ContinuousCost, StepShape, TimedStep, is_step_cost, load_step_cost

TRUE = ContinuousCost(a=2e-3, t=50e-6, s=70e-6, c=0.4e-6, p=30e-9)


def _steps(n: int = 300, noise: float = 0.0, seed: int = 0) -> list[TimedStep]:
    rng = random.Random(seed)
    steps = []
    for _ in range(n):
        seqs = rng.randint(1, 64)
        prefill = rng.random() < 0.3
        tokens = seqs + (rng.randint(1, 500) if prefill else 0)
        shape = StepShape(seqs, tokens, rng.randint(seqs, seqs * 600), rng.randint(1, 80_000) if prefill else 0)
        steps.append(TimedStep(shape, TRUE.of(shape) * (1 + rng.uniform(-noise, noise))))
    return steps


def test_the_fit_recovers_a_known_cost() -> None:
    got = ContinuousCost.fit(_steps())
    for name in "atscp":
        assert getattr(got, name) == pytest.approx(getattr(TRUE, name), rel=1e-6)


def test_a_noisy_fit_keeps_the_total_and_reports_its_error() -> None:
    steps = _steps(noise=0.2, seed=1)
    cost = fit(steps, {"source": "test"})
    total = sum(cost.of(s.shape) for s in steps) / sum(s.seconds for s in steps) - 1
    assert abs(total) < 0.01 and abs(cost.provenance["fit_total_rel_error"] - total) < 1e-9
    assert 0 < cost.provenance["fit_median_rel_error"] < 0.2
    assert cost.provenance["num_steps_timed"] == len(steps) >= cost.provenance["num_shapes"]


def test_pooling_takes_the_median_of_each_shape() -> None:
    shape = StepShape(2, 2, 10)
    assert pooled([TimedStep(shape, 1.0), TimedStep(shape, 3.0), TimedStep(shape, 2.5)]) == [TimedStep(shape, 2.5)]


def test_saved_and_loaded_it_is_the_same(tmp_path: Path) -> None:
    path = tmp_path / "cost.json"
    ContinuousCost(1e-3, 2e-5, provenance={"source": "here"}).save(path)
    assert is_step_cost(path) and json.loads(path.read_text())["kind"] == "vllm-step"
    loaded = load_step_cost(path)
    assert (loaded.a, loaded.t) == (1e-3, 2e-5) and loaded.provenance["source"] == "here"


def test_a_static_cost_model_is_read_as_a_step_cost(tmp_path: Path) -> None:
    static = StepCostModel(a=3e-3, b=2e-4, c=2e-6, d=4e-3, e=1e-4, f=2e-7)
    path = tmp_path / "static.json"
    static.save(path)
    for loaded in (load_step_cost(path), ContinuousCost.from_static(static)):
        assert not is_step_cost(path)
        # one decode row costs what it did in the static model
        assert loaded.seconds(1, 1, 100) == pytest.approx(static.step_seconds(1, 100))
    assert load_step_cost("cpu-default-model").a == STATIC_BUILTIN["cpu-default-model"].a


def test_the_gpu_builtin_names_its_published_source() -> None:
    cost = load_step_cost(None)
    assert cost is BUILTIN["a100-vllm-llama-8b"] and is_step_cost("a100-vllm-llama-8b")
    assert "johnmusgrave.com" in cost.provenance["source"] and "LambdaLabsML" in cost.provenance["source"]
    # the figures it was solved from: one decode at context 1.1k ~13.3 ms, eight ~16.2 ms
    assert cost.seconds(1, 1, 1100) == pytest.approx(13.3e-3, rel=0.03)
    assert cost.seconds(8, 8, 8 * 1100) == pytest.approx(16.2e-3, rel=0.03)


def test_bad_costs_and_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="parameter c"):
        ContinuousCost(a=1e-3, t=0, c=-1)
    with pytest.raises(ValueError, match="positive"):
        ContinuousCost(a=0, t=0)
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_step_cost(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="invalid JSON"):
        load_step_cost(bad)
    bad.write_text(json.dumps({"kind": "vllm-step", "a": 1e-3}))
    with pytest.raises(ValueError, match="missing t"):
        load_step_cost(bad)
    with pytest.raises(ValueError, match="at least 5"):
        ContinuousCost.fit(_steps(3))


def test_a_step_shape_is_read_from_vllms_scheduler_output() -> None:
    output = SimpleNamespace(
        scheduled_new_reqs=[SimpleNamespace(req_id="new", num_computed_tokens=0)],
        scheduled_cached_reqs=SimpleNamespace(req_ids=["dec", "chunk"], num_computed_tokens=[40, 64]),
        num_scheduled_tokens={"new": 30, "dec": 1, "chunk": 16},
        total_num_scheduled_tokens=47,
    )
    assert shape_of(output) == StepShape(seqs=3, tokens=47, decode_context=41,
                                         prefill_attention=30 * 30 + 16 * 80)  # fmt: skip
