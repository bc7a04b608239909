"""engine.dispatch with a real journal and a scripted provider: what may have been sent is
never sent anywhere else."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from bridges.base import BridgeSettings, HttpCall, HttpReply
from bridges.smsclub import SmsClubDriver
from engine import dispatch as dispatch_module
from engine import lifecycle
from engine.bridge_limits import LocalGate
from engine.circuit import CircuitBreaker
from engine.dispatch import BridgeDispatcher
from engine.http_errors import ReplyLost
from engine.journal import Change, JournalError
from engine.journal.sqlite import SqliteJournal, open_sqlite_journal
from engine.models import Event, Failed, Message, StatusEvent
from engine.ratelimit import TokenBucket
from engine.retry import RetryPolicy
from engine.scheduler import BridgeQueue, Scheduler

pytestmark = pytest.mark.anyio

SERVER_ERROR = HttpReply(
    status=500,
    body=b'{"success_request":{"error":"Service is temporarily unavailable"}}',
    headers={"content-type": "application/json"},
)


class ScriptedClient:
    """Answers each request with the next scripted reply, or raises it."""

    def __init__(self, script: Sequence[HttpReply | Exception]) -> None:
        self.script = list(script)
        self.calls: list[HttpCall] = []

    async def request(self, call: HttpCall) -> HttpReply:
        self.calls.append(call)
        answer = self.script.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


class Events:
    def __init__(self) -> None:
        self.emitted: list[Event] = []

    def emit_all(self, events: Sequence[tuple[str, Event]]) -> None:
        self.emitted += [event for _, event in events]


class Hooks:
    """Counts what dispatch reports to the rest of the daemon (metrics are tested apart)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def submitted(self, bridge: str, messages: Sequence[tuple[Message, str | None]]) -> None:
        self.calls.append("submitted")

    def charged(self, bridge: str, charges: Sequence[lifecycle.Charge]) -> None:
        self.calls.append("charged")

    def unconfirmed(self, bridge: str, messages: Sequence[Message]) -> None:
        self.calls.append("unconfirmed")

    def outcome(self, bridge: str, outcome: str, count: int, reason: str | None = None) -> None:
        self.calls.append(outcome)

    def request_done(self, bridge: str, seconds: float, status: str) -> None:
        self.calls.append("request_done")

    def bucket_wait(self, bridge: str, seconds: float) -> None:
        self.calls.append("bucket_wait")


def message(to: str) -> Message:
    return Message(
        msg_id="",
        reference="",
        origin="client",
        client_ref=None,
        to=to,
        sender="test1",
        text="hello",
        encoding="GSM-7",
        segments=1,
        cost=0.01,
        currency="UAH",
        bridges=("smsclub", "bsg"),
        accepted_at=1000.0,
        due_at=1000.0,
    )


def dispatcher(
    journal: SqliteJournal,
    client: ScriptedClient,
    events: Events,
    clock: Callable[[], float] = lambda: 1000.0,
    limits: LocalGate | None = None,
) -> BridgeDispatcher:
    queue = BridgeQueue("smsclub", 10, isolate_resends=True)
    return BridgeDispatcher(
        name="smsclub",
        driver=SmsClubDriver(
            BridgeSettings(base_url="http://127.0.0.1:9", credentials={"token": "t"})
        ),
        client=client,
        queue=queue,
        scheduler=Scheduler({"smsclub": queue}, journal),
        journal=journal,
        events=events,
        hooks=Hooks(),
        policy=RetryPolicy(base_s=0.0, jitter=0.0, max_attempts=3),
        limits=limits or LocalGate(TokenBucket(1e9, 1e9), TokenBucket(1e9, 1e9)),
        circuit=CircuitBreaker(failure_threshold=100),
        pool=1,
        linger_s=0.0,
        max_recipients=100,
        attempts_per_bridge=2,
        clock=clock,
        jitter=lambda: 0.5,
    )


async def accept_one(journal: SqliteJournal, to: str) -> Message:
    [group] = await journal.accept([[message(to)]])
    assert isinstance(group, list)
    return group[0]


