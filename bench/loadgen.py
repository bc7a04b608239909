"""The pipeline bench's load generator: pre-encoded NDJSON in, septet's events out, counted.

It must stay cheap (it shares core 0 with the simulators): every input line is encoded
before the clock starts and sent in large writes; events are decoded with one msgspec
decoder a chunk of lines at a time (`decode_lines`), keeping only `event`, `msg_id` and
`ts`. Writing and reading run at the same time on one connection, so the daemon's
backpressure (docs/design.md: bounded streams push back to the client) never deadlocks us.

    lines = build_lines(LoadShape(...), count)          # before the clock starts
    tally = await feed_and_collect("127.0.0.1", port, lines, goal, deadline_s=...)
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import Callable, Sequence
from typing import Literal

import msgspec

# Destination prefixes the bench routes by (docs/design.md routing by country code). Each
# makes a number of the country's possible length from a running index, so every
# recipient is distinct (SMS Club and Route Mobile can reject a repeated phone+text).
NUMBER_FORMATS: dict[str, str] = {
    "dsc": "+25078{:07d}",  # Rwanda: 9 national digits
    "smsclub": "+38050{:07d}",  # Ukraine: 9 national digits
    "bsg": "+4477{:08d}",  # United Kingdom mobile: 10 national digits
    "routemobile": "+9198{:08d}",  # India mobile: 10 national digits
}
ROUTE_PREFIXES: dict[str, str] = {"dsc": "250", "smsclub": "380", "bsg": "44", "routemobile": "91"}

TextMode = Literal["distinct", "same"]
EncodingMode = Literal["gsm", "ucs2", "mixed"]

_GSM_TEXT = "Your septet bench code is {}. Thank you for testing."
# Cyrillic is outside GSM 03.38 (3GPP TS 23.038 6.2.1), so these lines go out as UCS-2.
_UCS2_TEXT = "Ваш код перевірки septet: {}. Дякуємо!"


class LoadShape(msgspec.Struct, frozen=True, kw_only=True):
    """What the input lines look like: bridges, recipients per line, texts, encodings."""

    bridges: tuple[str, ...] = ("dsc", "routemobile")
    recipients_per_line: int = 1
    texts: TextMode = "distinct"
    encoding: EncodingMode = "gsm"
    schedule_at: str | None = None  # RFC 3339; set: every message waits in the journal
    wait_dlr: bool = True
    # False: lines say "dlr": false, so no delivery report is asked for, matched or
    # journaled (the submit-only figures, comparable with Kannel's store-and-forward).
    request_dlr: bool = True
    track: bool = True  # keep per-message timestamps (off for the million-message backlog)


class _SubmissionLine(msgspec.Struct, omit_defaults=True):
    to: str | list[str]
    text: str
    schedule_at: str | None = None
    dlr: bool = True


_line_encoder = msgspec.json.Encoder()


def _text_for(shape: LoadShape, index: int) -> str:
    ucs2 = shape.encoding == "ucs2" or (shape.encoding == "mixed" and index % 2 == 1)
    template = _UCS2_TEXT if ucs2 else _GSM_TEXT
    if shape.texts == "same":
        # One text per encoding, so every line of a bridge can share a batch.
        return template.format(4242)
    return template.format(index)


def build_lines(shape: LoadShape, messages: int) -> list[bytes]:
    """`messages` recipients' worth of NDJSON lines, bridges taken in turn, each line whole.

    Bridges rotate per line, so a bridge gets `recipients_per_line` recipients at a time
    and every recipient number is used once in the run.
    """
    lines: list[bytes] = []
    per_line = shape.recipients_per_line
    next_number = dict.fromkeys(shape.bridges, 0)
    for line_index in range((messages + per_line - 1) // per_line):
        bridge = shape.bridges[line_index % len(shape.bridges)]
        count = min(per_line, messages - line_index * per_line)
        number_format = NUMBER_FORMATS[bridge]
        start = next_number[bridge]
        next_number[bridge] = start + count
        recipients = [number_format.format(start + offset) for offset in range(count)]
        line = _SubmissionLine(
            to=recipients[0] if per_line == 1 else recipients,
            text=_text_for(shape, line_index),
            schedule_at=shape.schedule_at,
            dlr=shape.request_dlr,
        )
        lines.append(_line_encoder.encode(line) + b"\n")
    return lines


def chunk_lines(lines: Sequence[bytes], chunk_bytes: int = 256 * 1024) -> list[bytes]:
    """Join lines into writes of about `chunk_bytes` (large writes keep the sender cheap)."""
    chunks: list[bytes] = []
    pending: list[bytes] = []
    size = 0
    for line in lines:
        pending.append(line)
        size += len(line)
        if size >= chunk_bytes:
            chunks.append(b"".join(pending))
            pending, size = [], 0
    if pending:
        chunks.append(b"".join(pending))
    return chunks


class _EventLine(msgspec.Struct):
    """The fields of an output event the bench reads; the rest are skipped unparsed."""

    event: str
    ts: dt.datetime
    msg_id: str | None = None
    error: str | None = None
    bridge: str | None = None


_event_decoder = msgspec.json.Decoder(_EventLine)


class Tally:
    """What came back: counts per event, and (when tracking) timestamps per message."""

    def __init__(self, *, track: bool) -> None:
        self.track = track
        self.accepted = 0
        self.rejected_lines = 0
        self.submitted = 0
        self.failed = 0
        self.dlr = 0
        self.errors: dict[str, int] = {}
        self.accepted_at: dict[str, float] = {}
        self.bridge_of: dict[str, str] = {}
        self.submitted_at: dict[str, float] = {}
        self.dlr_at: dict[str, float] = {}
        self.failed_ids: set[str] = set()
        self.all_submitted_at: float | None = None  # client clock, when the goal's submit part met
        self.finished_at: float | None = None  # client clock, when the whole goal was met

    def add(self, chunk: bytes) -> None:
        for event in _event_decoder.decode_lines(chunk):
            kind = event.event
            if kind == "accepted":
                self.accepted += 1
                if self.track and event.msg_id is not None:
                    self.accepted_at[event.msg_id] = event.ts.timestamp()
                    self.bridge_of[event.msg_id] = event.bridge or "?"
            elif kind == "submitted":
                self.submitted += 1
                if self.track and event.msg_id is not None:
                    self.submitted_at[event.msg_id] = event.ts.timestamp()
            elif kind == "dlr":
                if event.msg_id is not None and event.msg_id not in self.dlr_at:
                    self.dlr += 1
                    # Only the first report of a message counts (later ones are updates).
                    self.dlr_at[event.msg_id] = event.ts.timestamp() if self.track else 0.0
            elif kind == "failed":
                self.failed += 1
                if event.msg_id is not None:
                    self.failed_ids.add(event.msg_id)
                self._count_error(event.error)
            elif kind == "rejected":
                self.rejected_lines += 1
                self._count_error(event.error)

    def _count_error(self, error: str | None) -> None:
        key = (error or "unknown")[:120]
        if len(self.errors) < 20 or key in self.errors:
            self.errors[key] = self.errors.get(key, 0) + 1


class Goal(msgspec.Struct, frozen=True, kw_only=True):
    """When a run is over: every message accepted, then submitted (or failed), then reported."""

    messages: int
    recipients_per_line: int
    until: Literal["accepted", "submitted", "dlr"]

    def submits_done(self, tally: Tally) -> bool:
        rejected = tally.rejected_lines * self.recipients_per_line
        if self.until == "accepted":
            return tally.accepted + rejected >= self.messages
        return tally.submitted + tally.failed + rejected >= self.messages

    def done(self, tally: Tally) -> bool:
        if not self.submits_done(tally):
            return False
        if self.until != "dlr":
            return True
        rejected = tally.rejected_lines * self.recipients_per_line
        return tally.dlr + tally.failed + rejected >= self.messages


async def feed_and_collect(
    host: str,
    port: int,
    chunks: Sequence[bytes],
    tally: Tally,
    goal: Goal,
    *,
    deadline_s: float,
    on_progress: Callable[[Tally], None] | None = None,
) -> bool:
    """Send every chunk on one connection while reading events; True when `goal` was met.

    Gives up after `deadline_s` (the caller reports what never came back as lost). The
    connection stays open until the goal is met: the daemon writes later events
    (submitted, dlr) to the connection a message came in on.
    """
    reader, writer = await asyncio.open_connection(host, port, limit=1 << 22)

    async def feed() -> None:
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()

    async def collect() -> None:
        tail = b""
        while not goal.done(tally):
            data = await reader.read(1 << 20)
            if not data:
                raise ConnectionError("the daemon closed the connection before the goal")
            cut = data.rfind(b"\n")
            if cut < 0:
                tail += data
                continue
            tally.add(tail + data[: cut + 1])
            tail = data[cut + 1 :]
            if tally.all_submitted_at is None and goal.submits_done(tally):
                tally.all_submitted_at = time.time()
            if on_progress is not None:
                on_progress(tally)
        tally.finished_at = time.time()
        if tally.all_submitted_at is None:
            tally.all_submitted_at = tally.finished_at

    feeder = asyncio.ensure_future(feed())
    try:
        async with asyncio.timeout(deadline_s):
            await collect()
        await feeder
        return True
    except TimeoutError:
        return False
    finally:
        feeder.cancel()
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()
