"""The durable journal: what the engine stores, behind one interface, one module per backend.

    interface.py      the Journal protocol, its changes (MarkInflight ... StoreEvents) and
                      answers, JournalError, and the state names every backend shares
    writer.py         the group-commit writer thread, generic over a backend's connection
    sqlite.py         SqliteJournal: the embedded default, one SQLite file (WAL)
    sqlite_schema.py  its schema and the migrations from older files

`open_journal` opens one; every public name is re-exported here, so the engine imports
from `engine.journal`.
"""

from engine.feed import AppendEvents
from engine.journal.interface import (
    STATE_NAMES,
    STATUS_OF_OUTCOME,
    Change,
    Duplicate,
    Journal,
    JournalError,
    JournalFullError,
    Listed,
    MarkCharged,
    MarkConfirmed,
    MarkFinal,
    MarkInflight,
    MarkPolled,
    MarkRetry,
    MarkSubmitted,
    MarkUnconfirmed,
    PollDue,
    SchedulePolls,
    StoreEvents,
    StoreOrphanReceipt,
)
from engine.journal.sqlite import SqliteJournal, count_kept_events, count_states, open_journal
from engine.journal.sqlite_schema import SCHEMA_VERSION

__all__ = [
    "SCHEMA_VERSION",
    "STATE_NAMES",
    "STATUS_OF_OUTCOME",
    "AppendEvents",
    "Change",
    "Duplicate",
    "Journal",
    "JournalError",
    "JournalFullError",
    "Listed",
    "MarkCharged",
    "MarkConfirmed",
    "MarkFinal",
    "MarkInflight",
    "MarkPolled",
    "MarkRetry",
    "MarkSubmitted",
    "MarkUnconfirmed",
    "PollDue",
    "SchedulePolls",
    "SqliteJournal",
    "StoreEvents",
    "StoreOrphanReceipt",
    "count_kept_events",
    "count_states",
    "open_journal",
]
