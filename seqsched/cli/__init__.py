"""seqsched: length-aware LLM batch inference. Predict each response's length before
generating it, then schedule requests of similar length together (static micro-batches,
or an order, priorities and KV admission for vLLM and other continuous engines).

Start with `seqsched bench` (the built-in model and workload, no download) or
`seqsched run requests.jsonl -o results.jsonl`."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from seqsched.cli.help import HelpFormatter

EXIT_DISK_FULL = 4  # the journal keeps what finished; --resume after freeing space

# subcommand -> module in seqsched.cli; each module has add_parser(subparsers) and main(args)
SUBCOMMANDS = ["run", "serve", "bench", "simulate", "calibrate", "lengths", "predictor"]


class UsageError(Exception):
    """Bad input from the user: printed as one clear line, exit status 2."""


def check_output(path: object, option: str = "-o/--output") -> None:
    """Fail now, not after the model loads, when an output cannot be written."""
    import os
    from pathlib import Path

    if path is None or str(path) == "-":
        return
    target = Path(str(path))
    if target.is_dir():
        raise UsageError(f"{option} {target} is a directory, not a file")
    parent = target.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise UsageError(f"{option} {target}: cannot write in {parent}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seqsched", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"seqsched {_version()}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"seqsched.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"seqsched.cli.{name}":
                raise
            continue
        module.add_parser(subparsers)
    return parser


def _subparser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The deepest (sub)command parser the arguments chose: ``run``, ``lengths collect``, ..."""
    while True:
        actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        chosen = getattr(args, actions[0].dest, None) if actions else None
        if chosen is None or not isinstance(actions[0].choices, dict) or chosen not in actions[0].choices:
            return parser
        parser = actions[0].choices[chosen]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("seqsched")
    except PackageNotFoundError:
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # argparse would print the top-level usage; the subcommand's says more
        _subparser(parser, args).error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        return int(args.func(args) or 0)
    except OSError as e:
        from seqsched.data.atomic import is_disk_full

        if is_disk_full(e):
            print(f"seqsched {args.command}: error: disk full: {e} (finished answers stay in the journal: free "
                  "space, then --resume)", file=sys.stderr)  # fmt: skip
            return EXIT_DISK_FULL
        print(f"seqsched {args.command}: error: {e}", file=sys.stderr)
        return 2
    except (UsageError, ValueError, KeyError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"seqsched {args.command}: error: {message}", file=sys.stderr)
        return 2
