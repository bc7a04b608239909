"""Out-of-process septet for reliability tests: simulators and daemon as subprocesses.

The simulators run in their own process so their counters outlive every daemon that is
killed; the daemon runs as `python -m engine run --config FILE`, exactly as a user
starts it, so `kill -9` hits the real thing. Every wait here is a bounded poll of
something observable (a port that answers, a journal row count), never a fixed sleep.
`classify` tells how a message ended (its `Fate`) from its journal row and how many
times the providers accepted it.
"""

from __future__ import annotations

import enum
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec

from engine.lifecycle import STATE_OF_SMPP
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

# Bridge credentials the simulators accept (docs/design.md, "septet simulate").
CREDENTIALS: dict[str, str] = {
    "dsc": 'credentials = { api_key = "demo", username = "demo", password = "demo", '
    'callback_username = "cb", callback_password = "cbpass" }',
    "routemobile": 'credentials = { username = "demo", password = "demo" }',
    "bsg": 'credentials = { api_key = "test_demo" }',
    "smsclub": 'credentials = { token = "demo" }',
}

# `[reports] sweep_s` wherever a test sets a report deadline: a message past it ends
# within half a second, not up to the default sweep's 5 s.
REPORT_SWEEP_S = 0.5

# Journal states (engine.journal): 0 accepted, 1 inflight, 2 submitted or unconfirmed
# (awaiting a report), 3 final.
FINAL_STATE = 3


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


def provider_requests(sim_url: str) -> dict[str, int]:
    """ "<provider> <method> <path>" -> how many requests the simulators answered there."""
    counters = httpx.get(f"{sim_url}/_sim/counters").json()
    return {
        f"{name} {label}": sum(by_status.values())
        for name, provider in counters.items()
        for label, by_status in provider["requests"].items()
    }


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
    report_timeout_s: float | None = None,
) -> DaemonConfig:
    """A config for the four bridges against `sim_url`, on fixed free ports (a restarted
    daemon must come back on the same ones: the simulators call back there).
    `report_timeout_s`: `[reports] timeout_s`, how long a message waits for its final
    report before it ends UNKNOWN (None: the daemon's default, 72 h); with it, the
    deadline is looked for every REPORT_SWEEP_S (not the default 5 s)."""
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
    if report_timeout_s is not None:
        text.append(f"[reports]\ntimeout_s = {report_timeout_s}\nsweep_s = {REPORT_SWEEP_S}\n")
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
    """One message as the journal holds it (engine.journal's `messages` columns)."""

    msg_id: str
    client_ref: str | None
    to: str
    bridge: str | None
    state: int
    outcome: str | None
    code: str | None
    error: str | None  # septet's own reason; NULL when a provider's report made it final
    submitted: bool  # submitted_at is set: taken by the provider, or unconfirmed
    provider_id: str | None
    priced: bool  # the submit reply carried a price (submit_cost)
    attempt: int
    maybe_sent: bool  # an attempt may have reached the provider without a reply saying so


# Every message row, in the columns `journal_rows` reads; the same on both backends.
SQL_JOURNAL_ROWS = (
    "SELECT msg_id, client_ref, bridge, state, outcome, code, error, submitted_at,"
    " provider_id, submit_cost, attempt, maybe_sent, body FROM messages"
)


def journal_rows(rows: Iterable[Sequence[Any]]) -> list[JournalRow]:
    """`SQL_JOURNAL_ROWS`'s rows as JournalRows."""
    return [
        JournalRow(
            msg_id=str(row[0]),
            client_ref=row[1],
            to=message_decoder.decode(row[12]).to,
            bridge=row[2],
            state=row[3],
            outcome=row[4],
            code=row[5],
            error=row[6],
            submitted=row[7] is not None,
            provider_id=row[8],
            priced=row[9] is not None,
            attempt=row[10],
            maybe_sent=row[11] > 0,
        )
        for row in rows
    ]


