from __future__ import annotations

from pathlib import Path

import pytest

from seqsched.engine.random_model import Shape, make_random_model


def test_random_model_loads_and_generates(tmp_path: Path, tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    shape = Shape(32, 64, 1, 2, 512, 128)
    n = make_random_model(shape, tiny_model_dir, tmp_path / "m")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    assert n == sum(p.numel() for p in model.parameters())
    assert model.config.hidden_size == 32 and model.config.num_hidden_layers == 1


def test_bad_shapes_are_named(tmp_path: Path, tiny_model_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"hidden_size \(30\) must be a multiple of num_attention_heads \(4\)"):
        Shape(30, 64, 1, 4, 512, 128)
    with pytest.raises(ValueError, match=r"shape \('huge'\) must be one of"):
        make_random_model("huge", tiny_model_dir, tmp_path / "m")
    with pytest.raises(ValueError, match="vocab_size is 100"):
        make_random_model(Shape(32, 64, 1, 2, 100, 128), tiny_model_dir, tmp_path / "m")


def test_dtype_size_and_no_silent_replace(tmp_path: Path, tiny_model_dir: Path) -> None:
    from safetensors import safe_open

    shape = Shape(32, 64, 1, 2, 512, 128)
    n = make_random_model(shape, tiny_model_dir, tmp_path / "m", dtype="bfloat16")
    assert n == shape.num_parameters()
    with safe_open(str(tmp_path / "m" / "model.safetensors"), "pt") as f:
        assert {str(f.get_tensor(k).dtype) for k in f.keys()} == {"torch.bfloat16"}  # noqa: SIM118 (a safetensors handle)
    before = (tmp_path / "m" / "model.safetensors").read_bytes()
    with pytest.raises(FileExistsError, match="--overwrite"):
        make_random_model(shape, tiny_model_dir, tmp_path / "m", seed=1)
    assert (tmp_path / "m" / "model.safetensors").read_bytes() == before
    make_random_model(shape, tiny_model_dir, tmp_path / "m", seed=1, overwrite=True)
    assert (tmp_path / "m" / "model.safetensors").read_bytes() != before
