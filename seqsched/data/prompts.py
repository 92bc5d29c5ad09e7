"""Prompts for a bench or a length collection: a request file (the JSONL that ``seqsched
run`` reads; its ``max_tokens`` and ``messages`` are honoured), or any other file read as
plain text, one prompt per line (ids ``prompt-<line>``). A file is a request file when its
first non-blank line is a JSON object.
"""

from __future__ import annotations

import json
from pathlib import Path

from seqsched.data.batch_io import read_requests
from seqsched.request import Request


def is_request_file(path: str | Path) -> bool:
    """A request JSONL (its first non-blank line is a JSON object), not plain prompt lines."""
    with Path(path).open(encoding="utf-8", errors="replace") as f:
        first = next((line for line in f if line.strip()), None)
    return first is not None and _is_json_object(first)


def read_prompts(path: str | Path, max_new_tokens: int = 512) -> list[Request]:
    """Requests from a request JSONL, or from a plain text file (one prompt per line)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    first = next((line for line in text.splitlines() if line.strip()), None)
    if first is None:
        raise ValueError(f"{path}: empty file: no prompts in it")
    if _is_json_object(first):
        requests, errors = read_requests(path, max_new_tokens, require_custom_id=False)
        if errors:
            raise ValueError(f"{errors[0].message} (and {len(errors) - 1} more bad lines)")
        return requests
    return [
        Request(index=n - 1, request_id=f"prompt-{n}", prompt=line, max_new_tokens=max_new_tokens)
        for n, line in enumerate(text.splitlines(), start=1)
        if line.strip()
    ]


def _is_json_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except json.JSONDecodeError:
        return False