async def run_attempts(
    journal: SqliteJournal, dispatch: BridgeDispatcher, msg_id: str, attempts: int
) -> Message:
    """Send the message `attempts` times, reading it back from the journal each time."""
    for _ in range(attempts):
        [current] = (await journal.get([msg_id])).values()
        if current.state != "accepted":
            break
        await dispatch.send_batch([current])
    return (await journal.get([msg_id]))[msg_id]


async def test_a_message_that_may_have_been_sent_never_fails_over(tmp_path: Path) -> None:
    # SMS Club may have taken attempt 1 (its reply was lost): it may be resent there (its
    # duplicate window answers 453), but after plain 5xx answers it must not go to BSG.
    async with open_sqlite_journal(tmp_path / "septet.db") as journal:
        sent = await accept_one(journal, "+380501234567")
        client = ScriptedClient(
            [ReplyLost("reset after the request was written")] + [SERVER_ERROR] * 5
        )
        events = Events()
        dispatch = dispatcher(journal, client, events)
        waiting = await run_attempts(journal, dispatch, sent.msg_id, 6)
    # Not final: SMS Club may hold it, so its report (or the deadline) decides.
    assert (waiting.state, waiting.provider_id, waiting.maybe_sent) == ("submitted", None, True)
    assert lifecycle.state_of(waiting, 0.0) is lifecycle.State.UNCONFIRMED
    assert waiting.bridge_index == 0  # never moved to bsg
    assert not [event for event in events.emitted if isinstance(event, Failed)]
    [status] = [event for event in events.emitted if isinstance(event, StatusEvent)]
    assert (status.state, status.final) == ("UNKNOWN", False)
    assert "outcome unknown" in status.provider_status
    assert len(client.calls) == 3  # the full attempts of its bridge, not the failover's 2


async def test_a_resend_that_waited_past_the_duplicate_window_is_not_sent(tmp_path: Path) -> None:
    # SMS Club deduplicates for 2 minutes from the earliest attempt that may have reached
    # it. A resend that waited longer (a backlog, a takeover's resends queued) would be
    # taken as a new message: it is not sent, and its report decides.
    now = [1000.0]
    async with open_sqlite_journal(tmp_path / "septet.db") as journal:
        sent = await accept_one(journal, "+380501234570")
        client = ScriptedClient([ReplyLost("reset after the request was written")])
        events = Events()
        dispatch = dispatcher(journal, client, events, clock=lambda: now[0])
        await dispatch.send_batch([sent])
        [resend] = (await journal.get([sent.msg_id])).values()
        assert (resend.state, resend.maybe_sent) == ("accepted", True)
        now[0] += 200.0
        await dispatch.send_batch([resend])
        [after] = (await journal.get([sent.msg_id])).values()
    assert len(client.calls) == 1  # the first attempt only
    assert lifecycle.state_of(after, now[0]) is lifecycle.State.UNCONFIRMED
    status = [event for event in events.emitted if isinstance(event, StatusEvent)]
    assert "duplicate window has passed" in status[-1].provider_status


async def test_a_message_never_sent_fails_over_after_plain_errors(tmp_path: Path) -> None:
    async with open_sqlite_journal(tmp_path / "septet.db") as journal:
        sent = await accept_one(journal, "+380501234568")
        client = ScriptedClient([SERVER_ERROR] * 5)
        dispatch = dispatcher(journal, client, Events())
        moved = await run_attempts(journal, dispatch, sent.msg_id, 2)
    assert (moved.state, moved.bridge_index, moved.maybe_sent) == ("accepted", 1, False)
    assert len(client.calls) == 2  # attempts_per_bridge, then the next bridge


async def test_maybe_sent_survives_in_the_journal(tmp_path: Path) -> None:
    async with open_sqlite_journal(tmp_path / "septet.db") as journal:
        sent = await accept_one(journal, "+380501234569")
        client = ScriptedClient([ReplyLost("read timeout")])
        dispatch = dispatcher(journal, client, Events())
        await dispatch.send_batch([sent])
    async with open_sqlite_journal(tmp_path / "septet.db") as reopened:
        [again] = (await reopened.get([sent.msg_id])).values()
    assert (again.state, again.attempt, again.maybe_sent) == ("accepted", 1, True)


