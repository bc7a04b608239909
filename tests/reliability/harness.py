"""Out-of-process septet for reliability tests: simulators and daemon as subprocesses.

The simulators run in their own process so their counters outlive every daemon that is
killed; the daemon runs as `python -m engine run --config FILE`, exactly as a user
starts it, so `kill -9` hits the real thing. Every wait here is a bounded poll of
something observable (a port that answers, a journal row count), never a fixed sleep.
"""

from __future__ import annotations

import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec

from engine.models import Message

message_decoder = msgspec.msgpack.Decoder(Message)

# One prefix per provider under the embedded default routes (engine.routing): Rwanda to
# dsc, India to routemobile, the UK to bsg, Ukraine to smsclub. Five digits follow.
PROVIDER_PREFIXES: dict[str, str] = {
    "dsc": "+2507881",
    "routemobile": "+9198123",
    "bsg": "+4477009",
    "smsclub": "+3805012",
}
BRIDGES: tuple[str, ...] = tuple(PROVIDER_PREFIXES)

# Bridge credentials the simulators accept (DESIGN.md, "septet simulate").
CREDENTIALS: dict[str, str] = {
    "dsc": 'credentials = { api_key = "demo", username = "demo", password = "demo", '
    'callback_username = "cb", callback_password = "cbpass" }',
    "routemobile": 'credentials = { username = "demo", password = "demo" }',
    "bsg": 'credentials = { api_key = "test_demo" }',
    "smsclub": 'credentials = { token = "demo" }',
}

# Journal states (engine.journal): 0 accepted, 1 inflight, 2 submitted, 3 final.
SUBMITTED_STATE = 2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def simulators(workdir: Path) -> Iterator[str]:
    """All four provider simulators in a subprocess; yields their base URL."""
    with (workdir / "sim.log").open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "engine", "simulate", "all", "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=log_file,
        )
        try:
            assert process.stdout is not None
            line = process.stdout.readline().decode()
            assert line.startswith("listening on "), line
            yield line.split()[-1]
        finally:
            process.terminate()
            process.wait(10)


def configure_simulators(
    sim_url: str, changes: Mapping[str, Any], provider: str | None = None
) -> None:
    params = {"provider": provider} if provider else {}
    httpx.post(f"{sim_url}/_sim/config", params=params, json=dict(changes)).raise_for_status()


def recipients_reached(sim_url: str) -> dict[str, int]:
    """Recipient (digits only) -> how many times any provider accepted a message for it."""
    counters = httpx.get(f"{sim_url}/_sim/counters").json()
    reached: dict[str, int] = {}
    for provider in counters.values():
        for recipient, times in provider["accepted_by_recipient"].items():
            key = recipient.lstrip("+")
            reached[key] = reached.get(key, 0) + times
    return reached


@dataclass(frozen=True)
class DaemonConfig:
    path: Path
    journal: Path
    tcp_port: int
    http_port: int


def write_config(
    workdir: Path,
    sim_url: str,
    *,
    journal: Path | None = None,
    max_size_mb: float | None = None,
    timeout_s: float = 2.0,
    poll_interval_s: float = 0.5,
) -> DaemonConfig:
    """A config for the four bridges against `sim_url`, on fixed free ports (a restarted
    daemon must come back on the same ones: the simulators call back there)."""
    journal = journal or workdir / "septet.db"
    tcp_port, http_port = free_port(), free_port()
    journal_section = f'[journal]\npath = "{journal}"\n'
    if max_size_mb is not None:
        journal_section += f"max_size_mb = {max_size_mb}\n"
    text = [
        journal_section,
        f'[ingress]\ntcp = "127.0.0.1:{tcp_port}"\nunix = ""\n',
        f'[http]\nlisten = "127.0.0.1:{http_port}"\n',
        '[smpp]\nlisten = ""\n',
        "[retry]\nbase_s = 0.05\nmax_delay_s = 1.0\njitter = 0.1\n",
    ]
    for name, credentials in CREDENTIALS.items():
        text.append(
            f'[bridges.{name}]\ndriver = "{name}"\nbase_url = "{sim_url}"\n{credentials}\n'
            f'default_sender = "SEPTET"\npool = 10\npoll_interval_s = {poll_interval_s}\n'
            # BSG's own poll floor is a minute (engine.dlr): tests poll at their interval.
            f"poll_floor_s = {poll_interval_s}\n"
            f"timeout_s = {timeout_s}\nconnect_timeout_s = {timeout_s}\n"
            "requests_per_s = 10000.0\nrequests_burst = 10000.0\n"
        )
    path = workdir / "septet.toml"
    path.write_text("".join(text))
    return DaemonConfig(path=path, journal=journal, tcp_port=tcp_port, http_port=http_port)


def daemon_command(config: DaemonConfig) -> list[str]:
    return [sys.executable, "-m", "engine", "run", "--config", str(config.path)]


def start_daemon(
    config: DaemonConfig, log_path: Path, timeout_s: float = 30
) -> subprocess.Popen[bytes]:
    """Start `septet run` and return once its NDJSON port accepts connections."""
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            daemon_command(config), stdout=subprocess.DEVNULL, stderr=log_file
        )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", config.tcp_port), timeout=0.5).close()
            return process
        except OSError:
            if process.poll() is not None:
                raise AssertionError(f"the daemon exited: {log_path.read_text()[-2000:]}") from None
            time.sleep(0.05)  # a poll of the port, bounded by the deadline
    process.kill()
    process.wait(10)
    raise AssertionError("the daemon did not start listening")


class JournalRow(msgspec.Struct, frozen=True):
    msg_id: str
    client_ref: str | None
    to: str
    state: int
    outcome: str | None
    code: str | None
    error: str | None
    submitted: bool


def read_journal(path: Path) -> list[JournalRow]:
    """Every message row, read beside a running (or killed) daemon."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
        rows = connection.execute(
            "SELECT msg_id, client_ref, state, outcome, code, error, submitted_at, body"
            " FROM messages"
        ).fetchall()
    return [
        JournalRow(
            msg_id=str(row[0]),
            client_ref=row[1],
            to=message_decoder.decode(row[7]).to,
            state=row[2],
            outcome=row[3],
            code=row[4],
            error=row[5],
            submitted=row[6] is not None,
        )
        for row in rows
    ]


def count_unsent(path: Path) -> int:
    """Messages still accepted or in flight (not yet submitted nor final)."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
        count: int = connection.execute(
            "SELECT count(*) FROM messages WHERE state < ?", (SUBMITTED_STATE,)
        ).fetchone()[0]
        return count


def count_inflight(path: Path) -> int:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
        count: int = connection.execute(
            "SELECT count(*) FROM messages INDEXED BY messages_inflight WHERE state = 1"
        ).fetchone()[0]
        return count


def integrity_check(path: Path) -> str:
    with sqlite3.connect(path) as connection:
        return "\n".join(str(row[0]) for row in connection.execute("PRAGMA integrity_check"))


def is_outcome_unknown(row: JournalRow) -> bool:
    """Failed because the provider may or may not have taken it (engine.retry GiveUp,
    daemon._recover_inflight): the one case where 0 or 1 provider accepts are both right."""
    return (
        row.state == 3
        and row.outcome == "UNKNOWN"
        and not row.submitted
        and (
            row.code in {"unknown", "transport"} or (row.error or "").startswith("outcome unknown")
        )
    )
