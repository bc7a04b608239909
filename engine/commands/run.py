"""`septet run`: the daemon, on the embedded default or a TOML config.

Exit codes: 0 after a drain (SIGTERM, SIGINT, or `--exit-when-idle`); 2 when it cannot
start — a configuration problem, an address it cannot listen on, a journal, SMPP store or
log file it cannot open — with one sentence per problem on stderr; 1 when something it
can name fails after it started.
"""

from __future__ import annotations

import argparse
import functools
import gc
import sys
from collections.abc import Iterable
from typing import Any, Final

import anyio

from engine.config import (
    ConfigError,
    LoadedConfig,
    Settings,
    for_stdin,
    load_config,
)
from engine.journal import JournalError
from engine.log import LogFile, configure_logging, open_log_output
from engine.smpp.store import StoreError

# The cyclic collector's thresholds while the daemon runs: a young-generation pass every
# 10,000 net allocations, an older one every 20 of those, a full one every 20 of those
# (and only once a quarter of the heap is new, CPython's own rule).
GC_THRESHOLDS: Final = (10_000, 20, 20)

# Failures that are one sentence for people, not a traceback.
KNOWN_FAILURES = (ConfigError, JournalError, StoreError, OSError)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="TOML settings (default: embedded)")
    parser.add_argument(
        "--stdin",
        action="store_true",
        help="read NDJSON messages on stdin, events on stdout; opens no socket listener the"
        " config does not name (docs/operations.md)",
    )
    parser.add_argument(
        "--exit-when-idle",
        action="store_true",
        help="exit once input has ended and every message is final",
    )
    parser.add_argument(
        "--log-format", choices=("json", "console"), help="log format (default: [log] format)"
    )
    parser.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        help="least level logged (default: [log] level)",
    )


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    del parser
    try:
        loaded = load_config(args.config)
    except ConfigError as error:
        return _refused(error.sentences)
    settings = for_stdin(loaded) if args.stdin else loaded.settings
    try:
        log_file = open_log_output(settings.log.file)
    except OSError as error:
        return _refused([f"cannot open the log file {settings.log.file}: {error.strerror}"])
    configure_logging(
        args.log_format or settings.log.format,
        args.log_level or settings.log.level,
        personal_data=settings.log.personal_data,
        output=log_file,
    )
    try:
        return _run(args, loaded, settings, log_file)
    finally:
        if log_file is not None:
            log_file.close()


def _run(
    args: argparse.Namespace, loaded: LoadedConfig, settings: Settings, log: LogFile | None
) -> int:
    from engine.daemon import run_daemon, warn_at_start

    warn_at_start(loaded.warnings)
    started = False

    def on_ready(details: dict[str, Any]) -> None:
        nonlocal started
        del details
        started = True

    try:
        # What is loaded by now (modules, classes, settings) lives as long as the process:
        # frozen, the collector's full passes no longer walk it on every run of the daemon.
        gc.freeze()
        # Every message allocates a few dozen container objects, nearly all freed by their
        # reference counts; at Python's default of 700 the collector's young pass ran every
        # ~16 messages and walked every request in flight each time.
        gc.set_threshold(*GC_THRESHOLDS)
        daemon = functools.partial(
            run_daemon,
            settings,
            use_stdin=args.stdin,
            exit_when_idle=args.exit_when_idle,
            ready=on_ready,
            reopen_log=log.reopen if log is not None else None,
        )
        # anyio's run on uvloop, not uvloop.run: it tells sniffio which library runs, so
        # the anyio calls of every message (events, cancel scopes, checkpoints, the clock)
        # do not sniff for it each time (asyncio.current_task and an import per call).
        return anyio.run(daemon, backend="asyncio", backend_options={"use_uvloop": True})
    except BaseException as error:
        # A failure inside the daemon's task group arrives wrapped in a group: one
        # sentence each still, never a traceback, for every failure we can name.
        sentences = _known_failures(error)
        if sentences is None:
            raise
        return _refused(sentences) if not started else _failed(sentences)


def _refused(sentences: Iterable[str]) -> int:
    """Could not start: one line per problem, exit 2."""
    for sentence in sentences:
        print(f"septet run: {sentence}", file=sys.stderr)
    return 2


def _failed(sentences: Iterable[str]) -> int:
    """Failed after it started: one line per failure, exit 1."""
    for sentence in sentences:
        print(f"septet run: {sentence}", file=sys.stderr)
    return 1


def _known_failures(error: BaseException) -> list[str] | None:
    """The sentences of an error (or a group) made only of failures we can name, else None."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [error]
    while pending:
        current = pending.pop()
        if isinstance(current, BaseExceptionGroup):
            pending.extend(reversed(current.exceptions))
        else:
            leaves.append(current)
    if not leaves or not all(isinstance(leaf, KNOWN_FAILURES) for leaf in leaves):
        return None
    sentences: list[str] = []
    for leaf in leaves:
        parts = leaf.sentences if isinstance(leaf, ConfigError) else (str(leaf),)
        sentences.extend(part for part in parts if part not in sentences)
    return sentences
