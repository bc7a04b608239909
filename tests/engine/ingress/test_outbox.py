"""engine.ingress.outbox in a cluster: events another node kept in the shared outbox reach
the client connected here, on a real SQLite journal, a real EventRouter and EventSink; a
client that is not connected here, or has gone, keeps its lines."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from engine.ingress.events import EventRouter, EventSink
from engine.ingress.outbox import KeptWake, Outbox, serve_kept_for_live, take_kept_for_live
from engine.journal import StoreEvents
from engine.journal.sqlite import open_sqlite_journal

pytestmark = pytest.mark.anyio


class Peer:
    def __init__(self) -> None:
        self.data = b""
        self.wrote = anyio.Event()

    async def write(self, data: bytes) -> None:
        self.data += data
        self.wrote.set()


async def test_lines_kept_for_a_client_connected_here_are_taken_and_written(
    tmp_path: Path,
) -> None:
    async with open_sqlite_journal(tmp_path / "j.db") as journal:
        # What another node kept: it had no connection of these clients.
        await journal.record(
            [
                StoreEvents(origin="session:here", events=[b'{"n":1}\n', b'{"n":2}']),
                StoreEvents(origin="session:elsewhere", events=[b'{"n":3}\n']),
            ]
        )
        outbox = Outbox()
        router = EventRouter(outbox.spill)
        peer = Peer()
        sink = EventSink("session:here", peer.write)
        router.register(sink)
        assert router.live_origins() == ["session:here"]
        async with anyio.create_task_group() as tg:
            tg.start_soon(sink.serve, router.emit_lines)
            assert await take_kept_for_live(router, journal) == 2
            with anyio.fail_after(5):
                await sink.flush()
            tg.cancel_scope.cancel()
        # Each stored line ends with its newline, one that did not gets one.
        assert peer.data == b'{"n":1}\n{"n":2}\n'
        assert await journal.kept_origins(["session:here", "session:elsewhere"]) == [
            "session:elsewhere"
        ]
        assert await journal.take_events("session:elsewhere", 10) == [b'{"n":3}\n']
        assert outbox.pending == {}


async def test_a_wake_takes_at_once_and_a_client_that_has_gone_keeps_its_lines(
    tmp_path: Path,
) -> None:
    async with open_sqlite_journal(tmp_path / "j.db") as journal:
        outbox = Outbox()
        router = EventRouter(outbox.spill)
        peer = Peer()
        sink = EventSink("tcp:r:1", peer.write)
        router.register(sink)
        wake = KeptWake()
        async with anyio.create_task_group() as tg:
            tg.start_soon(sink.serve, router.emit_lines)
            # A poll far away: only the wake-up can bring the line within the test.
            tg.start_soon(lambda: serve_kept_for_live(router, journal, wake, poll_s=3600))
            await journal.record([StoreEvents(origin="tcp:r:1", events=[b"one\n"])])
            wake.set()
            with anyio.fail_after(5):
                await peer.wrote.wait()
            tg.cancel_scope.cancel()
        assert peer.data == b"one\n"
        # The connection is gone (its sink still registered): its lines stay kept.
        await journal.record([StoreEvents(origin="tcp:r:1", events=[b"two\n"])])
        assert sink.closed
        assert router.live_origins() == []
        assert await take_kept_for_live(router, journal) == 0
        assert await journal.take_events("tcp:r:1", 10) == [b"two\n"]
