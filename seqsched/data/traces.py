"""Length traces: recorded response lengths per prompt, for replay, simulation and the oracle.

Two formats are read:
- the paper's: a JSON list of ``{"id", "L_gt", "L_t0.0", "L_t0.3", "L_t0.5", "L_t0.7"}``;
- ours: JSONL, one object per line with the same ``L_*`` fields, plus optional
  ``instruction``, ``input`` and ``split``.

``L_t{T}`` is the length sampled at temperature T; ``L_gt`` is the reference answer's
length. The paper's oracle knows ``max`` over the ``L_t*`` fields; the length a run
really produces (``actual``) is ``L_t0.0`` by default.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from seqsched.data.batch_io import is_answered
from seqsched.request import Request

DEFAULT_ACTUAL = "L_t0.0"
DEFAULT_KNOWLEDGE = "max"  # the max over every L_t* field


@dataclass(frozen=True)
class TraceRecord:
    id: str
    lengths: dict[str, int]
    text: str | None = None  # instruction, then "\n" + input when there is one
    split: str | None = None
    where: str = ""  # "file:line" (JSONL) or "file: record N" (JSON list), for errors
    prompt_tokens: int | None = None  # recorded prompt length, as the engine tokenized it

    def length(self, name: str) -> int:
        """One length field, or the max over ``L_t*`` for ``"max"``."""
        if name == DEFAULT_KNOWLEDGE:
            sampled = [v for k, v in self.lengths.items() if k.startswith("L_t")]
            if not sampled:
                raise ValueError(f"{self.where}: no L_t* fields to take the max of (id {self.id!r})")
            return max(sampled)
        if name not in self.lengths:
            known = ", ".join(sorted(self.lengths))
            raise ValueError(f"{self.where}: no field {name!r} (id {self.id!r}; fields: {known})")
        return self.lengths[name]


@dataclass
class Trace:
    records: list[TraceRecord]
    name: str = "trace"

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[TraceRecord]:
        return iter(self.records)

    def __getitem__(self, i: int) -> TraceRecord:
        return self.records[i]

    def actual(self, name: str = DEFAULT_ACTUAL) -> list[int]:
        return [r.length(name) for r in self.records]

    def oracle(self, knowledge: str = DEFAULT_KNOWLEDGE) -> dict[str, int]:
        return {r.id: r.length(knowledge) for r in self.records}

    def split(self, name: str) -> Trace:
        return Trace([r for r in self.records if r.split == name], f"{self.name}[{name}]")


def read_trace(path: str | Path, split: str | None = None, sample_size: int | None = None, seed: int = 42) -> Trace:
    """Read a trace in either format (told apart by a leading ``[``); optionally keep one
    ``split``, then draw ``sample_size`` records as the paper does (see :func:`sample`)."""
    trace = _read(Path(path))
    if split is not None:
        trace = trace.split(split)
        if not len(trace):
            raise ValueError(f"{path}: no records of split {split!r}")
    return sample(trace, sample_size, seed) if sample_size is not None else trace


def _read(path: Path) -> Trace:
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        items = _json_list(text, path)
    else:
        items = [(f"{path.name}:{n}", obj) for n, obj in _jsonl(text, path)]
    if not items:
        raise ValueError(f"{path}: empty trace: no records in it")
    records = [_record(obj, where) for where, obj in items]
    seen: dict[str, str] = {}
    for r in records:
        if r.id in seen:
            raise ValueError(f"{r.where}: field 'id': duplicate of {seen[r.id]}, got {r.id!r}")
        seen[r.id] = r.where
    return Trace(records, path.name)


def sample(trace: Trace, n: int, seed: int = 42) -> Trace:
    """The paper's draw: ``numpy.random.seed(seed); numpy.random.permutation(len)[:n]``,
    kept in the order drawn. A private RandomState gives the same numbers without
    touching numpy's global state."""
    if not 1 <= n <= len(trace):
        raise ValueError(f"sample size ({n}) must be in [1, {len(trace)}] for {trace.name}")
    order = np.random.RandomState(seed).permutation(len(trace))[:n]
    return Trace([trace.records[i] for i in order], f"{trace.name}[sample {n}, seed {seed}]")


def trace_requests(trace: Trace, max_new_tokens: int = 512, actual: str = DEFAULT_ACTUAL) -> list[Request]:
    """Requests that replay the trace: the output length to force is the ``actual``
    field (at least 1: every response takes one step for its EOS); a recorded
    ``prompt_tokens`` is the prompt's length for engines that never tokenize."""
    return [
        Request(
            index=i,
            request_id=r.id,
            prompt=r.text or r.id,
            max_new_tokens=max_new_tokens,
            target_len=max(1, r.length(actual)),
            num_prompt_tokens_hint=r.prompt_tokens,
        )
        for i, r in enumerate(trace.records)
    ]


def read_length_map(path: str | Path, knowledge: str = DEFAULT_KNOWLEDGE) -> dict[str, int]:
    """Request id -> known length, for the oracle. Accepts a trace (``knowledge`` picks
    the field; ``max`` over ``L_t*`` by default), a JSONL of ``{"custom_id"|"id",
    "length"}``, or a previous seqsched output (``usage.completion_tokens`` of its
    answered lines)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    lines = [] if text.lstrip().startswith("[") else list(_jsonl(text, path))
    if not lines or any(k.startswith("L_") for k in lines[0][1]):
        return read_trace(path).oracle(knowledge)
    first_line, first = lines[0]
    if "response" in first or "error" in first:
        return _output_lengths(lines, path)
    if "length" in first:
        return _length_lines(lines, path)
    raise ValueError(
        f"{path.name}:{first_line}: not a length file: expected L_* fields (a trace), "
        "'length' with 'custom_id' or 'id', or 'response' (a seqsched output)"
    )


def _json_list(text: str, path: Path) -> list[tuple[str, Any]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path.name}:{e.lineno}: invalid JSON ({e.msg})") from None
    return [(f"{path.name}: record {i}", obj) for i, obj in enumerate(data, start=1)]


def _jsonl(text: str, path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """The objects of a JSONL text. A last line with no newline that does not parse is a
    write a crash cut short (a served trace is appended to while the server runs): it is
    skipped with a warning, not an error; anywhere else a bad line is an error."""
    lines = text.splitlines()
    torn = bool(text) and not text.endswith("\n")
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            if torn and n == len(lines):
                print(f"{path.name}:{n}: a torn last line (no newline, {len(line)} bytes) skipped", file=sys.stderr)
                return
            raise ValueError(f"{path.name}:{n}: invalid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(obj, dict):
            raise ValueError(f"{path.name}:{n}: a line must be a JSON object, got {type(obj).__name__}")
        yield n, obj


def _record(obj: Any, where: str) -> TraceRecord:
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: a record must be a JSON object, got {type(obj).__name__}")
    record_id = _id(obj, "id", where)
    lengths = {k: _length(v, k, where) for k, v in obj.items() if k.startswith("L_")}
    if not lengths:
        raise ValueError(f"{where}: no L_* length fields (id {record_id!r})")
    instruction, extra = obj.get("instruction"), obj.get("input")
    for name, value in (("instruction", instruction), ("input", extra), ("split", obj.get("split"))):
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{where}: field {name!r}: must be a string, got {json.dumps(value)}")
    text = instruction + ("\n" + extra if extra else "") if instruction else None
    prompt_tokens = obj.get("prompt_tokens")
    if prompt_tokens is not None and (_length(prompt_tokens, "prompt_tokens", where) < 1):
        raise ValueError(f"{where}: field 'prompt_tokens': must be >= 1, got {prompt_tokens}")
    return TraceRecord(record_id, lengths, text, obj.get("split"), where, prompt_tokens)


def _id(obj: dict[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
        raise ValueError(f"{where}: field {key!r}: must be a non-empty string or integer, got {json.dumps(value)}")
    return str(value)


def _length(value: Any, key: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{where}: field {key!r}: must be a non-negative integer, got {json.dumps(value)}")
    return value


def _length_lines(lines: list[tuple[int, dict[str, Any]]], path: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for n, obj in lines:
        where = f"{path.name}:{n}"
        key = _id(obj, "custom_id" if "custom_id" in obj else "id", where)
        out[key] = _length(obj.get("length"), "length", where)
    return out


def _output_lengths(lines: list[tuple[int, dict[str, Any]]], path: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for n, obj in lines:
        if not is_answered(obj):
            continue
        where = f"{path.name}:{n}"
        usage = obj["response"].get("body", {}).get("usage", {})
        out[_id(obj, "custom_id", where)] = _length(
            usage.get("completion_tokens"), "response.body.usage.completion_tokens", where
        )
    return out
