"""A report stored before a kill -9 still resolves its message after the restart.

dsc takes the message and holds its reply (the simulator's `timeout_after` fault); its
report comes while the request is in flight and is stored as an orphan receipt, by
provider id and recipient. The daemon is killed there. On restart, crash recovery makes
the message unconfirmed (dsc cannot deduplicate a resend), and the stored report, matched
by recipient, resolves it: DELIVRD, nothing left stored, sent once.
"""

from __future__ import annotations

import signal
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tests.reliability import harness

pytestmark = pytest.mark.slow


def query(journal: Path, sql: str) -> list[Any]:
    with sqlite3.connect(f"file:{journal}?mode=ro", uri=True) as connection:
        return connection.execute(sql).fetchall()


def wait_for(check: Any, timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)  # a poll of the journal file, bounded by the deadline
    raise AssertionError(f"not seen within {timeout_s} s")


def test_a_report_stored_before_a_kill_resolves_its_message_after_the_restart(
    tmp_path: Path,
) -> None:
    journal = tmp_path / "septet.db"
    with harness.simulators(tmp_path) as sim:
        config = harness.write_config(tmp_path, sim, timeout_s=30.0, report_timeout_s=60.0)
        harness.configure_simulators(
            sim, {"dlr_delay_s": 0.3, "dlr_retries": 10, "dlr_mix": {"DELIVRD": 1.0}}
        )
        harness.configure_simulators(
            sim, {"fail_rate": 1.0, "faults": {"timeout_after": 1.0}}, "dsc"
        )
        daemon = harness.start_daemon(config, tmp_path / "daemon-1.log")
        try:
            with socket.create_connection(("127.0.0.1", config.tcp_port)) as client:
                line = {"id": "r1", "to": "+250788100001", "text": "hello"}
                client.sendall(msgspec.json.encode(line) + b"\n")
                wait_for(
                    lambda: (
                        query(journal, "SELECT 1 FROM messages WHERE state = 1")
                        and query(journal, "SELECT 1 FROM orphan_receipts")
                    ),
                    20,
                )
                daemon.send_signal(signal.SIGKILL)
                daemon.wait(10)
            daemon = harness.start_daemon(config, tmp_path / "daemon-2.log")
            rows = wait_for(
                lambda: query(journal, "SELECT state, outcome FROM messages WHERE state = 3"),
                30,
            )
            assert rows == [(3, "DELIVRD")]
            assert query(journal, "SELECT * FROM orphan_receipts") == []
            assert harness.recipients_reached(sim) == {"250788100001": 1}
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(30)
