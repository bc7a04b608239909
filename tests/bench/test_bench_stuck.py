"""bench.stuck: a run past its deadline says which messages never ended, as the load, the
simulator and the journal see them, and keeps the run's files."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import anyio
import msgspec
import pytest

from bench import stuck
from bench.loadgen import Tally
from bridges.sim.runner import serve_simulators
from engine.config import load_config
from engine.journal import MarkFinal
from engine.journal.sqlite import open_sqlite_journal
from tests.engine.test_journal import make_message

pytestmark = pytest.mark.anyio
RECIPIENTS = ["+919800000000", "+919800000001"]


def _event(event: str, msg_id: str) -> bytes:
    return msgspec.json.encode({"event": event, "msg_id": msg_id, "ts": "2026-12-06T14:00:00Z"})


async def test_a_stuck_run_names_its_unfinished_message_and_keeps_its_files(
    tmp_path: Path,
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    config = run / "septet.toml"
    config.write_text(f'[journal]\npath = "{run / "journal.db"}"\n')
    async with open_sqlite_journal(run / "journal.db") as journal:
        [[ended], [waiting]] = await journal.accept(  # type: ignore[misc]
            [[make_message(to, bridges=("routemobile",), dlr=False)] for to in RECIPIENTS]
        )
        await journal.record(
            [MarkFinal(msg_id=ended.msg_id, outcome="DELIVRD", code=None, error=None, at=1.0)]
        )
    tally = Tally(track=True)
    lines = [_event("accepted", m.msg_id) for m in (ended, waiting)]
    tally.add(b"\n".join([*lines, _event("submitted", ended.msg_id)]) + b"\n")

    async with anyio.create_task_group() as tg:
        handle = await tg.start(
            lambda task_status: serve_simulators(["routemobile"], task_status=task_status)
        )
        query = "username=demo&password=demo&type=0&dlr=0&source=SEPTET&message=Hi"
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{handle.url}/bulksms/bulksms?{query}&destination=919800000000") as reply,
        ):
            assert (await reply.text()).startswith("1701|")
        settings = load_config(config).settings
        report = await anyio.to_thread.run_sync(
            stuck.diagnose, settings, handle.url, "routemobile", tally, RECIPIENTS
        )
        tg.cancel_scope.cancel()

    assert report.problems == []
    assert report.tally == {"accepted": 2, "submitted": 1, "failed": 0, "rejected_lines": 0}
    assert report.unfinished_ids == [waiting.msg_id]
    assert report.simulator_accepted == 1
    assert report.simulator_missing == ["+919800000001"]
    assert report.non_final_counts == {"accepted": 1}
    assert [m.msg_id for m in report.non_final] == [waiting.msg_id]
    [shown] = report.shown
    assert (shown.summary.msg_id, shown.summary.status, shown.summary.to) == (
        waiting.msg_id,
        "accepted",
        "+919800000001",
    )
    assert report.summary() == (
        "load: 1 submitted + 0 failed of 2 accepted; simulator took 1;"
        f" journal non-final {{'accepted': 1}} ({waiting.msg_id} accepted)"
    )

    kept = stuck.keep_workdir(run, tmp_path / "kept", "septet pool 500", report)
    assert kept.parent == tmp_path / "kept"
    assert kept.name.startswith("septet-pool-500-")
    assert {p.name for p in kept.iterdir()} >= {"septet.toml", "journal.db", "stuck.json"}
    again = msgspec.json.decode((kept / "stuck.json").read_bytes())
    assert again["unfinished_ids"] == [waiting.msg_id]
    assert again["shown"][0]["summary"]["status"] == "accepted"
