"""The journal and SMPP store files (numbers, texts) are created readable by their owner only."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def create_private(path: str | os.PathLike[str]) -> None:
    """Create `path` empty with mode 0600 when it does not exist (an existing file keeps its
    mode). An empty file is an empty SQLite database, and SQLite gives the -wal and -shm
    files it makes beside a database the database file's mode, so all three stay private."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(Path(path), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
