"""Every subcommand's --help: each option explained, and its default shown when it has one;
bad arguments fail before any model loads."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import pytest

from seqsched.cli import build_parser


def _parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    found, todo = [], [("seqsched", build_parser())]
    while todo:
        name, parser = todo.pop()
        found.append((name, parser))
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo.extend((f"{name} {sub}", p) for sub, p in action.choices.items())
    return found


@pytest.mark.parametrize(("name", "parser"), _parsers(), ids=[name for name, _ in _parsers()])
def test_help_explains_every_option_and_shows_its_default(name: str, parser: argparse.ArgumentParser) -> None:
    text = " ".join(parser.format_help().split())
    for action in parser._actions:
        if not action.option_strings or action.help == argparse.SUPPRESS:
            continue
        assert action.help, f"{name} {action.option_strings[0]} has no help"
        if action.default not in (None, False, argparse.SUPPRESS) and not isinstance(action, argparse._HelpAction):
            assert f"default: {action.default}" in text, f"{name} {action.option_strings[0]}: default not shown"
    assert "default: None" not in text


def test_version() -> None:
    done = subprocess.run([sys.executable, "-m", "seqsched", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("seqsched ")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["bench", "--strategies", "vanila"], "unknown base 'vanila'"),
        (["bench", "--predictor", "/no/such/predictor"], "/no/such/predictor"),
        (["run", "/no/such/requests.jsonl", "-o", "/tmp/out.jsonl"], "/no/such/requests.jsonl does not exist"),
        (["simulate", "--trace", "/no/such/trace.jsonl"], "/no/such/trace.jsonl"),
        (["bench", "-o", "/dev/null/x.json"], "cannot write in /dev/null"),
        (["lengths", "collect", "/no/such/prompts.txt", "-o", "/tmp/t.jsonl"], "/no/such/prompts.txt does not exist"),
        (["predictor", "train", "--kind", "probe", "--trace", "/no/such/t.jsonl", "-o", "/tmp/p"], "/no/such/t.jsonl"),
        (["calibrate", "-o", "/dev/null/cost.json"], "cannot write in /dev/null"),
    ],
)
def test_bad_arguments_fail_before_any_model_loads(argv: list[str], message: str) -> None:
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "seqsched", *argv], capture_output=True, text=True)
    assert done.returncode == 2
    assert message in done.stderr
    assert time.monotonic() - start < 3.0 + 2.0  # 3 s asked; the margin is for a loaded CI machine


def test_a_misspelled_option_gets_the_subcommands_usage(capsys: pytest.CaptureFixture[str]) -> None:
    from seqsched.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["run", "requests.jsonl", "--predicter", "p"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: seqsched run ")
    assert "unrecognized arguments: --predicter p" in err


def test_one_micro_batch_is_singular() -> None:
    from seqsched.dry_run import dry_run
    from seqsched.predict.constant import ConstantPredictor
    from seqsched.request import Request
    from seqsched.schedule import ScheduleConfig
    from seqsched.simulate.cost_model import load_cost_model

    cost = load_cost_model("cpu-default-model")
    one = [Request(0, "a", prompt="hi", max_new_tokens=8)]
    text = dry_run(one, ConstantPredictor(), ScheduleConfig(), cost, "cpu-default-model", False, 16).describe()
    assert "plan: 1 micro-batch\n" in text
    two = [Request(i, f"r{i}", prompt="hi", max_new_tokens=8) for i in range(2)]
    text = dry_run(two, ConstantPredictor(), ScheduleConfig(batch_size=1), cost, "x", False, 16).describe()
    assert "plan: 2 micro-batches\n" in text


def test_every_dtype_option_takes_the_same_choices() -> None:
    from seqsched.engine.config import DTYPES

    found = {name: action.choices for name, parser in _parsers() for action in parser._actions
             if "--dtype" in action.option_strings}  # fmt: skip
    assert {"seqsched serve", "seqsched calibrate", "seqsched lengths collect", "seqsched run"} <= set(found)
    assert all(tuple(choices or ()) == DTYPES for choices in found.values()), found
