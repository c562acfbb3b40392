"""The `modelgate` command: `serve` (the server), `bench`, `size` and `tune` (clients that speak to one over the wire).

This module sits above every floor: it is the one place where the server and the clients meet, so neither
imports the other.
"""

from __future__ import annotations

import argparse
import sys

from modelgate.clients.bench.cli import add_bench_command
from modelgate.clients.size.cli import add_size_command
from modelgate.clients.tune.cli import add_tune_command
from modelgate.core.cli_help import DefaultsHelpFormatter
from modelgate.server.cli import add_serve_command


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return args.run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelgate",
        description="A Python inference server in Triton's style.",
        formatter_class=DefaultsHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command")
    add_serve_command(commands)
    add_bench_command(commands)
    add_size_command(commands)
    add_tune_command(commands)
    return parser


if __name__ == "__main__":
    sys.exit(main())
