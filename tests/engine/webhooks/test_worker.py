"""The delivery worker on a real journal and a real HTTP receiver on 127.0.0.1, with an
injected clock: retries, giving up past the horizon (one log line, one count), redirects
not followed, refusals at delivery time."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
import structlog
from aiohttp import web

from engine.feed import DeliveryOutcome, DueDelivery
from engine.journal.sqlite import SqliteJournal, open_sqlite_journal
from engine.models import Message
from engine.webhooks.settings import AccountWebhooks, WebhookSettings
from engine.webhooks.worker import WebhookWorker

pytestmark = pytest.mark.anyio

T0 = 2_000_000.0
SECRET = "s3cret"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class Counts:
    """The worker's metrics, as counts to wait on."""

    def __init__(self) -> None:
        self.outcomes: dict[str, int] = {}
        self.latencies: list[float] = []
        self.owed: list[int] = []
        self.changed = anyio.Event()

    def webhook_deliveries(self, outcome: str, count: int = 1) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + count
        self.changed.set()
        self.changed = anyio.Event()

    def webhook_latency(self, seconds: float) -> None:
        self.latencies.append(seconds)

    def webhook_owed(self, count: int) -> None:
        self.owed.append(count)

    async def wait_for(self, outcome: str, count: int = 1) -> None:
        with anyio.fail_after(10):
            while self.outcomes.get(outcome, 0) < count:
                await self.changed.wait()


