"""The backlog gauges: counted from a real journal at most once per interval."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bench.journal import make_message
from engine.journal import StoreEvents
from engine.journal.sqlite import open_sqlite_journal
from engine.metrics import Metrics
from engine.observe import BacklogCounter


def gauge(metrics: Metrics, name: str) -> float | None:
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for item in family.samples:
            if item.name == name:
                return item.value
    return None


def backlog(metrics: Metrics) -> dict[str, float]:
    return {
        item.labels["state"]: item.value
        for family in text_string_to_metric_families(metrics.exposition().decode())
        for item in family.samples
        if item.name == "septet_backlog_messages"
    }


@pytest.mark.anyio
async def test_the_backlog_is_counted_at_most_once_per_interval(tmp_path: Path) -> None:
    metrics = Metrics(["dsc"])
    now = [100.0]
    async with open_sqlite_journal(tmp_path / "septet.db") as journal:
        counter = BacklogCounter(journal, metrics.operations, interval_s=15.0, clock=lambda: now[0])
        assert backlog(metrics) == {}  # never counted: no series rather than a false zero
        assert gauge(metrics, "septet_outbox_events") is None
        await journal.accept([[make_message(i, due_at=4e9)] for i in range(3)])
        # Two clients went away with events owed to them (engine.ingress.outbox).
        await journal.record([StoreEvents("tcp:1", [b"{}", b"{}"]), StoreEvents("unix:2", [b"{}"])])
        await counter.refresh()
        assert backlog(metrics) == {"accepted": 3, "inflight": 0, "submitted": 0}
        assert gauge(metrics, "septet_outbox_events") == 3
        await journal.accept([[make_message(i, due_at=4e9)] for i in range(3, 5)])
        now[0] += 14.9
        await counter.refresh()  # within the interval: the last count is served
        assert backlog(metrics)["accepted"] == 3
        assert await journal.take_events("tcp:1", 10) == [b"{}", b"{}"]
        now[0] += 0.1
        await counter.refresh()
        assert backlog(metrics)["accepted"] == 5
        assert gauge(metrics, "septet_outbox_events") == 1
