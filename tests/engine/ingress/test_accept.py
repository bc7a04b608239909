"""The one accept path (engine.ingress.accept) on a real SQLite journal: accounts' client ids,
allowed senders, throughput and the daily quota, and one commit per batch."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pytest
from redis.asyncio import Redis

from bench.redis_server import RedisServer
from engine.accounts import Account, AccountSettings
from engine.cluster_limits import SharedAccountBucket, open_client
from engine.ingress.accept import DAY_S, QUOTA_READ_S, Acceptor, Outcome, utc_day
from engine.ingress.prepare import LineError, LinePreparer
from engine.journal.sqlite import SqliteJournal, open_sqlite_journal
from engine.models import Message, Submission
from engine.pricing import default_price_tables
from engine.routing import Router, default_routes
from engine.webhooks.settings import AccountWebhooks
from tests.engine.smpp.harness import BRIDGES, RecordingScheduler

pytestmark = pytest.mark.anyio

# 23:59:58 UTC (2025-12-05): two seconds before the quota's day ends.
NEAR_MIDNIGHT = 20_428 * DAY_S - 2.0


class Clock:
    def __init__(self, now: float = 1_780_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Setup:
    acceptor: Acceptor
    journal: SqliteJournal
    scheduler: RecordingScheduler
    clock: Clock
    counts: dict[str, int]


def preparer() -> LinePreparer:
    return LinePreparer(
        router=Router(default_routes(), None, BRIDGES),
        prices=default_price_tables(),
        default_senders={},
        max_text_chars=1600,
        max_recipients=1000,
        default_region=None,
    )


@asynccontextmanager
async def accepting(path: Path, clock: Clock | None = None) -> AsyncIterator[Setup]:
    clock = clock or Clock()
    counts: dict[str, int] = {}

    def count(result: str, n: int) -> None:
        counts[result] = counts.get(result, 0) + n

    async with open_sqlite_journal(path) as journal:
        scheduler = RecordingScheduler()
        acceptor = Acceptor(preparer(), journal, scheduler, clock=clock, on_lines=count)
        yield Setup(acceptor, journal, scheduler, clock, counts)


def line(**fields: object) -> bytes:
    return msgspec.json.encode({"to": "+250788100001", "text": "hi", **fields})


def refusal(outcome: Outcome) -> LineError:
    assert isinstance(outcome, LineError), outcome
    return outcome


def accepted(outcome: Outcome) -> list[Message]:
    assert not isinstance(outcome, LineError), outcome
    return outcome


async def test_client_ids_are_unique_per_account_not_across_accounts(tmp_path: Path) -> None:
    acme, other = Account("acme", AccountSettings()), Account("other", AccountSettings())
    async with accepting(tmp_path / "j.db") as s:
        (first,) = await s.acceptor.accept(acme, "tcp:1", [line(id="order-1")])
        (second,) = await s.acceptor.accept(other, "tcp:2", [line(id="order-1")])
        (again,) = await s.acceptor.accept(acme, "tcp:1", [line(id="order-1")])
        a, b = accepted(first)[0], accepted(second)[0]
        assert (a.account, b.account) == ("acme", "other")
        assert a.msg_id != b.msg_id
        duplicate = refusal(again)
        assert (duplicate.kind, duplicate.msg_ids) == ("duplicate", (a.msg_id,))
        stored = await s.journal.get([a.msg_id, b.msg_id])
        assert (stored[a.msg_id].account, stored[b.msg_id].account) == ("acme", "other")
        assert s.counts == {"accepted": 2, "duplicate": 1}


async def test_a_batch_is_one_commit_answered_in_order(tmp_path: Path) -> None:
    account = Account("acme", AccountSettings())
    async with accepting(tmp_path / "j.db") as s:
        commits = s.journal.commits
        batch: list[Submission | bytes] = [
            line(id="a"),
            b"not json",
            Submission(to=["+250788100002", "+250788100003"], text="two", id="b"),
            line(id="a"),  # the same id earlier in the same batch
        ]
        outcomes = await s.acceptor.accept(account, "http:acme", batch)
        assert s.journal.commits == commits + 1
        assert len(accepted(outcomes[0])) == 1
        assert refusal(outcomes[1]).kind == "invalid"
        assert [m.to for m in accepted(outcomes[2])] == ["+250788100002", "+250788100003"]
        assert refusal(outcomes[3]).kind == "duplicate"
        assert {m.origin for m in s.scheduler.messages} == {"http:acme"}
        assert len(s.scheduler.messages) == 3


async def test_only_allowed_senders_pass_and_no_sender_takes_the_bridges(tmp_path: Path) -> None:
    account = Account("acme", AccountSettings(allowed_senders=["ACME", "+250788000000"]))
    async with accepting(tmp_path / "j.db") as s:
        outcomes = await s.acceptor.accept(
            account, "tcp:1", [line(**{"from": "ACME"}), line(**{"from": "EVIL"}), line()]
        )
        accepted(outcomes[0])
        refused = refusal(outcomes[1])
        assert refused.kind == "sender"
        assert refused.error == "from 'EVIL' is not one of the senders account 'acme' may use"
        accepted(outcomes[2])


async def test_over_the_rate_is_throttled_with_when_to_come_back(tmp_path: Path) -> None:
    account = Account("acme", AccountSettings(messages_per_s=2, burst=3))
    async with accepting(tmp_path / "j.db") as s:
        two = Submission(to=["+250788100001", "+250788100002"], text="x")
        outcomes = await s.acceptor.accept(account, "tcp:1", [two, line(), line()])
        assert [isinstance(o, LineError) for o in outcomes] == [False, False, True]
        throttled = refusal(outcomes[2])
        assert throttled.kind == "throttled"
        assert throttled.retry_after_s == pytest.approx(0.5)
        assert throttled.error == (
            "account 'acme' is over its 2 messages per second: send it again in 0.5 s"
        )
        # A refused line takes no token: half a second later one message fits again.
        s.clock.now += 0.5
        (later,) = await s.acceptor.accept(account, "tcp:1", [line()])
        accepted(later)


async def test_a_duplicate_gives_its_token_back(tmp_path: Path) -> None:
    account = Account("acme", AccountSettings(messages_per_s=1, burst=1))
    async with accepting(tmp_path / "j.db") as s:
        accepted((await s.acceptor.accept(account, "tcp:1", [line(id="x")]))[0])
        s.clock.now += 1.0
        assert refusal((await s.acceptor.accept(account, "tcp:1", [line(id="x")]))[0]).kind == (
            "duplicate"
        )
        accepted((await s.acceptor.accept(account, "tcp:1", [line(id="y")]))[0])


async def test_the_daily_quota_counts_messages_and_survives_a_restart(tmp_path: Path) -> None:
    account = Account("acme", AccountSettings(daily_quota=3))
    clock = Clock(NEAR_MIDNIGHT)
    async with accepting(tmp_path / "j.db", clock) as s:
        two = Submission(to=["+250788100001", "+250788100002"], text="x")
        outcomes = await s.acceptor.accept(account, "tcp:1", [two, two, line()])
        accepted(outcomes[0])
        over = refusal(outcomes[1])
        assert over.kind == "quota"
        assert over.retry_after_s == pytest.approx(2.0)
        assert over.error == (
            "account 'acme' has used 2 of its daily quota of 3 messages and this is 2 more;"
            " the quota starts again at 00:00 UTC"
        )
        accepted(outcomes[2])  # one more still fits
    # A new Acceptor on the same journal (a restart) knows what was used today.
    async with accepting(tmp_path / "j.db", clock) as s:
        assert await s.journal.accepted_today("acme", utc_day(clock.now)) == 3
        assert refusal((await s.acceptor.accept(account, "tcp:1", [line()]))[0]).kind == "quota"
        other = Account("other", AccountSettings(daily_quota=3))
        accepted((await s.acceptor.accept(other, "tcp:1", [line()]))[0])  # its own count
        clock.now += 2.0  # 00:00 UTC: a new day
        accepted((await s.acceptor.accept(account, "tcp:1", [line()]))[0])


async def test_on_a_shared_journal_the_quota_counts_the_other_nodes_accepts(
    tmp_path: Path,
) -> None:
    # Two Acceptors on one journal, as two nodes of a cluster on one database: each has
    # its own Account (and count), and reads the journal's count again after QUOTA_READ_S.
    clock = Clock()
    async with open_sqlite_journal(tmp_path / "j.db") as journal:
        a, b = (
            Acceptor(preparer(), journal, RecordingScheduler(), clock=clock, shared_quota=True)
            for _ in range(2)
        )
        on_a, on_b = (Account("acme", AccountSettings(daily_quota=2)) for _ in range(2))
        accepted((await b.accept(on_b, "tcp:1", [line()]))[0])  # b counts 1
        accepted((await a.accept(on_a, "tcp:2", [line()]))[0])  # a reads 1, counts 2
        clock.now += QUOTA_READ_S
        over = refusal((await b.accept(on_b, "tcp:1", [line()]))[0])
        assert over.kind == "quota"
        assert "has used 2 of its daily quota of 2" in over.error
        assert await journal.accepted_today("acme", utc_day(clock.now)) == 2


async def test_a_duplicate_is_not_counted_against_the_quota(tmp_path: Path) -> None:
    account = Account("acme", AccountSettings(daily_quota=2))
    async with accepting(tmp_path / "j.db") as s:
        accepted((await s.acceptor.accept(account, "tcp:1", [line(id="x")]))[0])
        assert refusal((await s.acceptor.accept(account, "tcp:1", [line(id="x")]))[0]).kind == (
            "duplicate"
        )
        accepted((await s.acceptor.accept(account, "tcp:1", [line(id="y")]))[0])
        assert await s.journal.accepted_today("acme", utc_day(s.clock.now)) == 2


async def test_each_account_checks_callback_urls_by_its_own_webhook_rules(tmp_path: Path) -> None:
    own = AccountWebhooks(allowed_hosts=["hooks.acme.example"], secret="acme-secret")
    acme = Account("acme", AccountSettings(webhooks=own))
    bare = Account("bare", AccountSettings())  # no webhooks of its own, none by default
    url = "https://hooks.acme.example/septet"
    async with accepting(tmp_path / "j.db") as s:
        (ok,) = await s.acceptor.accept(acme, "tcp:1", [line(callback_url=url)])
        assert accepted(ok)[0].callback_url == url
        (elsewhere,) = await s.acceptor.accept(
            acme, "tcp:1", [line(callback_url="https://example.org/hook")]
        )
        assert refusal(elsewhere).kind == "callback"
        (refused,) = await s.acceptor.accept(bare, "tcp:1", [line(callback_url=url)])
        assert refusal(refused).kind == "callback"


async def test_lines_of_a_batch_are_priced_as_each_alone(tmp_path: Path) -> None:
    # A batch prices each (bridge, prefix, segments) once for all its lines: a line of two
    # segments to the same prefix as one of one segment still costs twice as much, and a
    # line to another country its own price.
    account = Account("acme", AccountSettings())
    lines = [
        line(to="+250788100001"),
        line(to="+250788100002", text="x" * 200),  # 2 GSM-7 segments
        line(to="+447700900001"),
        line(to="+250788100003"),
    ]
    async with accepting(tmp_path / "j.db") as s:
        together = [accepted(o)[0] for o in await s.acceptor.accept(account, "tcp:1", lines)]
    async with accepting(tmp_path / "k.db") as s:
        alone = [accepted((await s.acceptor.accept(account, "tcp:1", [x]))[0])[0] for x in lines]
    assert [(m.cost, m.currency, m.segments) for m in together] == [
        (m.cost, m.currency, m.segments) for m in alone
    ]
    assert together[1].segments == 2
    assert together[1].cost == 2 * together[0].cost
    assert together[0].cost == together[3].cost


async def test_messages_alike_but_for_their_recipients_keep_what_is_their_own(
    tmp_path: Path,
) -> None:
    # A batch's submissions of one text share their checks (engine.ingress.prepare.Shared):
    # each still keeps its own id, report, priority, schedule and callback, and a refusal
    # of one refuses that one only.
    own = AccountWebhooks(allowed_hosts=["hooks.acme.example"], secret="acme-secret")
    account = Account("acme", AccountSettings(webhooks=own))
    later = "2030-01-01T00:00:00Z"
    lines = [
        line(to="+250788100001", id="a", priority=3),
        line(to="+250788100002", id="b", dlr=False),
        line(to="+250788100003", schedule_at=later),
        line(to="+250788100004", callback_url="https://elsewhere.example/hook"),
        line(to="+250788100005", callback_url="https://hooks.acme.example/septet"),
        line(to="+250788100006", text="\u0416" * 100),  # Cyrillic: UCS-2, 2 segments
        line(to="+250788100007", schedule_at="2030-01-01T00:00:00"),  # no zone
        line(to="+250788100008"),
    ]
    async with accepting(tmp_path / "j.db") as s:
        outcomes = await s.acceptor.accept(account, "http:acme", lines)
    first, second, scheduled, elsewhere, hooked, long, unzoned, last = outcomes
    assert [(m.client_ref, m.priority, m.dlr) for m in accepted(first)] == [("a", 3, True)]
    assert [(m.client_ref, m.priority, m.dlr) for m in accepted(second)] == [("b", 0, False)]
    assert accepted(scheduled)[0].due_at == 1_893_456_000.0
    assert accepted(first)[0].due_at == accepted(last)[0].due_at == s.clock.now
    assert refusal(elsewhere).kind == "callback"
    assert accepted(hooked)[0].callback_url == "https://hooks.acme.example/septet"
    assert accepted(last)[0].callback_url is None
    assert (accepted(long)[0].encoding, accepted(long)[0].segments) == ("UCS-2", 2)
    assert (accepted(last)[0].encoding, accepted(last)[0].segments) == ("GSM-7", 1)
    assert refusal(unzoned).kind == "schedule"


async def test_a_batch_takes_its_tokens_from_the_clusters_bucket_at_once(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    # One token a second, five at once, kept in Redis (another node's accepts take from
    # them too). A batch of three asks for its three tokens in one call; the one the quota
    # refuses gives its token back.
    client = open_client(redis_server.url)
    try:
        account = Account("acme", AccountSettings(messages_per_s=1.0, burst=5, daily_quota=2))
        account.limit.shared = SharedAccountBucket(client, "acme", rate=1.0, burst=5.0)
        await account.limit.shared.give(0)  # loads the script (its first EVALSHA fails)
        calls_before = await script_calls(client)
        async with accepting(tmp_path / "j.db") as s:
            outcomes = await s.acceptor.accept(account, "http:acme", [line(), line(), line()])
        assert [type(o).__name__ for o in outcomes] == ["list", "list", "LineError"]
        assert refusal(outcomes[2]).kind == "quota"
        # The take and the give: two calls for the batch, not one a message.
        assert await script_calls(client) - calls_before == 2
        other_node = SharedAccountBucket(client, "acme", rate=1.0, burst=5.0)
        assert (await other_node.take(4) or 0.0) > 0.9  # 3 left, not 2
        assert await other_node.take(3) == 0.0
    finally:
        await client.aclose()


async def script_calls(client: Redis) -> int:
    stats = await client.info("commandstats")
    return sum(
        int(v["calls"]) for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_eval")
    )
