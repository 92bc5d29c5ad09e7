"""``--routing``, as `seqsched serve` and `seqsched simulate` take it: a scorer's name or a
weighted mix, checked against the scorers' registry (``schedule/scorers.py``)."""

from __future__ import annotations

import argparse

from seqsched.schedule.scorers import SCORERS, parse_routing

__all__ = ["SCORERS", "routing_arg"]


def routing_arg(text: str) -> str:
    try:
        parse_routing(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text
