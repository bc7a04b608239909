"""`septet journal stats|purge|migrate`: the journal's size and contents, its retention run
now, and its schema brought to this septet's.

Through the running daemon's admin API, or on the file when no daemon runs (as
`septet messages`). `purge --vacuum` rebuilds the file (SQLite VACUUM, which also turns a
journal made before auto_vacuum on to incremental): only with the daemon stopped.

`migrate` runs what `septet run` runs when it opens an older journal (the MIGRATIONS of
engine.journal.sqlite_schema or engine.journal.postgres_schema), as a step of its own:
before a cluster's nodes start on an upgraded septet, or to see (`--check`) whether a
journal needs it. A new journal is created at the current schema. A SQLite journal only
with no daemon holding it; a PostgreSQL one under the schema's advisory lock
(engine.journal.postgres_schema).
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sqlite3
import sys
from pathlib import Path

import anyio

from engine.admin import Admin, JournalStats, Purged, counts_line
from engine.admin_api import AdminCall, add_target_arguments, run_cli
from engine.config import ConfigError, load_config
from engine.journal import JournalError
from engine.journal.sqlite import open_sqlite_journal
from engine.journal.sqlite_schema import SCHEMA_VERSION
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
    migrate = sub.add_parser(
        "migrate", help="bring the journal's schema to this septet's (no daemon may hold it)"
    )
    migrate.add_argument(
        "--check",
        action="store_true",
        help="only say where the schema stands: exit 0 when current, 1 when it needs migrating",
    )
    migrate.add_argument("--config", metavar="FILE", help="the daemon's config file (its journal)")


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
    if args.action == "migrate":
        return run_migrate(args)
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


def run_migrate(args: argparse.Namespace) -> int:
    """`septet journal migrate [--check]`: one line saying what was (or would be) done."""
    try:
        settings = load_config(args.config).settings
    except ConfigError as error:
        for sentence in error.sentences:
            print(f"{PROG}: {sentence}", file=sys.stderr)
        return 2
    if settings.journal.backend == "postgresql" and settings.journal.dsn is not None:
        return migrate_postgres(settings.journal.dsn, check=args.check)
    path = Path(settings.journal.path)
    try:
        found = stored_schema_version(path)
    except MigrationRefusedError as error:
        print(f"{PROG}: {error.sentence}", file=sys.stderr)
        return 1
    if found == SCHEMA_VERSION:
        print(f"journal {path} is at schema {SCHEMA_VERSION}, this septet's: nothing to migrate")
        return 0
    what = "created" if found is None else f"migrated from schema {found}"
    if args.check:
        would = "would be created" if found is None else f"is at schema {found}"
        print(f"journal {path} {would}: migrate brings it to schema {SCHEMA_VERSION}")
        return 1
    problem = anyio.run(migrate_journal, path, settings.journal.synchronous)
    if problem is not None:
        print(f"{PROG}: {problem}", file=sys.stderr)
        return 1
    print(f"journal {path} {what} to schema {SCHEMA_VERSION}")
    return 0


def migrate_postgres(dsn: str, *, check: bool) -> int:
    """`migrate` on the PostgreSQL journal: the schema's version read, and brought to this
    septet's under the schema's advisory lock (nodes that start meanwhile wait for it)."""
    # PostgreSQL's client is an extra (septet[postgresql]): imported only when used.
    from engine.journal.postgres import DatabaseError, PostgresLink, describe_dsn, reason_of
    from engine.journal.postgres_schema import SCHEMA_VERSION as CURRENT
    from engine.journal.postgres_schema import create_or_migrate, schema_version

    try:
        where = describe_dsn(dsn)
    except JournalError as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 2
    link = PostgresLink(dsn, where)
    try:
        found = schema_version(link.ready())
        if found > CURRENT:
            raise JournalError(
                f"The journal at {where} is at schema {found}, newer than this septet's"
                f" ({CURRENT}): run the septet that wrote it."
            )
        if found == CURRENT:
            print(f"journal at {where} is at schema {CURRENT}, this septet's: nothing to migrate")
            return 0
        if check:
            would = "would be created" if found == 0 else f"is at schema {found}"
            print(f"journal at {where} {would}: migrate brings it to schema {CURRENT}")
            return 1
        create_or_migrate(link.ready(), where)
    except DatabaseError as error:
        print(
            f"{PROG}: The journal at {where} cannot be reached: {reason_of(error)}.",
            file=sys.stderr,
        )
        return 1
    except JournalError as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 1
    finally:
        link.close()
    what = "created" if found == 0 else f"migrated from schema {found}"
    print(f"journal at {where} {what} to schema {CURRENT}")
    return 0


class MigrationRefusedError(Exception):
    def __init__(self, sentence: str) -> None:
        super().__init__(sentence)
        self.sentence = sentence


def stored_schema_version(path: Path) -> int | None:
    """The schema version a journal file holds (None: no journal there yet); refused with a
    sentence when the file is not a journal or is newer than this septet."""
    if not path.exists():
        return None
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            version = int(connection.execute("PRAGMA user_version").fetchone()[0])
        finally:
            connection.close()
    except sqlite3.Error as error:
        raise MigrationRefusedError(f"The journal {path} cannot be read: {error}.") from None
    if version > SCHEMA_VERSION:
        raise MigrationRefusedError(
            f"The journal {path} is at schema {version}, newer than this septet's"
            f" ({SCHEMA_VERSION}): run the septet that wrote it."
        )
    return version if version > 0 else None


async def migrate_journal(path: Path, synchronous: str) -> str | None:
    """Open the journal with this process holding its lock (opening migrates it); a sentence
    when it cannot."""
    try:
        with lock_journal(path) as locked:
            if not locked:
                return f"The journal {path} is in use by a running daemon: stop it to migrate."
            try:
                async with open_sqlite_journal(path, synchronous=synchronous) as journal:
                    # Opening migrated it; the count read back proves the schema answers.
                    await journal.pending_count()
            except JournalError as error:
                return str(error)
    except OSError as error:
        return f"Cannot open the journal {path}: {error.strerror}."
    return None
