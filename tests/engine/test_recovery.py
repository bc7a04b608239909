"""engine.recovery against a real journal: what a restart does with messages left in
flight, and how the report-deadline sweep ends messages whose report never came.

Each test reads the journal's rows afterwards (a second SQLite connection, as an operator
would) and the events a small recording emitter saw.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, Final, NamedTuple

import anyio
import msgspec
import pytest

from bridges.base import BridgeDriver, BridgeSettings
from bridges.bsg import BsgDriver
from bridges.dsc import DscDriver
from bridges.smsclub import SmsClubDriver
from engine import lifecycle, recovery
from engine.journal import Change, JournalError, MarkRetry, MarkSubmitted, MarkUnconfirmed
from engine.journal.sqlite import SqliteJournal, open_sqlite_journal
from engine.models import DeliveryReport, Event, Failed, Message, RetryEvent, StatusEvent
from engine.recovery import end_overdue, recover_inflight, serve_report_deadlines
from engine.retry import RetryPolicy

pytestmark = pytest.mark.anyio

NOW: Final = 1_000_000.0
REPORT_TIMEOUT_S: Final = 3600.0
POLICY: Final = RetryPolicy()  # 0.5 s × 2^(k-1), 8 attempts, 120 s window, 10 s margin


def drivers() -> dict[str, BridgeDriver]:
    """One bridge per idempotency: dsc none, bsg by reference, smsclub duplicate window."""
    return {
        "dsc": DscDriver(
            BridgeSettings(
                base_url="http://127.0.0.1:9",
                credentials={"api_key": "k", "username": "u", "password": "p"},
            )
        ),
        "bsg": BsgDriver(
            BridgeSettings(base_url="http://127.0.0.1:9", credentials={"api_key": "k"})
        ),
        "smsclub": SmsClubDriver(
            BridgeSettings(base_url="http://127.0.0.1:9", credentials={"token": "t"})
        ),
    }


def price(message: Message, bridge: str) -> tuple[float, str]:
    return 0.05, "EUR"


class RecordingEmitter:
    """Keeps every event with its origin; `log`, when given, also gets an "emit" line."""

    def __init__(self, log: list[str] | None = None) -> None:
        self.emitted: list[tuple[str, Event]] = []
        self._log = log

    def emit(self, origin: str, event: Event) -> None:
        self.emitted.append((origin, event))
        if self._log is not None:
            self._log.append("emit")

    def of(self, msg_id: str) -> list[Event]:
        return [event for _, event in self.emitted if event.msg_id == msg_id]


class LoggingJournal:
    """The real journal, its commits written into `log` (to order them against events),
    and `record` made to fail on demand."""

    def __init__(self, journal: SqliteJournal, log: list[str], *, fail: bool = False) -> None:
        self.journal = journal
        self.log = log
        self.fail = fail

    async def inflight(self) -> list[Message]:
        return await self.journal.inflight()

    async def report_overdue(self, now: float, limit: int) -> list[Message]:
        return await self.journal.report_overdue(now, limit)

    async def record(self, changes: Sequence[Change]) -> None:
        if self.fail:
            self.log.append("record failed")
            raise JournalError("The journal /tmp/septet.db cannot be written: disk I/O error.")
        await self.journal.record(changes)
        self.log.append(f"record {len(changes)}")


class Told:
    """The `on_final` callback: (bridge, state, seconds since the claim) per message."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, float | None]] = []

    def __call__(self, bridge: str, state: str, seconds: float | None) -> None:
        self.calls.append((bridge, state, seconds))


class Row(NamedTuple):
    """The journal's own columns for one message."""

    state: int  # 0 accepted, 1 inflight, 2 submitted, 3 final
    due_at: float
    attempt: int
    bridge_index: int
    maybe_sent: float
    provider_id: str | None
    retry_reason: str | None
    outcome: str | None
    code: str | None
    error: str | None


def read_row(path: Path, msg_id: str) -> Row:
    with sqlite3.connect(path) as connection:
        found = connection.execute(
            "SELECT state, due_at, attempt, bridge_index, maybe_sent, provider_id, retry_reason,"
            " outcome, code, error FROM messages WHERE msg_id = ?",
            (msg_id,),
        ).fetchone()
    assert found is not None
    return Row(*found)


def new_message(bridge: str, **changes: Any) -> Message:
    message = Message(
        msg_id="",
        reference="",
        origin="client-1",
        client_ref=None,
        to="+380501234567",
        sender="ACME",
        text="Hello",
        encoding="GSM-7",
        segments=1,
        cost=0.02,
        currency="USD",
        bridges=(bridge,),
        accepted_at=NOW - 3600,
        due_at=NOW - 3600,
    )
    return msgspec.structs.replace(message, **changes)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "septet.db"


