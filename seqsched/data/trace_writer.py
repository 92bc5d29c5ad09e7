"""A length trace written as it is collected, and a collection that goes on after a kill.

Records are appended (and flushed to the disk) chunk by chunk. Next to the trace,
``TRACE.collect.json`` keeps a fingerprint of what the lengths were made from: the model's
files, the temperatures, the limit, the seed. Collecting again into the same trace keeps
the records of prompts already done only when that fingerprint is unchanged; with other
settings it stops and says so (``--overwrite`` starts afresh). A torn last line (a kill
mid-write) is cut first.

With ``holdout``, each record gets ``"split": "val"`` or ``"train"`` from a hash of its id,
so the split of a prompt never depends on which other prompts were collected.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from seqsched.data.batch_io import dumps_line, write_json
from seqsched.data.journal import cut_torn_tail, read_lines, settings_fingerprint


def meta_path(trace: Path) -> Path:
    return trace.with_name(trace.name + ".collect.json")


def holdout_split(record_id: str, holdout: float, salt: str = "") -> str:
    """``val`` for about ``holdout`` of ids, ``train`` for the rest; stable per id. Splits
    with different salts are independent (a split of a split is not empty)."""
    digest = hashlib.sha256((salt + record_id).encode()).digest()
    return "val" if int.from_bytes(digest[:8], "big") / 2**64 < holdout else "train"


@dataclass
class TraceWriter:
    path: Path
    settings: dict[str, Any]
    model: str
    overwrite: bool = False
    holdout: float | None = None
    done: set[str] = field(default_factory=set)  # ids already in the trace
    num_cut: int = 0  # bytes of a torn tail dropped

    def __post_init__(self) -> None:
        if self.holdout is not None and not 0 < self.holdout < 1:
            raise ValueError(f"--holdout ({self.holdout}) must be between 0 and 1")
        self.fingerprint = settings_fingerprint({**self.settings, "holdout": self.holdout}, self.model)
        meta = meta_path(self.path)
        if self.path.exists() and not self.overwrite:
            if not meta.exists():
                raise FileExistsError(
                    f"{self.path} exists and was not written by a collection that can be continued "
                    f"(no {meta.name}); use --overwrite to replace it"
                )
            old = json.loads(meta.read_text(encoding="utf-8"))
            if old.get("fingerprint") != self.fingerprint:
                raise FileExistsError(
                    f"{self.path} was collected with other settings or another model ({meta}); "
                    "use --overwrite to start afresh, or another output"
                )
            self.num_cut = cut_torn_tail(self.path)
            lines, _ = read_lines(self.path)
            self.done = {str(line["id"]) for line in lines if "id" in line}
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_bytes(b"")
        write_json(meta, {"fingerprint": self.fingerprint, "settings": self.settings, "holdout": self.holdout})
        self._file: IO[str] = self.path.open("a", encoding="utf-8")

    def append(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            if self.holdout is not None:
                record = {**record, "split": holdout_split(str(record["id"]), self.holdout)}
            self._file.write(dumps_line(record))  # ends with its newline
            self.done.add(str(record["id"]))
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()
