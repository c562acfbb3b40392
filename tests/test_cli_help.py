"""Every flag of every `modelgate` subcommand has a line of help that shows its default (or, with none, says
what happens without it)."""

from __future__ import annotations

import argparse
import re

import pytest

from modelgate.cli import build_parser
from modelgate.core.cli_help import DefaultsHelpFormatter, add_command

_SWITCHES = (argparse._StoreTrueAction, argparse._StoreFalseAction)
# A flag without a default says what happens without it: "without it, ..." or "default 1 (...)".
_SAYS_WITHOUT = re.compile(r"\b(without|default)\b", re.IGNORECASE)


def _parsers(parser: argparse.ArgumentParser):
    """The parser and every subcommand parser below it, depth first."""
    yield parser
    for action in _actions(parser):
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield from _parsers(child)


def _actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    # argparse has no public list of a parser's arguments; its help is built from this one.
    return parser._actions


def _rendered(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """The action's entry in `--help` as the parser's own formatter writes it, on one line."""
    formatter = parser.formatter_class(prog=parser.prog, width=10_000)
    formatter.add_argument(action)
    return " ".join(formatter.format_help().split())


def _problems(parser: argparse.ArgumentParser) -> list[str]:
    problems = []
    for action in _actions(parser):
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        name = f"{parser.prog} {'/'.join(action.option_strings) or action.dest}"
        text = _rendered(parser, action)
        if not action.help or action.help == argparse.SUPPRESS:
            problems.append(f"{name}: no help")
        elif action.default is None:
            if action.option_strings and not action.required and not _SAYS_WITHOUT.search(text):
                problems.append(f"{name}: no default and no word of what happens without it")
        elif not isinstance(action, _SWITCHES) and not _shows_default(text, action.default):
            problems.append(f"{name}: default {action.default!r} not shown: {text}")
    return problems


def _shows_default(text: str, default) -> bool:
    """`default: 8000` as the formatter appends it, or `default 8000` as a help string may say it."""
    shown = (f"default{colon} {value}" for colon in (":", "") for value in (default, repr(default)))
    return any(phrase.lower() in text.lower() for phrase in shown)


def test_every_flag_of_every_subcommand_has_help_and_shows_its_default():
    problems = [problem for parser in _parsers(build_parser()) for problem in _problems(parser)]
    assert problems == []


def test_the_walk_reaches_every_subcommand():
    progs = {parser.prog for parser in _parsers(build_parser())}
    assert {
        "modelgate serve",
        "modelgate bench llm",
        "modelgate bench tensor",
        "modelgate size memory",
        "modelgate size traffic",
        "modelgate size repository",
    } <= progs


def test_every_subcommand_parser_uses_the_defaults_formatter():
    for parser in _parsers(build_parser()):
        assert issubclass(parser.formatter_class, DefaultsHelpFormatter), parser.prog


@pytest.mark.parametrize(
    "add, problem",
    [
        (lambda p: p.add_argument("--port", type=int, default=8000), "--port: no help"),
        (lambda p: p.add_argument("--port", default=8000, help="port, default %(default)s"), None),
        (lambda p: p.add_argument("--port", default=8000, help="port %(default)s"), "--port: default 8000 not shown"),
        (lambda p: p.add_argument("--url", help="where to send"), "--url: no default and no word"),
        (lambda p: p.add_argument("--url", help="where to send; without it, localhost"), None),
        (lambda p: p.add_argument("--quiet", action="store_true", help="print nothing"), None),
    ],
)
def test_the_check_finds_a_flag_without_help_or_default(add, problem):
    commands = argparse.ArgumentParser(prog="tool").add_subparsers()
    parser = add_command(commands, "run", "run it")
    add(parser)
    found = _problems(parser)
    if problem is None:
        assert found == []
    else:
        assert len(found) == 1 and problem in found[0]


def test_plain_argument_defaults_formatter_shows_the_default_but_a_bare_parser_does_not():
    commands = argparse.ArgumentParser(prog="tool").add_subparsers()
    bare = commands.add_parser("bare")
    bare.add_argument("--port", type=int, default=8000, help="port")
    assert _problems(bare) == ["tool bare --port: default 8000 not shown: --port PORT port"]
    shown = add_command(commands, "shown", "with defaults")
    shown.add_argument("--port", type=int, default=8000, help="port")
    shown.add_argument("--name", default="", help="a name")
    assert _rendered(shown, _actions(shown)[-2]) == "--port PORT port (default: 8000)"
    assert _rendered(shown, _actions(shown)[-1]) == "--name NAME a name (default: '')"
