"""Is a trained predictor any good? Its held-out scores next to the best constant's, and
which prompts it was trained on (so an evaluation can say when it scores training data).

The best constant predicts the median training length for every prompt: a predictor
whose held-out Error is not below it has learned nothing a scheduler can use.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from seqsched.data.trace_writer import holdout_split
from seqsched.data.traces import Trace
from seqsched.predict.base import LengthPredictor
from seqsched.predict.constant import ConstantPredictor
from seqsched.predict.evaluate import LengthMetrics, evaluate

TRAINED_ON = "trained_on.json"
MIN_HELD_OUT = 5


def split_off(trace: Trace, fraction: float, within: str | None = None) -> tuple[Trace, Trace]:
    """(records to fit, records held out): about ``fraction`` held out, stable per id.
    ``within`` names the split ``trace`` was taken from (``--split``): the hash is then
    salted with it, since a split made by ``collect --holdout`` used the plain hash and a
    split of it by the same hash would hold out nothing."""
    if not 0 < fraction < 1:
        raise ValueError(f"--holdout ({fraction}) must be between 0 and 1")
    salt = "" if within is None else f"{within}:"
    held = [r for r in trace if holdout_split(r.id, fraction, salt) == "val"]
    kept = [r for r in trace if holdout_split(r.id, fraction, salt) != "val"]
    return Trace(kept, f"{trace.name}[fit]"), Trace(held, f"{trace.name}[held out]")


@dataclass(frozen=True)
class FitReport:
    predictor: LengthMetrics
    constant: LengthMetrics

    @property
    def beats_constant(self) -> bool:
        return self.predictor.error < self.constant.error

    def table(self) -> str:
        def tau(m: LengthMetrics) -> str:
            return "n/a" if m.kendall_tau is None else f"{m.kendall_tau:.3f}"

        rows = [
            ("", "predictor", "best constant"),
            ("Error", f"{self.predictor.error:.1f}", f"{self.constant.error:.1f}"),
            ("Acc-50", f"{100 * self.predictor.acc_50:.1f}%", f"{100 * self.constant.acc_50:.1f}%"),
            ("Kendall tau", tau(self.predictor), tau(self.constant)),
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        lines = [
            "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
            for r in rows
        ]
        return f"held out: {self.predictor.num_prompts} prompts\n" + "\n".join(lines)


def fit_report(
    predictor: LengthPredictor,
    fit_lengths: Sequence[int],
    held: Trace,
    prompts: dict[str, str] | None,
    limit: int,
    target: str,
) -> FitReport:
    constant = ConstantPredictor()
    constant.fit([""] * len(fit_lengths), list(fit_lengths))
    mine, _ = evaluate(predictor, held, prompts, max_new_tokens=limit, knowledge=target)
    best, _ = evaluate(constant, held, prompts, max_new_tokens=limit, knowledge=target)
    return FitReport(mine, best)


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def write_trained_on(directory: Path, texts: Sequence[str], source: dict[str, object]) -> None:
    data = {**source, "num_prompts": len(texts), "prompt_sha256_16": sorted({digest(t) for t in texts})}
    (directory / TRAINED_ON).write_text(json.dumps(data) + "\n", encoding="utf-8")


def overlap_with_training(directory: Path, texts: Sequence[str]) -> int | None:
    """How many of ``texts`` the predictor in ``directory`` was trained on; None if unknown."""
    path = directory / TRAINED_ON
    if not path.is_file():
        return None
    seen = set(json.loads(path.read_text(encoding="utf-8")).get("prompt_sha256_16", []))
    return sum(digest(t) in seen for t in texts)
