"""Overload, the short version: 20 socket clients and 3 SMPP binds against one daemon process.

tests.reliability.load does the work (the same run lasts minutes by hand:
`python -m tests.reliability.load --minutes 3`). Here it runs 20 s and checks what the
issue asks for: the daemon's memory stays flat because its queues are bounded, the
clients feel the backpressure (writes block, SMPP answers wait for queue room), SMPP
binds get a share of the queues comparable to a socket client's, and the provider gets
exactly the configured rate over a 10 s window, within 2%.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from tests.reliability.load import QUEUE_SIZE, run_load

pytestmark = pytest.mark.anyio

RATE = 200.0  # messages/s of the dsc bridge; the clients offer far more
# Long enough that the run's start (the first socket chunks fill the empty queue, 2,000
# messages: 10 s at RATE) is behind it: at 20 s each SMPP bind got 2.4-2.75 times a socket
# client's share in three runs (1.9 at 25 s; at 15 s, 4.3-4.9, past the bound below).
DURATION_S = 20.0
RSS_CAP_MIB = 300.0  # the daemon at rest is under 100 MiB


async def test_overload_keeps_memory_flat_pushes_back_and_holds_the_rate(tmp_path: Path) -> None:
    report = await run_load(DURATION_S, RATE, workdir=tmp_path)

    # Memory: the last third (median) is no more than the first, after warm-up, plus
    # 10% and a little; and never near the cap. The offered load never let up.
    assert report.rss_last_third_mib <= report.rss_first_third_mib * 1.10 + 5.0, report.rss_mib
    assert report.rss_peak_mib < RSS_CAP_MIB

    # Backpressure reached every kind of client: socket writes sat blocked most of the
    # time and lines written ran far ahead of answers; SMPP binds, which would submit
    # thousands a second, got no more accepted than the provider's rate and the queue
    # can hold: their answers waited for room (or were ESME_RTHROTTLED, SMPP v3.4 5.1.3).
    assert report.write_blocked_fraction > 0.5, report
    assert report.lines_ahead_of_answers > report.lines_accepted
    assert report.smpp_accepted <= RATE * DURATION_S + QUEUE_SIZE, report
    # Every client was served, none starved: each socket client got messages through to
    # the provider, and each SMPP bind got a share comparable to a socket client's
    # (about equal: one place in the queues' line each; it used to be 16 submits in all
    # while the queues were full). The bounds leave room for how the run starts (the
    # first socket chunks fill the empty queue) without hiding starvation either way.
    assert min(report.submitted_by_client) > 0, report.submitted_by_client
    socket_share = statistics.median(report.submitted_by_client)
    assert min(report.smpp_accepted_by_bind) >= 0.5 * socket_share, report
    assert max(report.smpp_accepted_by_bind) <= 4.0 * socket_share, report

    # SIGTERM under a full backlog drains what is in flight and starts nothing new (it
    # used to keep taking batches until its 30 s limit); the rest stays in the journal.
    assert report.drain_s is not None, report

    # The provider got the configured rate over the last 10 s, within 2%.
    assert abs(report.provider_rate / RATE - 1.0) <= 0.02, report.provider_taken
