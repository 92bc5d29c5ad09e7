"""Strategy names -> predictor and scheduler switches."""

from __future__ import annotations

import pytest

from seqsched.bench.strategies import StrategyContext, make_strategy
from seqsched.predict.constant import ConstantPredictor
from seqsched.predict.oracle import OraclePredictor
from seqsched.schedule import ScheduleConfig

CTX = StrategyContext(ScheduleConfig(batch_size=8, vbs="budget", fcr=True), oracle_lengths={"a": 3})


@pytest.mark.parametrize(
    ("name", "vbs", "fcr", "fcr_mode"),
    [
        ("oracle", "paper", True, "restart"),
        ("oracle+fcr", "off", True, "restart"),
        ("oracle+vbs", "paper", False, "restart"),
        ("oracle+budget+fcr", "budget", True, "restart"),
        ("oracle+vbs+resume", "paper", True, "resume"),
        ("oracle+resume", "off", True, "resume"),
    ],
)
def test_switches(name: str, vbs: str, fcr: bool, fcr_mode: str) -> None:
    strategy = make_strategy(name, CTX)
    assert isinstance(strategy.predictor, OraclePredictor)
    schedule = strategy.schedule
    assert (schedule.vbs, schedule.fcr, schedule.fcr_mode, schedule.batch_size) == (vbs, fcr, fcr_mode, 8)


def test_vanilla_is_plain_static_batching() -> None:
    strategy = make_strategy("vanilla", CTX)
    assert isinstance(strategy.predictor, ConstantPredictor)
    assert (strategy.schedule.vbs, strategy.schedule.fcr) == ("off", False)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("magic", "unknown base 'magic'"),
        ("oracle+fast", "unknown switch 'fast'"),
        ("vanilla+fcr", "vanilla takes no switches"),
        ("oracle+vbs+budget", "choose one of vbs and budget"),
        ("oracle+fcr+resume", "choose one of fcr \\(restart\\) and resume"),
        ("seqsch", "needs a saved predictor"),
        ("pia", "needs a model"),
    ],
)
def test_bad_names_are_explained(name: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_strategy(name, CTX)