@pytest.fixture
async def journal(path: Path) -> AsyncIterator[SqliteJournal]:
    async with open_sqlite_journal(path) as opened:
        yield opened


async def left_in_flight(
    journal: SqliteJournal,
    bridge: str,
    *,
    inflight_at: float,
    maybe_sent_at: float = 0.0,
    attempt: int = 0,
    **changes: Any,
) -> Message:
    """A message claimed for a request at `inflight_at` that never came back: after
    `attempt` earlier attempts, the first that may have reached the provider at
    `maybe_sent_at`."""
    [group] = await journal.accept([[new_message(bridge, **changes)]])
    assert isinstance(group, list)
    [message] = group
    if attempt:
        await journal.record(
            [
                MarkRetry(
                    msg_ids=[message.msg_id],
                    due_at=inflight_at,
                    attempt=attempt,
                    bridge_index=0,
                    reason="an earlier attempt",
                    maybe_sent_at=maybe_sent_at,
                )
            ]
        )
        message = (await journal.get([message.msg_id]))[message.msg_id]
    [claimed] = await journal.claim([message], 0, inflight_at)
    return claimed


async def recover(journal: recovery.RecoveryJournal, events: RecordingEmitter) -> dict[str, int]:
    return await recover_inflight(
        journal,
        drivers(),
        events,
        policy=POLICY,
        price=price,
        report_timeout_s=REPORT_TIMEOUT_S,
        clock=lambda: NOW,
    )


# ── recover_inflight ───────────────────────────────────────────────────────────────


async def test_nothing_in_flight_records_and_announces_nothing(journal: SqliteJournal) -> None:
    log: list[str] = []
    events = RecordingEmitter(log)
    assert await recover(LoggingJournal(journal, log), events) == {}
    assert log == []


async def test_each_bridge_resends_only_where_its_provider_deduplicates(
    journal: SqliteJournal, path: Path
) -> None:
    none = await left_in_flight(journal, "dsc", inflight_at=NOW - 30)
    reference = await left_in_flight(journal, "bsg", inflight_at=NOW - 30)
    inside = await left_in_flight(
        journal, "smsclub", inflight_at=NOW - 5, attempt=1, maybe_sent_at=NOW - 60
    )
    past = await left_in_flight(
        journal, "smsclub", inflight_at=NOW - 5, attempt=1, maybe_sent_at=NOW - 200
    )
    gone = await left_in_flight(journal, "retired", inflight_at=NOW - 30)  # no driver now
    events = RecordingEmitter()

    tally = await recover(journal, events)

    assert tally == {"unconfirmed": 3, "scheduled": 2}
    assert await journal.inflight() == []
    no_idempotency = lifecycle.describe(lifecycle.NoSafeResend("no_idempotency"))
    window_passed = lifecycle.describe(lifecycle.NoSafeResend("window_passed"))
    crash = lifecycle.describe(
        lifecycle.TransportFailure(
            kind="crash", text=lifecycle.describe(lifecycle.CrashedInFlight()), maybe_sent=True
        )
    )
    # Unconfirmed: submitted in the journal, no provider id, its deadline in due_at.
    for message, error in [(none, no_idempotency), (gone, no_idempotency), (past, window_passed)]:
        row = read_row(path, message.msg_id)
        assert (row.state, row.provider_id, row.outcome, row.error) == (2, None, None, error)
        assert row.due_at == NOW + REPORT_TIMEOUT_S
        assert row.maybe_sent > 0
        [status] = events.of(message.msg_id)
        assert isinstance(status, StatusEvent)
        assert (status.state, status.final, status.provider_status) == ("UNKNOWN", False, error)
    assert read_row(path, past.msg_id).maybe_sent == NOW - 200  # still the first attempt
    # Scheduled on the same bridge: the next attempt's number, the crash as the reason.
    for message, due_at, attempt in [(reference, NOW + 0.5, 1), (inside, NOW + 1, 2)]:
        row = read_row(path, message.msg_id)
        assert (row.state, row.due_at, row.attempt, row.bridge_index) == (0, due_at, attempt, 0)
        assert (row.retry_reason, row.outcome) == (crash, None)
        assert row.maybe_sent > 0
        [retry] = events.of(message.msg_id)
        assert isinstance(retry, RetryEvent)
        assert (retry.attempt, retry.at.timestamp(), retry.reason) == (attempt + 1, due_at, crash)
    assert read_row(path, inside.msg_id).maybe_sent == NOW - 60  # the window's start kept
    # What the journal now holds reads back as the state the step announced.
    stored = await journal.get([m.msg_id for m in (none, reference, inside, past, gone)])
    assert [lifecycle.state_of(stored[m.msg_id], NOW) for m in (none, reference, inside)] == [
        lifecycle.State.UNCONFIRMED,
        lifecycle.State.SCHEDULED,
        lifecycle.State.SCHEDULED,
    ]


