"""The group-commit writer's transaction statements on a sqlite3 connection: every SQLite store's.

The journal's SQLite backend (engine.journal.sqlite) and the SMPP store (engine.smpp.store)
each give engine.journal.writer a WriterBackend built on this class: BEGIN, one savepoint
name (operations never nest), COMMIT, ROLLBACK, and which sqlite3 errors are failures of
the file or disk rather than of one caller's data.
"""

from __future__ import annotations

import contextlib
import sqlite3

__all__ = ["SqliteTransactions"]


class SqliteTransactions:
    """The group-commit writer's transaction statements on a sqlite3 connection (one
    savepoint name: operations never nest). Shared by every store on SQLite."""

    def begin(self, connection: sqlite3.Connection) -> None:
        connection.execute("BEGIN")

    def savepoint(self, connection: sqlite3.Connection) -> None:
        connection.execute("SAVEPOINT operation")

    def release_savepoint(self, connection: sqlite3.Connection) -> None:
        connection.execute("RELEASE operation")

    def roll_back_to_savepoint(self, connection: sqlite3.Connection) -> None:
        connection.execute("ROLLBACK TO operation")

    def commit(self, connection: sqlite3.Connection) -> None:
        connection.execute("COMMIT")

    def roll_back(self, connection: sqlite3.Connection) -> None:
        if connection.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                connection.execute("ROLLBACK")

    def is_transient(self, error: BaseException) -> bool:
        """None: one writer per file (busy_timeout waits out a reader's lock)."""
        return False

    def is_storage_failure(self, error: BaseException) -> bool:
        """Failures of the file or disk, not of one caller's data: they fail the whole group."""
        return isinstance(error, sqlite3.OperationalError | sqlite3.InternalError) or (
            type(error) is sqlite3.DatabaseError
        )
