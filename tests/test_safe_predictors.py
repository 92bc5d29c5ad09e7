"""Saved predictors are arrays that load without running code; the arrays predict exactly
what the fitted scikit-learn models they came from predict; pickles are refused."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn.decomposition import TruncatedSVD
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from seqsched.cli import main
from seqsched.predict.arrays import PickleRefused, load_arrays, save_arrays
from seqsched.predict.base import write_manifest
from seqsched.predict.features import NUM_HAND_FEATURES
from seqsched.predict.linear import LinearModel
from seqsched.predict.proxy import ProxyPredictor
from seqsched.predict.registry import load_predictor
from seqsched.predict.tfidf import Tfidf
from seqsched.predict.trees import TreeEnsemble

DOCS = ["Write a short poem about the sea.", "", "List 5 ways to save money!! money money", "x", "Écris un poème"]


@pytest.mark.parametrize("loss", ["absolute_error", "quantile", "squared_error"])
def test_tree_arrays_predict_what_scikit_learn_predicts(loss: str) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 6))
    x[rng.random(x.shape) < 0.1] = np.nan  # missing values take each node's learned side
    y = np.nan_to_num(x[:, 0]) * 3 + np.nan_to_num(x[:, 1]) ** 2 + rng.normal(size=400)
    options = {"quantile": 0.7} if loss == "quantile" else {}
    models = [
        HistGradientBoostingRegressor(loss=loss, max_iter=40, random_state=seed, **options).fit(x, y) for seed in (0, 1)
    ]
    ensemble = TreeEnsemble.from_sklearn(models)
    test = rng.normal(size=(150, 6))  # more rows than one chunk
    test[rng.random(test.shape) < 0.2] = np.nan
    expected = np.mean([m.predict(test) for m in models], axis=0)
    np.testing.assert_allclose(ensemble.predict(test), expected, rtol=1e-12, atol=1e-12)
    again = TreeEnsemble.from_arrays(ensemble.to_arrays("t"), "t")
    np.testing.assert_array_equal(again.predict(test), ensemble.predict(test))
    with pytest.raises(ValueError, match="expected rows of 6 features"):
        ensemble.predict(test[:, :5])


def test_tree_arrays_that_point_outside_or_loop_are_refused() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(200, 3)), rng.normal(size=200)
    arrays = TreeEnsemble.from_sklearn([HistGradientBoostingRegressor(max_iter=5).fit(x, y)]).to_arrays("t")
    outside = {**arrays, "t.left": arrays["t.left"] + 10**6}
    with pytest.raises(ValueError, match="'left' points outside"):
        TreeEnsemble.from_arrays(outside, "t")
    shallow = {**arrays, "t.shape": np.array([3, 1])}  # claims depth 1: descent would stop mid-tree
    with pytest.raises(ValueError, match="deeper than its stated depth"):
        TreeEnsemble.from_arrays(shallow, "t")
    feature = {**arrays, "t.feature": arrays["t.feature"] + 3}
    with pytest.raises(ValueError, match="feature outside"):
        TreeEnsemble.from_arrays(feature, "t")


@pytest.mark.parametrize(
    "options",
    [{"ngram_range": (1, 3)}, {"analyzer": "char_wb", "ngram_range": (2, 5)}, {"analyzer": "char", "max_features": 50}],
)
def test_tfidf_arrays_match_the_vectorizer(options: dict[str, Any]) -> None:
    vectorizer = TfidfVectorizer(sublinear_tf=True, dtype=np.float32, **options).fit(DOCS * 2 + ["money poem sea"])
    tfidf = Tfidf.from_sklearn(vectorizer)
    docs = [*DOCS, "nothing known zzz"]
    np.testing.assert_allclose(tfidf.transform(docs).toarray(), vectorizer.transform(docs).toarray(), atol=1e-7)


def test_tfidf_settings_cannot_smuggle_options() -> None:
    with pytest.raises(ValueError, match="TF-IDF settings must be"):
        Tfidf({"analyzer": "word", "ngram_range": [1, 1], "lowercase": True, "token_pattern": r"\w+",
               "preprocessor": "x"}, {"a": 0}, np.ones(1, np.float32))  # fmt: skip
    with pytest.raises(ValueError, match="outside the IDF weights"):
        Tfidf({"analyzer": "word", "ngram_range": [1, 1], "lowercase": True, "token_pattern": r"\w+"},
              {"a": 5}, np.ones(1, np.float32))  # fmt: skip


def test_a_scaled_ridge_folds_into_one_linear_map() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(loc=5, scale=[1, 10, 0.1, 3], size=(100, 4))
    y = x @ [1.0, -0.2, 4.0, 0.5] + rng.normal(size=100)
    pipeline = make_pipeline(StandardScaler(), Ridge(alpha=2.0)).fit(x, y)
    linear = LinearModel.from_sklearn(pipeline)
    np.testing.assert_allclose(linear.predict(x), pipeline.predict(x), rtol=1e-10)


def test_the_shipped_proxy_is_arrays_and_fast_to_load(tmp_path: Path) -> None:
    from seqsched.build import DEFAULT_PROXY

    assert not list(Path(DEFAULT_PROXY).glob("*.joblib")), "the shipped proxy must not be a pickle"
    predictor = load_predictor(DEFAULT_PROXY)
    assert isinstance(predictor, ProxyPredictor)
    predicted = predictor.predict(DOCS[:1] + DOCS[2:])
    assert all(isinstance(p, int) and p >= 1 for p in predicted)
    predictor.save(tmp_path / "again")
    assert load_predictor(tmp_path / "again").predict(DOCS) == predictor.predict(DOCS)


class _Payload:
    """Unpickling this opens (creates) ``marker``: proof that loading ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def _hostile_predictor(directory: Path, kind: str, marker: Path, model: Path | None = None) -> Path:
    if kind == "proxy":
        write_manifest(directory, "proxy", {"format_version": 1})
        joblib.dump({"trees": _Payload(marker)}, directory / "proxy.joblib")
    else:
        probe = {"regressor": "ridge", "alpha": 1.0, "quantile": 0.7, "num_layers": 1, "batch_size": 4, "seed": 0}
        write_manifest(directory, "probe", {"model_path": str(model), "limit": 16, "probe": probe})
        joblib.dump(_Payload(marker), directory / "regressor.joblib")
    return directory