class FlakyJournal:
    """A real journal whose claims or records fail, as on a full disk, so many times."""

    def __init__(self, journal: SqliteJournal, *, claims: int = 0, records: int = 0) -> None:
        self.journal = journal
        self.failing_claims = claims
        self.failing_records = records

    async def claim(
        self,
        messages: Sequence[Message],
        bridge_index: int,
        at: float,
        *,
        record: Sequence[Change] = (),
    ) -> list[Message]:
        if self.failing_claims:
            self.failing_claims -= 1
            raise JournalError("The journal could not be written: database or disk is full.")
        return await self.journal.claim(messages, bridge_index, at, record=record)

    async def record(self, changes: Sequence[Change]) -> None:
        if self.failing_records:
            self.failing_records -= 1
            raise JournalError("The journal could not be written: database or disk is full.")
        await self.journal.record(changes)


async def test_an_unwritable_journal_is_waited_out_and_nothing_is_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dispatch_module, "JOURNAL_RETRY_S", 0.0)
    taken = HttpReply(
        status=200,
        body=b'{"success_request":{"info":{"1001":"380501234560"}}}',
        headers={"content-type": "application/json"},
    )
    async with open_sqlite_journal(tmp_path / "septet.db") as journal:
        sent = await accept_one(journal, "+380501234560")
        client = ScriptedClient([taken])
        events = Events()
        dispatch = dispatcher(journal, client, events)
        # The claim fails: nothing is sent, nothing raised, the message is still accepted.
        dispatch._journal = FlakyJournal(journal, claims=1)
        await dispatch.send_batch([sent])
        assert client.calls == []
        [again] = (await journal.get([sent.msg_id])).values()
        assert again.state == "accepted"
        # Now the outcome's commit fails twice after the send: it is held and retried,
        # and its event waits for the commit.
        dispatch._journal = FlakyJournal(journal, records=2)
        await dispatch.send_batch([again])
        assert dispatch.in_flight == 0
    assert len(client.calls) == 1
    async with open_sqlite_journal(tmp_path / "septet.db") as reopened:
        [done] = (await reopened.get([sent.msg_id])).values()
    assert (done.state, done.provider_id) == ("submitted", "1001")  # awaiting its report
    assert [type(event).__name__ for event in events.emitted] == ["SubmittedEvent"]


async def test_a_request_past_its_rate_limit_waits_its_turn_and_is_sent(tmp_path: Path) -> None:
    """A local gate out of tokens: the request waits the turn it reserved (reported as a
    bucket wait), then goes; both messages end submitted, each request sent once."""
    replies = [
        HttpReply(
            status=200,
            body=b'{"success_request":{"info":{"100%d":"38050123456%d"}}}' % (n, n),
            headers={"content-type": "application/json"},
        )
        for n in (0, 1)
    ]
    # One message a millisecond, one banked; the gate's clock stands still, so the second
    # request's turn is a millisecond after the first's.
    gate = LocalGate(TokenBucket(1e9, 1e9), TokenBucket(1000.0, 1.0), clock=lambda: 1000.0)
    async with open_sqlite_journal(tmp_path / "septet.db") as journal:
        first = await accept_one(journal, "+380501234560")
        second = await accept_one(journal, "+380501234561")
        client = ScriptedClient(replies)
        dispatch = dispatcher(journal, client, Events(), limits=gate)
        await dispatch.send_batch([first])
        assert "bucket_wait" not in dispatch._hooks.calls  # type: ignore[attr-defined]
        await dispatch.send_batch([second])
        assert dispatch._hooks.calls.count("bucket_wait") == 1  # type: ignore[attr-defined]
        done = await journal.get([first.msg_id, second.msg_id])
    assert len(client.calls) == 2
    assert [(m.state, m.provider_id) for m in done.values()] == [
        ("submitted", "1000"),
        ("submitted", "1001"),
    ]
