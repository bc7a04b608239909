"""`septet journal stats|purge`: the journal's size and contents, and its retention run now.

Through the running daemon's admin API, or on the file when no daemon runs (as
`septet messages`). `purge --vacuum` rebuilds the file (SQLite VACUUM, which also turns a
journal made before auto_vacuum on to incremental): only with the daemon stopped.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sqlite3
import sys
from pathlib import Path

from engine.admin import Admin, JournalStats, Purged, counts_line
from engine.admin_api import AdminCall, add_target_arguments, run_cli
from engine.config import ConfigError, load_config
from engine.journal_lock import lock_journal
from engine.retention import SECONDS_PER_DAY

PROG = "septet journal"
DURATION = re.compile(r"(?P<amount>\d+(?:\.\d+)?)(?P<unit>[smhd]?)")
UNIT_S = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": SECONDS_PER_DAY}


def parse_duration(text: str) -> float:
    """'7d', '12h', '30m', '90s' or plain seconds -> seconds (argparse type)."""
    match = DURATION.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration: a number with d, h, m or s (7d, 12h, 90s)"
        )
    return float(match["amount"]) * UNIT_S[match["unit"]]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    stats = sub.add_parser("stats", help="messages by state, file size, oldest message")
    add_target_arguments(stats)
    purge = sub.add_parser("purge", help="delete what ended before a cut now (retention)")
    purge.add_argument(
        "--older-than",
        type=parse_duration,
        metavar="DURATION",
        help="what ended more than this long ago (7d, 12h, 30m, 90s; default: [journal] keep_days)",
    )
    purge.add_argument(
        "--vacuum",
        action="store_true",
        help="then rebuild the file to its size (VACUUM; the daemon must be stopped)",
    )
    add_target_arguments(purge)


def _time(at: float | None) -> str:
    if at is None:
        return "-"
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def render_stats(stats: JournalStats) -> str:
    mib = 1 << 20
    lines = [
        f"journal      {stats.path} (schema {stats.schema_version},"
        f" auto_vacuum {stats.auto_vacuum})",
        f"file         {stats.file_bytes / mib:.1f} MiB, write-ahead log"
        f" {stats.wal_bytes / mib:.1f} MiB, free inside {stats.free_bytes / mib:.1f} MiB",
        f"messages     {stats.messages}",
        *(f"  {status:<11}{count}" for status, count in stats.by_status.items()),
        f"oldest       {stats.oldest_msg_id or '-'} (accepted {_time(stats.oldest_accepted_at)})",
    ]
    return "\n".join(lines)


def render_purged(purged: Purged) -> str:
    line = (
        f"deleted what ended more than {purged.older_than_s:g} s ago: {counts_line(purged.deleted)}"
    )
    return line + ("; file rebuilt (VACUUM)" if purged.vacuumed else "")


def vacuum(path: Path) -> str | None:
    """VACUUM the journal with this process holding its lock; a sentence when it cannot."""
    with lock_journal(path) as locked:
        if not locked:
            return f"The journal {path} is in use by a running daemon: stop it to --vacuum."
        connection = sqlite3.connect(path, isolation_level=None)
        try:
            connection.execute("PRAGMA auto_vacuum = INCREMENTAL")
            connection.execute("VACUUM")
        except sqlite3.Error as error:
            return f"The journal {path} could not be rebuilt: {error}."
        finally:
            connection.close()
    return None


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    del parser
    if args.action == "stats":

        async def stats(admin: Admin) -> JournalStats:
            return await admin.stats()

        call = AdminCall("GET", "/admin/journal/stats", (), stats)
        return run_cli(PROG, args, call, JournalStats, render_stats)
    older_than_s = args.older_than
    if older_than_s is None:
        try:
            keep_days = load_config(args.config).settings.journal.keep_days
        except ConfigError as error:
            for sentence in error.sentences:
                print(f"{PROG}: {sentence}", file=sys.stderr)
            return 2
        if keep_days == 0:
            print(f"{PROG}: [journal] keep_days is 0 (keep forever): give --older-than.")
            return 2
        older_than_s = keep_days * SECONDS_PER_DAY

    async def purge(admin: Admin) -> Purged:
        return await admin.purge(older_than_s)

    call = AdminCall("POST", "/admin/journal/purge", (("older_than_s", repr(older_than_s)),), purge)
    code = run_cli(PROG, args, call, Purged, render_purged)
    if code != 0 or not args.vacuum:
        return code
    problem = vacuum(Path(load_config(args.config).settings.journal.path))
    if problem is not None:
        print(f"{PROG}: {problem}", file=sys.stderr)
        return 1
    print("file rebuilt (VACUUM)")
    return 0
