"""Rewrite a predictor that an older seqsched pickled (joblib) in the safe array format.

Unpickling runs whatever code the file names, so this is the one place that does it, and
only for a user who says they trust the file (``seqsched predictor convert --trust-pickle``).
The converted predictor gives the same predictions: its arrays are the fitted models' own.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from seqsched.predict.base import MANIFEST, read_manifest, write_manifest
from seqsched.predict.features import PromptVectorizer
from seqsched.predict.tfidf import Tfidf
from seqsched.predict.trees import TreeEnsemble


def convert_pickled(source: Path, destination: Path, *, trust_pickle: bool) -> str:
    """Convert ``source`` into ``destination``; return the predictor's kind."""
    if not trust_pickle:
        raise ValueError(f"{source}: converting unpickles its files, which can run code: pass --trust-pickle "
                         "(trust_pickle=True) only for a predictor you trust, or train a new one")  # fmt: skip
    if destination.resolve() == source.resolve():
        raise ValueError(f"{destination}: write the converted predictor to a new directory, not over {source}")
    if destination.exists() and any(destination.iterdir()):
        raise FileExistsError(f"{destination}: exists and is not empty")
    manifest = read_manifest(source)
    kind = str(manifest["kind"])
    if kind == "proxy":
        _convert_proxy(source, destination, manifest["config"])
    elif kind == "probe":
        _convert_probe(source, destination, manifest["config"])
    else:
        raise ValueError(f"{source}: a {kind!r} predictor has no pickled part to convert")
    for extra in source.iterdir():  # what the old directory carried besides the model
        if extra.is_file() and extra.suffix == ".json" and extra.name != MANIFEST:
            shutil.copy2(extra, destination / extra.name)
    return kind


def _unpickle(path: Path) -> object:
    import joblib

    if not path.is_file():
        raise FileNotFoundError(f"{path.parent}: no {path.name} to convert")
    return joblib.load(path)


def _convert_proxy(source: Path, destination: Path, config: dict[str, object]) -> None:
    from seqsched.predict.proxy import ProxyConfig, ProxyPredictor, _Level1

    if config.get("format_version") != 1:
        raise ValueError(f"{source}: proxy format version {config.get('format_version')!r} is not the pickled one (1)")
    state = _unpickle(source / "proxy.joblib")
    assert isinstance(state, dict)
    old, level1 = state["vectorizer"], state["level1"]
    vectorizer = PromptVectorizer(old.max_char_features, old.input_weight)
    vectorizer.blocks = {name: Tfidf.from_sklearn(getattr(old, name)) for name in PromptVectorizer._BLOCKS}
    ProxyPredictor.from_parts(
        ProxyConfig.from_dict({k: v for k, v in config.items() if k != "format_version"}),
        vectorizer,
        np.asarray(state["svd"].components_),
        _Level1(
            level1.ridge.coef_,
            level1.ridge.intercept_,
            level1.neighbors,
            level1.neighbor_log_lengths,
            level1.num_neighbors,
        ),
        TreeEnsemble.from_sklearn(state["trees"]),
    ).save(destination)


def _convert_probe(source: Path, destination: Path, config: dict[str, object]) -> None:
    from seqsched.predict._llm import resolve_model_path
    from seqsched.predict.probe import ProbeConfig, regressor_from_sklearn, save_regressor

    probe = ProbeConfig(**config["probe"])  # type: ignore[arg-type]
    regressor = regressor_from_sklearn(probe, _unpickle(source / "regressor.joblib"))
    model_path = resolve_model_path(config.get("model_path"), source)  # type: ignore[arg-type]
    if model_path is not None and Path(model_path).exists():  # a local model: relative to the new place
        model_path = os.path.relpath(Path(model_path).resolve(), destination.resolve())
    save_regressor(write_manifest(destination, "probe", {**config, "model_path": model_path}), probe, regressor)
