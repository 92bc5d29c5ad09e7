"""The proxy length predictor on made-up prompts whose answer length follows their words."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import pytest

from seqsched.predict.proxy import ProxyConfig, ProxyPredictor
from seqsched.predict.registry import load_predictor

# Each task word sets the answer length; the rest of the prompt is filler.
_TASKS = {"classify": 5, "name": 15, "summarize": 60, "explain": 150, "essay": 400}
_FILLER = ["the", "following", "topic", "about", "climate", "music", "history", "cats", "a", "short"]
_FAST = ProxyConfig(num_folds=3, max_iter=100, learning_rate=0.1, min_samples_leaf=5, num_components=8, num_bags=2)


def _prompts(n: int, seed: int) -> tuple[list[str], list[int]]:
    rng = random.Random(seed)
    texts, lengths = [], []
    for _ in range(n):
        task = rng.choice(sorted(_TASKS))
        words = [task, *rng.sample(_FILLER, 4)]
        rng.shuffle(words)
        extra = "\n" + " ".join(rng.choices(_FILLER, k=rng.randint(1, 8))) if rng.random() < 0.3 else ""
        texts.append(" ".join(words) + extra)
        lengths.append(max(1, round(_TASKS[task] * rng.uniform(0.85, 1.15))))
    return texts, lengths


@pytest.fixture(scope="module")
def fitted() -> ProxyPredictor:
    predictor = ProxyPredictor(_FAST)
    predictor.fit(*_prompts(200, seed=0))
    return predictor


def test_predicts_lengths_from_words(fitted: ProxyPredictor) -> None:
    texts, lengths = _prompts(100, seed=1)
    predicted = fitted.predict(texts)
    assert all(isinstance(p, int) and p >= 1 for p in predicted)
    error = sum(abs(p - t) for p, t in zip(predicted, lengths, strict=True)) / len(texts)
    assert error < 20, f"mean error {error:.1f} on lengths from 5 to 400"
    assert fitted.predict([]) == []


def test_fit_is_reproducible(fitted: ProxyPredictor) -> None:
    again = ProxyPredictor(_FAST)
    again.fit(*_prompts(200, seed=0))
    texts, _ = _prompts(50, seed=2)
    assert again.predict(texts) == fitted.predict(texts)


def test_quantile_predicts_longer() -> None:
    texts, lengths = _prompts(200, seed=0)
    high = ProxyPredictor(replace(_FAST, quantile=0.9))
    high.fit(texts, lengths)
    median = ProxyPredictor(_FAST)
    median.fit(texts, lengths)
    assert sum(high.predict(texts)) > sum(median.predict(texts))


def test_save_load_round_trip(fitted: ProxyPredictor, tmp_path: Path) -> None:
    fitted.save(tmp_path / "proxy")
    texts, _ = _prompts(50, seed=3)
    loaded = ProxyPredictor.load(tmp_path / "proxy")
    assert loaded.config == fitted.config
    assert loaded.predict(texts) == fitted.predict(texts)
    assert load_predictor(tmp_path / "proxy").predict(texts) == fitted.predict(texts)


def test_load_refuses_what_is_not_a_proxy(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a saved predictor"):
        ProxyPredictor.load(tmp_path)
    (tmp_path / "predictor.json").write_text(json.dumps({"kind": "constant", "config": {"value": 3}}))
    with pytest.raises(ValueError, match="not a 'proxy'"):
        ProxyPredictor.load(tmp_path)


def test_unfitted_predictor_says_so() -> None:
    with pytest.raises(ValueError, match="not fitted"):
        ProxyPredictor().predict(["hello"])
    with pytest.raises(ValueError, match="at least"):
        ProxyPredictor().fit(["a", "b"], [1, 2])


@pytest.mark.parametrize(
    ("options", "quoted"),
    [
        ({"quantile": 1.5}, "quantile (1.5)"),
        ({"quantile": 0.0}, "quantile (0.0)"),
        ({"num_folds": 1}, "num_folds (1)"),
        ({"ridge_alpha": -1.0}, "ridge_alpha (-1.0)"),
        ({"class_quantiles": (0.5, 1.0)}, "class_quantiles ((0.5, 1.0))"),
        ({"learning_rate": 0.0}, "learning_rate (0.0)"),
        ({"num_threads": 0}, "num_threads (0)"),
    ],
)
def test_bad_config_quotes_the_value(options: dict[str, object], quoted: str) -> None:
    with pytest.raises(ValueError) as error:
        ProxyConfig(**options)  # type: ignore[arg-type]
    assert quoted in str(error.value)
