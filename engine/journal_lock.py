"""One writer per journal file: an exclusive lock, held by the daemon (or a CLI command) as it runs.

SQLite would let two processes write one file in turn, but septet's journal keeps counters
and ids in memory (engine.journal), so a second writer would corrupt them. The lock is a
BSD `flock` on the journal file itself, on a descriptor of its own, apart from SQLite's
POSIX locks. That descriptor stays open until the journal is closed: closing any
descriptor of a file drops every POSIX lock the process holds on it, SQLite's included.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from engine.journal import JournalError


@contextlib.contextmanager
def lock_journal(path: str | os.PathLike[str]) -> Iterator[bool]:
    """Try to take the lock (creating the file 0600 when it does not exist); yields whether
    it is held. OSError when the file cannot be opened."""
    fd = os.open(Path(path), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
        else:
            yield True
    finally:
        os.close(fd)


@contextlib.contextmanager
def hold_journal(path: str | os.PathLike[str]) -> Iterator[None]:
    """The daemon's lock for its whole run; JournalError when another process holds it.
    A file that cannot be opened is left to the journal's own sentence."""
    try:
        locking = lock_journal(path)
        held = locking.__enter__()
    except OSError:
        yield
        return
    try:
        if not held:
            raise JournalError(
                f"The journal {path} is in use by another process (a septet daemon, or a"
                " `septet messages`/`septet journal` command working on the file): one"
                " journal takes one writer."
            )
        yield
    finally:
        locking.__exit__(None, None, None)