def read_journal(path: Path) -> list[JournalRow]:
    """Every message row, read beside a running (or killed) daemon."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
        return journal_rows(connection.execute(SQL_JOURNAL_ROWS).fetchall())


def count_not_final(path: Path) -> int:
    """Messages not yet final: unsent, in flight, or awaiting a report."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
        count: int = connection.execute(
            "SELECT count(*) FROM messages WHERE state < ?", (FINAL_STATE,)
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


# ── How each message ended ──────────────────────────────────────────────────────

# engine.lifecycle.on_report_deadline: the code of a message ended UNKNOWN because no
# final report came by its deadline.
NO_REPORT_CODE = "no_report"
# The states a provider's report can end a message in (SMPP v3.4 Appendix B).
REPORT_STATES = frozenset(STATE_OF_SMPP)


class Fate(enum.Enum):
    """How one message ended: its journal row read against the provider's accept count."""

    REPORTED = enum.auto()  # sent once; the provider's report made it final
    RESENT = enum.auto()  # maybe sent; resent where the provider deduplicates, taken once
    RESOLVED = enum.auto()  # outcome unknown; the provider's later report made it final
    NO_REPORT_UNSENT = enum.auto()  # outcome unknown; no report by the deadline; never taken
    NO_REPORT_TAKEN = enum.auto()  # outcome unknown; no report by the deadline; taken once
    NO_ID = enum.auto()  # outcome unknown; the provider has it and gave no id to ask by
    REPORT_LOST = enum.auto()  # taken once, its id in the reply, yet no report by the deadline
    FAILED = enum.auto()  # never sent, failed
    DOUBLE = enum.auto()  # a provider took it twice or more
    WAITING = enum.auto()  # not final at the end
    MISREPORTED = enum.auto()  # anything else: the journal says what did not happen


LABELS: dict[Fate, str] = {
    Fate.REPORTED: "sent once, reported",
    Fate.RESENT: "maybe sent, resent (the provider dedupes), reported",
    Fate.RESOLVED: "outcome unknown, resolved by a later report",
    Fate.NO_REPORT_UNSENT: "outcome unknown, no report by deadline, provider took it 0x",
    Fate.NO_REPORT_TAKEN: "outcome unknown, no report by deadline, provider took it 1x",
    Fate.NO_ID: "outcome unknown, ended at once (no id to ask by)",
    Fate.REPORT_LOST: "sent once, no report by deadline",
    Fate.FAILED: "never sent, failed",
    Fate.DOUBLE: "sent twice",
    Fate.WAITING: "still waiting at the end",
    Fate.MISREPORTED: "misreported",
}


def resend_was_taken(row: JournalRow) -> bool:
    """A maybe-sent message resent where the provider deduplicates, and taken as new (so
    the earlier attempt had not reached it): the resend's reply gave its id. SMS Club's
    answer to a duplicate (453) and BSG's (error 23, no id and no price: bridges.bsg)
    say the earlier attempt got there; the message's report is then matched another way."""
    if row.attempt == 0 or row.provider_id is None:
        return False
    return row.bridge == "smsclub" or (row.bridge == "bsg" and row.priced)


def classify(row: JournalRow, times: int) -> Fate:
    """`row`'s fate, the provider having accepted its recipient `times` times."""
    if times > 1:
        return Fate.DOUBLE
    if row.state < FINAL_STATE:
        return Fate.WAITING
    if not row.submitted:
        # Final before any provider took it; a maybe-sent message is never failed so.
        return Fate.FAILED if times == 0 and not row.maybe_sent else Fate.MISREPORTED
    # Its id came in a reply to a send the provider took as new: no doubt where it is.
    id_known = not row.maybe_sent or resend_was_taken(row)
    if row.error is None and row.outcome in REPORT_STATES:  # a provider's report ended it
        if times != 1:
            return Fate.MISREPORTED  # a report matched to a message the provider never took
        if id_known:
            return Fate.RESENT if row.maybe_sent else Fate.REPORTED
        return Fate.RESOLVED
    if row.outcome == "UNKNOWN" and row.code == NO_REPORT_CODE:
        if id_known:
            return Fate.REPORT_LOST if times else Fate.MISREPORTED
        return Fate.NO_REPORT_TAKEN if times else Fate.NO_REPORT_UNSENT
    if row.outcome == "UNKNOWN" and row.maybe_sent and row.provider_id is None and times == 1:
        return Fate.NO_ID
    return Fate.MISREPORTED


def describe_row(row: JournalRow, times: int) -> str:
    return f"{msgspec.structs.asdict(row)}, provider accepts {times}"
