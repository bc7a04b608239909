"""`septet run`: the daemon, on the embedded default or a TOML config."""

from __future__ import annotations

import argparse
import gc
import sys

import structlog

from engine.config import ConfigError, load_settings, notices
from engine.journal import JournalError
from engine.log import configure_logging
from engine.smpp.store import StoreError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="TOML settings (default: embedded)")
    parser.add_argument(
        "--stdin", action="store_true", help="read NDJSON messages on stdin, events on stdout"
    )
    parser.add_argument(
        "--exit-when-idle",
        action="store_true",
        help="exit once input has ended and every message is final",
    )
    parser.add_argument(
        "--log-format", choices=("json", "console"), default="json", help="stderr log format"
    )
    parser.add_argument(
        "--log-level", choices=("debug", "info", "warning", "error"), default="info"
    )


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    del parser
    configure_logging(args.log_format, args.log_level)
    try:
        settings = load_settings(args.config)
    except ConfigError as error:
        print(f"septet run: {error}", file=sys.stderr)
        return 2
    # Again, now that the settings say whether personal data may be logged.
    configure_logging(args.log_format, args.log_level, personal_data=settings.log.personal_data)
    for notice in notices(settings):
        structlog.get_logger("septet.config").warning("config_deprecated", notice=notice)
    from engine.daemon import run_daemon

    try:
        import uvloop

        # What is loaded by now (modules, classes, settings) lives as long as the process:
        # frozen, the collector's full passes no longer walk it on every run of the daemon.
        gc.freeze()
        return uvloop.run(
            run_daemon(settings, use_stdin=args.stdin, exit_when_idle=args.exit_when_idle)
        )
    except (JournalError, StoreError, OSError) as error:
        print(f"septet run: {error}", file=sys.stderr)
        return 1
    except BaseExceptionGroup as group:
        # A failure inside the daemon's task group (a corrupt SMPP store, a journal that
        # cannot be opened) arrives wrapped: one sentence still, never a traceback.
        sentence = _known_failure(group)
        if sentence is None:
            raise
        print(f"septet run: {sentence}", file=sys.stderr)
        return 1


def _known_failure(group: BaseExceptionGroup[BaseException]) -> str | None:
    """The first sentence of a group made only of failures we can name, else None."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        error = pending.pop()
        if isinstance(error, BaseExceptionGroup):
            pending.extend(reversed(error.exceptions))
        else:
            leaves.append(error)
    known = (JournalError, StoreError, OSError)
    if not leaves or not all(isinstance(error, known) for error in leaves):
        return None
    return str(leaves[0])
