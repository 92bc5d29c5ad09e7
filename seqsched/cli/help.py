"""One help style for every subcommand: descriptions as written, and each option's default
shown when it has one (never "default: None")."""

from __future__ import annotations

import argparse
import textwrap


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "%(default)" in text or not action.option_strings:
            return text
        if action.default is None or action.default is False or action.default is argparse.SUPPRESS:
            return text
        return text + " (default: %(default)s)"

    def _split_lines(self, text: str, width: int) -> list[str]:
        """As argparse's, but a hyphenated word (``least-work``, ``--max-tokens``) is never
        split across lines."""
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)
