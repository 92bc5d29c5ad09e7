"""Strategy names -> predictor and scheduler switches."""

from __future__ import annotations

import pytest

from seqsched.bench.strategies import StrategyContext, make_strategy
from seqsched.predict.constant import ConstantPredictor
from seqsched.predict.oracle import OraclePredictor
from seqsched.schedule import ScheduleConfig

CTX = StrategyContext(ScheduleConfig(batch_size=8, vbs="budget", fcr=True), oracle_lengths={"a": 3})


@pytest.mark.parametrize(
    ("name", "vbs", "fcr"),
    [
        ("oracle", "paper", True),
        ("oracle+fcr", "off", True),
        ("oracle+vbs", "paper", False),
        ("oracle+budget+fcr", "budget", True),
    ],
)
def test_switches(name: str, vbs: str, fcr: bool) -> None:
    strategy = make_strategy(name, CTX)
    assert isinstance(strategy.predictor, OraclePredictor)
    assert (strategy.schedule.vbs, strategy.schedule.fcr, strategy.schedule.batch_size) == (vbs, fcr, 8)


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
        ("seqsch", "needs a saved predictor"),
        ("pia", "needs a model"),
    ],
)
def test_bad_names_are_explained(name: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_strategy(name, CTX)
