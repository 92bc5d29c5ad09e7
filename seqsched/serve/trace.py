"""Served traffic as a length trace: each answered request's prompt, predicted and actual
length, appended as JSONL that ``seqsched predictor train --target L_served`` reads, so a
deployment can retrain its predictor on its own traffic.

NOTE on trust. The trace holds clients' prompts, so it is created as a job's files are:
never through a symbolic link (``O_NOFOLLOW``), with the mode the user chose (0600 by
default: the owner only). Opening it cuts a torn last line an earlier crash left. A write
that fails (a full disk) never fails the request it records: the answer was generated and
is sent; the error is counted (``seqsched_trace_errors_total``) and logged once a minute.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from seqsched.data.journal import cut_torn_tail

if TYPE_CHECKING:
    from seqsched.schedule.front_door import Ticket
    from seqsched.serve.protocol import ParsedRequest

log = logging.getLogger("seqsched.serve")
DEFAULT_TRACE_MODE = 0o600


def open_trace(path: Path, mode: int = DEFAULT_TRACE_MODE) -> int:
    """An append-only descriptor on ``path``, refused when it is a link or a directory."""
    if path.is_symlink():
        raise ValueError(f"the trace {path} is a symbolic link: seqsched does not write through links")
    if path.is_dir():
        raise ValueError(f"the trace path {path} is a directory")
    cut_torn_tail(path)
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, mode)
    except OSError as e:
        raise ValueError(f"cannot open the trace {path}: {e.strerror}") from None


class ServedTrace:
    def __init__(self, path: Path, mode: int = DEFAULT_TRACE_MODE) -> None:
        self.path = path
        self._fd = open_trace(path, mode)
        self.num_errors = 0
        self._logged_at = -60.0

    def append(self, ticket: Ticket, parsed: ParsedRequest, num_output_tokens: int, finish_reason: str | None) -> bool:
        """Append one record; False (counted, logged) if it could not be written."""
        record: dict[str, Any] = {
            "id": ticket.request_id,
            "instruction": parsed.text,
            "L_served": num_output_tokens,
            "predicted": ticket.predicted_len,
            "max_tokens": parsed.max_tokens,
            "at_limit": finish_reason == "length",
            "temperature": parsed.body.get("temperature"),
            "time": round(time.time(), 3),
        }
        data = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8", "replace")
        try:
            written = os.write(self._fd, data)  # one write: O_APPEND keeps lines whole
            if written != len(data):
                raise OSError(f"short write ({written} of {len(data)} bytes)")
        except OSError as e:
            self.num_errors += 1
            now = time.monotonic()
            if now - self._logged_at >= 60:
                self._logged_at = now
                log.error("cannot write the trace %s (%s): answers are still sent; %d lost so far",
                          self.path, e, self.num_errors)  # fmt: skip
            return False
        return True

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
