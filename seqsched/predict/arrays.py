"""Saving a fitted predictor as arrays that load without running code.

A predictor directory holds its manifest (JSON) and one ``.npz`` of plain numeric and
string arrays, read with ``allow_pickle=False``: numpy refuses object arrays, so loading
can execute nothing from the file. Older seqsched saved scikit-learn objects with joblib,
a pickle that can run any code when loaded; such a file is refused with a message, and
only ``seqsched predictor convert --trust-pickle`` opens it (once, to rewrite it here).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from seqsched.data.atomic import atomic_file

LEGACY_FILES = ("proxy.joblib", "regressor.joblib")


class PickleRefused(ValueError):
    """A predictor saved as a pickle, which this code does not load unless told to."""


def save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` to ``path`` (an .npz) atomically: a kill leaves the old file or the new."""
    for name, array in arrays.items():
        if array.dtype.hasobject:
            raise TypeError(f"array {name!r} holds Python objects, which would need pickle")
    with atomic_file(path) as f:
        np.savez_compressed(f, **arrays)  # type: ignore[arg-type]


def load_arrays(path: Path, required: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """The arrays in ``path``, never unpickling anything; missing or bad files say which."""
    if not path.is_file():
        legacy = [f for f in LEGACY_FILES if (path.parent / f).is_file()]
        if legacy:
            raise PickleRefused(
                f"{path.parent}: saved by an older seqsched as a pickle ({legacy[0]}), which can run code when "
                f"loaded, so it is not loaded. If you trust its origin, rewrite it in the safe format with "
                f"`seqsched predictor convert {path.parent} NEW_DIR --trust-pickle`, or train it again."
            )
        raise FileNotFoundError(f"{path.parent}: a predictor manifest without its arrays ({path.name})")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise ValueError(f"{path}: not a readable array file ({e})") from e
    missing = [name for name in required if name not in arrays]
    if missing:
        raise ValueError(f"{path}: missing arrays {', '.join(missing)}")
    return arrays