async def test_the_window_counts_from_the_first_attempt_not_the_crashed_one(
    journal: SqliteJournal, path: Path
) -> None:
    # The crashed resend went out 1 s before the restart, but the first attempt that may
    # have reached SMS Club was 115 s ago: a resend now could land after its window.
    message = await left_in_flight(
        journal, "smsclub", inflight_at=NOW - 1, attempt=1, maybe_sent_at=NOW - 115
    )
    events = RecordingEmitter()
    assert await recover(journal, events) == {"unconfirmed": 1}
    row = read_row(path, message.msg_id)
    assert (row.state, row.maybe_sent) == (2, NOW - 115)
    assert [type(event) for event in events.of(message.msg_id)] == [StatusEvent]


async def test_a_message_that_asked_for_no_report_ends_unknown_at_once(
    journal: SqliteJournal, path: Path
) -> None:
    message = await left_in_flight(journal, "dsc", inflight_at=NOW - 30, dlr=False)
    events = RecordingEmitter()
    assert await recover(journal, events) == {"unknown": 1}
    row = read_row(path, message.msg_id)
    no_idempotency = lifecycle.describe(lifecycle.NoSafeResend("no_idempotency"))
    assert (row.state, row.outcome, row.error) == (3, "UNKNOWN", no_idempotency)
    # It asked for no report: it ends as a final `failed` with state UNKNOWN, not a `dlr`.
    [failed] = events.of(message.msg_id)
    assert isinstance(failed, Failed)
    assert (failed.state, failed.final, failed.bridge) == ("UNKNOWN", True, "dsc")
    assert failed.error == f"dsc: {no_idempotency}"
    assert await journal.pending_count() == 0


async def test_events_are_announced_after_the_commit(journal: SqliteJournal) -> None:
    await left_in_flight(journal, "dsc", inflight_at=NOW - 30)
    await left_in_flight(journal, "bsg", inflight_at=NOW - 30)
    log: list[str] = []
    assert await recover(LoggingJournal(journal, log), RecordingEmitter(log)) == {
        "unconfirmed": 1,
        "scheduled": 1,
    }
    # One commit for all (each message's change and its feed events), then the events.
    assert log == ["record 4", "emit", "emit"]


async def test_a_second_start_finds_nothing_left_in_flight(journal: SqliteJournal) -> None:
    await left_in_flight(journal, "bsg", inflight_at=NOW - 30)
    assert await recover(journal, RecordingEmitter()) == {"scheduled": 1}
    events = RecordingEmitter()
    assert await recover(journal, events) == {}
    assert events.emitted == []


async def test_a_recovered_message_remembers_when_its_crashed_attempt_went_out(
    journal: SqliteJournal, path: Path
) -> None:
    message = await left_in_flight(journal, "smsclub", inflight_at=NOW - 30)
    assert await recover(journal, RecordingEmitter()) == {"scheduled": 1}
    assert read_row(path, message.msg_id).maybe_sent == NOW - 30


# ── end_overdue ────────────────────────────────────────────────────────────────────


async def submitted_message(
    journal: SqliteJournal, bridge: str, *, report_by: float, **changes: Any
) -> Message:
    message = await left_in_flight(journal, bridge, inflight_at=NOW - 7200, **changes)
    await journal.record(
        [
            MarkSubmitted(
                msg_id=message.msg_id,
                provider_id=f"P-{message.msg_id}",
                cost=0.03,
                currency="UAH",
                at=NOW - 7199,
                report_by=report_by,
            )
        ]
    )
    return message


async def unconfirmed_message(journal: SqliteJournal, bridge: str, *, report_by: float) -> Message:
    message = await left_in_flight(journal, bridge, inflight_at=NOW - 7200)
    await journal.record(
        [
            MarkUnconfirmed(
                msg_id=message.msg_id,
                at=NOW - 7199,
                maybe_sent_at=NOW - 7200,
                report_by=report_by,
                error="outcome unknown",
            )
        ]
    )
    return message


