"""Served traffic as a length trace: each answered request's prompt, predicted and actual
length, appended as JSONL that ``seqsched predictor train --target L_served`` reads, so a
deployment can retrain its predictor on its own traffic."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from seqsched.serve.dispatcher import Ticket
    from seqsched.serve.protocol import ParsedRequest


class ServedTrace:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = path.open("a", encoding="utf-8", buffering=1)  # a line at a time

    def append(self, ticket: Ticket, parsed: ParsedRequest, num_output_tokens: int, finish_reason: str | None) -> None:
        record = {
            "id": ticket.request_id,
            "instruction": parsed.text,
            "L_served": num_output_tokens,
            "predicted": ticket.predicted_len,
            "max_tokens": parsed.max_tokens,
            "at_limit": finish_reason == "length",
            "temperature": parsed.body.get("temperature"),
            "time": round(time.time(), 3),
        }
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")

    def close(self) -> None:
        self._file.close()
