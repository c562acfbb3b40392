"""The help formatter of every `modelgate` (sub)command: each flag's help line ends with its default.

It lives in the bottom floor because the server's `serve` and the clients' `bench` and `size` both use it and
share nothing else.
"""

from __future__ import annotations

import argparse


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's `(default: X)` suffix, left off where it says nothing.

    A flag whose default is None has no default: its help says what happens without it instead. A switch
    (`store_true`, `store_false`) is off or on unless given, which its help already says. An empty string
    default shows as `''`, not as nothing.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            return action.help
        if action.default == "" and action.help and "%(default)" not in action.help:
            return action.help + " (default: %(default)r)"
        return super()._get_help_string(action)


def add_command(commands: argparse._SubParsersAction, name: str, help: str, **kwargs) -> argparse.ArgumentParser:
    """A subcommand parser that shows defaults (add_parser does not pass the formatter on to subcommands)."""
    return commands.add_parser(name, help=help, description=help, formatter_class=DefaultsHelpFormatter, **kwargs)