async def test_overdue_messages_end_unknown_with_one_dlr_each(
    journal: SqliteJournal, path: Path
) -> None:
    timed_out = await submitted_message(journal, "bsg", report_by=NOW - 1)
    validity = await submitted_message(journal, "dsc", report_by=NOW - 2, expires_at=NOW - 62)
    unconfirmed = await unconfirmed_message(journal, "smsclub", report_by=NOW)
    waiting = await submitted_message(journal, "bsg", report_by=NOW + 60)
    told = Told()
    events = RecordingEmitter()

    ended = await end_overdue(journal, events, NOW, REPORT_TIMEOUT_S, told)

    assert ended == 3
    timeout_sentence = lifecycle.describe(lifecycle.ReportTimeout(REPORT_TIMEOUT_S))
    validity_sentence = lifecycle.describe(lifecycle.ValidityEnded(sent=True))
    expected = [
        (timed_out, "bsg", timeout_sentence),
        (validity, "dsc", validity_sentence),
        (unconfirmed, "smsclub", timeout_sentence),
    ]
    for message, bridge, sentence in expected:
        row = read_row(path, message.msg_id)
        assert (row.state, row.outcome, row.code, row.error) == (
            3,
            "UNKNOWN",
            "no_report",
            sentence,
        )
        [dlr] = events.of(message.msg_id)
        assert isinstance(dlr, DeliveryReport)
        assert (dlr.state, dlr.provider_status, dlr.bridge) == ("UNKNOWN", sentence, bridge)
    # Earliest deadline first; the time since the claim, for the receipt latency metric.
    assert told.calls == [
        ("dsc", "UNKNOWN", 7200.0),
        ("bsg", "UNKNOWN", 7200.0),
        ("smsclub", "UNKNOWN", 7200.0),
    ]
    assert read_row(path, waiting.msg_id).state == 2
    assert events.of(waiting.msg_id) == []
    assert await journal.pending_count() == 1


async def test_a_second_sweep_ends_nothing_more(journal: SqliteJournal) -> None:
    await submitted_message(journal, "bsg", report_by=NOW - 1)
    assert await end_overdue(journal, RecordingEmitter(), NOW, REPORT_TIMEOUT_S) == 1
    events = RecordingEmitter()
    told = Told()
    assert await end_overdue(journal, events, NOW + 1, REPORT_TIMEOUT_S, told) == 0
    assert events.emitted == []
    assert told.calls == []


async def test_nothing_overdue_writes_nothing(journal: SqliteJournal) -> None:
    await submitted_message(journal, "bsg", report_by=NOW + 1)
    log: list[str] = []
    assert await end_overdue(LoggingJournal(journal, log), RecordingEmitter(log), NOW, 60.0) == 0
    assert log == []


async def test_an_unwritable_journal_ends_nothing_and_announces_nothing(
    journal: SqliteJournal, path: Path
) -> None:
    message = await submitted_message(journal, "bsg", report_by=NOW - 1)
    log: list[str] = []
    told = Told()
    failing = LoggingJournal(journal, log, fail=True)
    events = RecordingEmitter(log)
    assert await end_overdue(failing, events, NOW, REPORT_TIMEOUT_S, told) == 0
    assert log == ["record failed"]
    assert told.calls == []
    assert read_row(path, message.msg_id).state == 2  # still awaiting: the next sweep ends it
    assert await end_overdue(journal, events, NOW, REPORT_TIMEOUT_S) == 1


async def test_one_sweep_ends_at_most_a_batch_earliest_first(
    journal: SqliteJournal, path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(recovery, "DEADLINE_BATCH", 2)
    late = await submitted_message(journal, "bsg", report_by=NOW - 1)
    early = await submitted_message(journal, "bsg", report_by=NOW - 3)
    middle = await submitted_message(journal, "bsg", report_by=NOW - 2)
    assert await end_overdue(journal, RecordingEmitter(), NOW, REPORT_TIMEOUT_S) == 2
    assert [read_row(path, m.msg_id).state for m in (early, middle, late)] == [3, 3, 2]
    assert await end_overdue(journal, RecordingEmitter(), NOW, REPORT_TIMEOUT_S) == 1


async def test_serve_report_deadlines_keeps_sweeping(journal: SqliteJournal) -> None:
    message = await submitted_message(journal, "bsg", report_by=NOW - 1)
    ended = anyio.Event()

    class Announcer(RecordingEmitter):
        def emit(self, origin: str, event: Event) -> None:
            super().emit(origin, event)
            ended.set()

    events = Announcer()
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(
                lambda: serve_report_deadlines(
                    journal,
                    events,
                    report_timeout_s=REPORT_TIMEOUT_S,
                    clock=lambda: NOW,
                    sweep_s=0.0,
                )
            )
            await ended.wait()
            tg.cancel_scope.cancel()
    [dlr] = events.of(message.msg_id)
    assert isinstance(dlr, DeliveryReport)
    assert dlr.state == "UNKNOWN"
