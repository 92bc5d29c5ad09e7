"""One factory for saved predictors: read the manifest's kind, load that class.

Learned kinds import heavy libraries, so each class is imported only when its kind is
loaded.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from seqsched.predict.base import LengthPredictor, read_manifest

# kind -> "module:Class"
KINDS: dict[str, str] = {
    "constant": "seqsched.predict.constant:ConstantPredictor",
    "oracle": "seqsched.predict.oracle:OraclePredictor",
    "pia": "seqsched.predict.pia:PiAPredictor",
    "lora": "seqsched.predict.lora:LoraPredictor",
    "probe": "seqsched.predict.probe:ProbePredictor",
    "proxy": "seqsched.predict.proxy:ProxyPredictor",
}


# Kinds that run the serving model: they take ``model=`` and ``tokenizer=`` to share it.
MODEL_KINDS = frozenset({"pia", "lora", "probe"})


def load_predictor(path: str | Path, model: Any = None, tokenizer: Any = None) -> LengthPredictor:
    """Load a predictor saved with ``save(path)``, whatever its kind. The LLM-based kinds
    use ``model`` and ``tokenizer`` when given (the serving model), else load their own."""
    kind = read_manifest(path)["kind"]
    if kind not in KINDS:
        raise ValueError(f"{path}: unknown predictor kind {kind!r}; known kinds: {', '.join(sorted(KINDS))}")
    module_name, class_name = KINDS[kind].split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise ValueError(f"{path}: the {kind!r} predictor cannot be loaded ({e})") from e
    cls = getattr(module, class_name)
    kwargs = {"model": model, "tokenizer": tokenizer} if kind in MODEL_KINDS else {}
    predictor = cls.load(path, **kwargs)
    assert isinstance(predictor, LengthPredictor), f"{KINDS[kind]}.load returned {type(predictor)}"
    return predictor
