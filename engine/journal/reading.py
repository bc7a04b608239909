"""What every backend's JournalReader shares: a stored message from its row, a page from rows.

Both backends keep a message in the same columns (the changing ones beside a msgpack body
written at accept), so a reader's queries select SQL_COLUMNS and hand the rows here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Final

import msgspec

from engine.journal.interface import STATE_NAMES, MessagePage, StoredMessage
from engine.models import Message

__all__ = ["SCAN_ROWS", "SQL_COLUMNS", "TOP", "page_from_rows", "stored_from_row"]

message_decoder: Final = msgspec.msgpack.Decoder(Message)

# The columns of a StoredMessage, in `stored_from_row`'s order.
SQL_COLUMNS: Final = (
    "msg_id, due_at, attempt, bridge_index, provider_id, maybe_sent, body, status,"
    " submitted_at, final_at, code, error, submit_cost, submit_currency, state"
)
# Rows one page may look at, whatever its filters: a page that finds fewer than it asked
# for within them still hands back a cursor to go on from.
SCAN_ROWS: Final = 5000
# No msg_id reaches this: the cursor of a first page.
TOP: Final = 1 << 62


def stored_from_row(row: Sequence[Any]) -> StoredMessage:
    """A row of SQL_COLUMNS as the message it holds now."""
    message = message_decoder.decode(row[6])
    message.due_at = row[1]
    message.attempt = row[2]
    message.bridge_index = row[3]
    message.provider_id = row[4]
    message.maybe_sent_at = float(row[5] or 0.0)
    message.state = STATE_NAMES[row[14]]
    return StoredMessage(
        message=message,
        status=str(row[7] or ""),
        submitted_at=row[8],
        final_at=row[9],
        code=row[10],
        error=row[11],
        provider_cost=row[12],
        provider_currency=row[13],
    )


def page_from_rows(
    rows: Iterable[Sequence[Any]],
    cursor: int,
    *,
    status: str | None,
    since: float | None,
    limit: int,
) -> MessagePage:
    """A page from up to SCAN_ROWS rows read newest first below `cursor` (SQL_COLUMNS):
    those in `status`, accepted at or after `since` (msg_ids grow with accept time, so the
    scan stops at the first one older), at most `limit`."""
    found: list[StoredMessage] = []
    scanned = 0
    last = cursor
    for row in rows:
        scanned += 1
        last = int(row[0])
        stored = stored_from_row(row)
        if since is not None and stored.message.accepted_at < since:
            return MessagePage(found, None)
        if status is not None and stored.status != status:
            continue
        found.append(stored)
        if len(found) == limit:
            return MessagePage(found, last)
    return MessagePage(found, last if scanned == SCAN_ROWS else None)