@asynccontextmanager
async def receiver(
    handle: Callable[[web.Request], Awaitable[web.Response]],
) -> AsyncIterator[str]:
    """A local receiver calling `handle` for every request: its base URL."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def serving(status: int, paths: list[str]) -> AsyncIterator[str]:
    """A receiver answering `status` to every POST (with a Location for a 3xx), recording
    each path asked."""

    async def handle(request: web.Request) -> web.Response:
        paths.append(request.path)
        return web.Response(status=status, headers={"Location": "/elsewhere"})

    async with receiver(handle) as base:
        yield base


def message(callback_url: str) -> Message:
    return Message(
        msg_id="",
        reference="",
        origin="o",
        client_ref=None,
        to="+250788100001",
        sender="ACME",
        text="Hello",
        encoding="GSM-7",
        segments=1,
        cost=0.02,
        currency="USD",
        bridges=("dsc",),
        accepted_at=T0,
        due_at=T0,
        callback_url=callback_url,
    )


SETTINGS = WebhookSettings(
    secret=SECRET, allowed_hosts=["127.0.0.1"], base_s=0.01, jitter=0.0, retry_for_s=60.0
)


@asynccontextmanager
async def worker_on(
    journal: SqliteJournal, clock: Clock, accounts: Callable[[str], AccountWebhooks | None]
) -> AsyncIterator[tuple[WebhookWorker, Counts]]:
    counts = Counts()
    worker = WebhookWorker(journal, SETTINGS, accounts, metrics=counts, clock=clock)
    journal.on_deliveries = worker.wake
    async with anyio.create_task_group() as tg:
        await tg.start(worker.serve)
        yield worker, counts
        tg.cancel_scope.cancel()


async def test_a_receiver_that_keeps_failing_is_given_up_at_the_horizon(tmp_path: Path) -> None:
    clock = Clock()
    paths: list[str] = []
    async with (
        serving(500, paths) as url,
        open_sqlite_journal(tmp_path / "septet.db", clock=clock) as journal,
        worker_on(journal, clock, lambda account: SETTINGS) as (worker, counts),
    ):
        with structlog.testing.capture_logs() as logs:
            await journal.accept([[message(f"{url}/hook")]])
            await counts.wait_for("retry", 1)
            clock.now = T0 + 61  # past retry_for_s: the next failed try is the last
            worker.wake()
            await counts.wait_for("gave_up", 1)
            with anyio.fail_after(10):
                while await journal.deliveries_owed():  # noqa: ASYNC110 - settled in a batch
                    await anyio.sleep(0.01)
        given_up = [entry for entry in logs if entry["event"] == "webhook_given_up"]
        assert len(given_up) == 1
        assert given_up[0]["why"] == "no 2xx reply in 60 s"
        assert given_up[0]["host"] == "127.0.0.1"
        assert counts.outcomes.get("delivered", 0) == 0
        assert set(paths) == {"/hook"}
        assert len(paths) == counts.outcomes["retry"] + 1


async def test_a_redirect_is_not_followed(tmp_path: Path) -> None:
    clock = Clock()
    paths: list[str] = []
    async with (
        serving(302, paths) as url,
        open_sqlite_journal(tmp_path / "septet.db", clock=clock) as journal,
        worker_on(journal, clock, lambda account: SETTINGS) as (worker, counts),
    ):
        await journal.accept([[message(f"{url}/hook")]])
        await counts.wait_for("retry", 1)
        clock.now += 1.0  # the retry falls due
        worker.wake()
        await counts.wait_for("retry", 2)
    assert paths == ["/hook", "/hook"]  # tried again, never /elsewhere


async def test_a_host_the_account_no_longer_allows_is_refused_at_delivery(tmp_path: Path) -> None:
    clock = Clock()
    paths: list[str] = []
    closed = WebhookSettings(secret=SECRET)  # no allow-list: loopback is refused
    async with (
        serving(204, paths) as url,
        open_sqlite_journal(tmp_path / "septet.db", clock=clock) as journal,
        worker_on(journal, clock, lambda account: closed) as (_worker, counts),
    ):
        with structlog.testing.capture_logs() as logs:
            await journal.accept([[message(f"{url}/hook")]])
            await counts.wait_for("refused", 1)
    assert paths == []
    [line] = [entry for entry in logs if entry["event"] == "webhook_given_up"]
    assert "is a loopback address" in line["why"]


async def test_a_2xx_delivers_once_and_counts_its_latency(tmp_path: Path) -> None:
    clock = Clock()
    paths: list[str] = []
    async with (
        serving(204, paths) as url,
        open_sqlite_journal(tmp_path / "septet.db", clock=clock) as journal,
        worker_on(journal, clock, lambda account: SETTINGS) as (_worker, counts),
    ):
        await journal.accept([[message(f"{url}/hook")]])
        await counts.wait_for("delivered", 1)
        with anyio.fail_after(10):
            while await journal.deliveries_owed():  # noqa: ASYNC110 - settled in a batch
                await anyio.sleep(0.01)
    assert paths == ["/hook"]
    assert counts.latencies == [0.0]  # the injected clock stood still


async def test_a_worker_run_again_after_a_failure_claims_what_the_last_run_left(
    tmp_path: Path,
) -> None:
    # The daemon runs the worker again after it fails: a POST the failed run had in flight
    # was cancelled, so its delivery must be claimable again, not held forever.
    clock = Clock()
    hanging, release = anyio.Event(), anyio.Event()
    paths: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        paths.append(request.path)
        if len(paths) == 1:
            hanging.set()
            await release.wait()  # the first run's POST does not end while it runs
        return web.Response(status=204)

    counts = Counts()
    async with receiver(handle) as base:
        try:
            async with open_sqlite_journal(tmp_path / "septet.db", clock=clock) as journal:
                worker = WebhookWorker(journal, SETTINGS, lambda account: SETTINGS, metrics=counts)
                journal.on_deliveries = worker.wake
                await journal.accept([[message(f"{base}/hook")]])
                async with anyio.create_task_group() as tg:
                    await tg.start(worker.serve)
                    await hanging.wait()
                    tg.cancel_scope.cancel()  # the run fails with the POST in flight
                async with anyio.create_task_group() as tg:
                    await tg.start(worker.serve)
                    await counts.wait_for("delivered", 1)
                    tg.cancel_scope.cancel()
        finally:
            release.set()
    assert paths == ["/hook", "/hook"]


class CountingJournal:
    """The real journal's delivery calls, counted: what the worker asks of the journal."""

    def __init__(self, journal: SqliteJournal) -> None:
        self.journal = journal
        self.reads = 0
        self.settles = 0
        self.first_read = anyio.Event()

    async def due_deliveries(
        self, now: float, limit: int, exclude: frozenset[int] = frozenset()
    ) -> list[DueDelivery]:
        self.reads += 1
        try:
            return await self.journal.due_deliveries(now, limit, exclude)
        finally:
            self.first_read.set()

    async def settle_deliveries(self, outcomes: Sequence[DeliveryOutcome]) -> None:
        self.settles += 1
        await self.journal.settle_deliveries(outcomes)

    async def next_delivery_at(self, after: float | None = None) -> float | None:
        return await self.journal.next_delivery_at(after)

    async def deliveries_owed(self) -> int:
        return await self.journal.deliveries_owed()


async def test_many_handed_over_are_delivered_once_each_without_reading_them_back(
    tmp_path: Path,
) -> None:
    # 600 events in 6 commits, far more than the senders take at once: those handed over
    # wait in memory (not read back from the journal), and outcomes are written in batches.
    clock = Clock()
    ids: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        ids.append(request.headers["Septet-Event-Id"])
        return web.Response(status=204)

    counts = Counts()
    async with (
        receiver(handle) as base,
        open_sqlite_journal(tmp_path / "septet.db", clock=clock) as journal,
    ):
        counting = CountingJournal(journal)
        worker = WebhookWorker(counting, SETTINGS, lambda account: SETTINGS, metrics=counts)
        journal.on_deliveries = worker.wake
        async with anyio.create_task_group() as tg:
            await tg.start(worker.serve)
            # The start's read first: commits made before it are read, not handed over.
            await counting.first_read.wait()
            for _ in range(6):
                await journal.accept([[message(f"{base}/hook")] for _ in range(100)])
            await counts.wait_for("delivered", 600)
            with anyio.fail_after(10):
                while await journal.deliveries_owed():  # noqa: ASYNC110 - settled in a batch
                    await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
    assert len(ids) == len(set(ids)) == 600
    assert counting.reads == 1  # the start's; every later one was handed over
    assert counting.settles < 60  # in batches, not one write per handful
