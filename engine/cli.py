"""`septet` command line: one subcommand per module in engine/commands/.

Exit codes: 0 success, 1 failure, 2 bad usage (argparse's own convention for usage errors).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import sys
from collections.abc import Sequence

# subcommand name -> (module under engine.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("run", "run the daemon (ingress, journal, dispatch, delivery reports)"),
    "send": ("send", "submit messages to a running daemon and print its events"),
    "segment": ("segment", "show encoding, parts, units and cost of a text"),
    "simulate": ("simulate", "serve provider simulators standalone"),
    "providers": ("providers", "ask the providers' accounts: balance or sender IDs"),
    "config": ("config", "print an example configuration, or check a configuration file"),
    "messages": ("messages", "list, show, retry or cancel the journal's messages"),
    "journal": ("journal", "the journal's stats, its retention run now (purge), its migration"),
    "cluster": ("cluster", "the nodes on the journal: heartbeats, leases, backlog (status)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="septet", description="septet: a high-throughput async SMS engine."
    )
    parser.add_argument("--version", action="version", version=f"septet {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(f"engine.commands.{module_name}")
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(command_parser)
        command_parser.set_defaults(handler=module.run)
    return parser


def _version() -> str:
    try:
        return importlib.metadata.version("septet")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args, parser)
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