@pytest.mark.parametrize("kind", ["proxy", "probe"])
def test_a_pickled_predictor_is_refused_by_every_command_and_runs_nothing(
    kind: str, tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "pwned"
    hostile = _hostile_predictor(tmp_path / "hostile", kind, marker, tiny_model_dir)
    with pytest.raises(PickleRefused, match="can run code"):
        load_predictor(hostile)
    trace = tmp_path / "trace.jsonl"
    trace.write_text("".join(json.dumps({"id": str(i), "instruction": f"say {i}", "L_t0.0": 5 + i}) + "\n"
                             for i in range(12)))  # fmt: skip
    inp = tmp_path / "in.jsonl"
    inp.write_text(json.dumps({"custom_id": "a", "prompt": "hi", "max_tokens": 4}) + "\n")
    out = tmp_path / "out.jsonl"
    commands = [
        ["predictor", "eval", str(hostile), "--trace", str(trace)],
        ["run", str(inp), "--model", str(tiny_model_dir), "--predictor", str(hostile), "-o", str(out),
         "--device", "cpu"],
        ["bench", "--model", str(tiny_model_dir), "--predictor", str(hostile), "--sample", "4", "--device", "cpu",
         "--strategies", "seqsch", "-o", str(tmp_path / "bench")],
        ["predictor", "convert", str(hostile), str(tmp_path / "converted")],  # no --trust-pickle
    ]  # fmt: skip
    for argv in commands:
        assert main(argv) == 2, argv
        assert "pickle" in capsys.readouterr().err, argv
        assert not marker.exists(), f"{argv} ran the pickle's code"
    assert not out.exists() and not (tmp_path / "converted").exists()


def test_convert_rewrites_a_trusted_pickle_with_the_same_predictions(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    texts = [f"explain topic {i} in {rng.integers(1, 9)} words\ninput {i}" for i in range(60)]
    old_vectorizer = SimpleNamespace(
        max_char_features=1000,
        input_weight=0.5,
        words=TfidfVectorizer(sublinear_tf=True, dtype=np.float32).fit(texts),
        chars=TfidfVectorizer(sublinear_tf=True, dtype=np.float32, analyzer="char_wb").fit(texts),
        inputs=TfidfVectorizer(sublinear_tf=True, dtype=np.float32).fit(texts),
    )
    num_text = sum(len(getattr(old_vectorizer, n).vocabulary_) for n in ("words", "chars", "inputs"))
    x = rng.random((60, num_text)).astype(np.float32)
    svd = TruncatedSVD(4, random_state=0).fit(x)
    ridge = Ridge().fit(x, rng.random((60, 5)))
    level1 = SimpleNamespace(ridge=ridge, neighbors=rng.random((60, 4)), neighbor_log_lengths=rng.random(60),
                             num_neighbors=3)  # fmt: skip
    features = rng.random((60, 5 + 6 + NUM_HAND_FEATURES))
    trees = [HistGradientBoostingRegressor(max_iter=10, random_state=0).fit(features, rng.random(60))]
    old = tmp_path / "old"
    write_manifest(old, "proxy", {"format_version": 1, "num_neighbors": 3, "num_components": 4})
    joblib.dump({"vectorizer": old_vectorizer, "svd": svd, "level1": level1, "trees": trees}, old / "proxy.joblib")
    (old / "trained_on.json").write_text("{}")
    with pytest.raises(PickleRefused):
        load_predictor(old)

    assert main(["predictor", "convert", str(old), str(tmp_path / "new"), "--trust-pickle"]) == 0
    new = load_predictor(tmp_path / "new")
    assert isinstance(new, ProxyPredictor) and (tmp_path / "new" / "trained_on.json").is_file()
    assert new._trees is not None
    np.testing.assert_allclose(new._trees.predict(features[:10]), trees[0].predict(features[:10]), rtol=1e-12)
    assert all(p >= 1 for p in new.predict(texts[:5]))


def test_array_files_refuse_objects_and_name_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="Python objects"):
        save_arrays(tmp_path / "a.npz", {"bad": np.array([{"x": 1}], dtype=object)})
    save_arrays(tmp_path / "a.npz", {"good": np.arange(3)})
    with pytest.raises(ValueError, match="missing arrays other"):
        load_arrays(tmp_path / "a.npz", ("good", "other"))
    (tmp_path / "b.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable array file"):
        load_arrays(tmp_path / "b.npz")
    np.savez(tmp_path / "c.npz", obj=np.array([object()], dtype=object))  # an object array needs pickle to read
    with pytest.raises(ValueError, match="not a readable array file"):
        load_arrays(tmp_path / "c.npz")["obj"]
    assert not list(tmp_path.glob(".*.tmp"))


def test_an_oracle_by_text_serves_requests_that_have_no_trace_ids(tmp_path: Path) -> None:
    """A benchmark's ceiling for the server: the prompt's forced length, found by its text."""
    from seqsched.build import load_saved_predictor
    from seqsched.predict.oracle import OraclePredictor
    from seqsched.request import Request

    lengths = {OraclePredictor.key("Tell me a story."): 120, OraclePredictor.key("Name a color."): 3}
    OraclePredictor(lengths, by="text").save(tmp_path / "oracle")
    loaded = load_saved_predictor(tmp_path / "oracle")
    requests = [Request(0, "served", prompt="Name a color."), Request(1, "served", prompt="Tell me a story.")]
    assert loaded.predict_requests(requests) == [3, 120]
    assert "Tell me" not in (tmp_path / "oracle" / "predictor.json").read_text(), "digests, not prompts"
    with pytest.raises(KeyError, match="no length for 1"):
        loaded.predict_requests([Request(0, "served", prompt="unknown")])
