"""`septet send` against a running daemon: flags, NDJSON on stdin, --wait-dlr, --events."""

from __future__ import annotations

import os
import sqlite3
import sys
from pathlib import Path

import anyio
import msgspec
import pytest

from tests.engine.daemon_harness import connected, daemon_settings, running_daemon

pytestmark = pytest.mark.anyio


async def septet_send(
    *args: str, stdin: bytes = b"", env: dict[str, str] | None = None
) -> tuple[int, list[dict[str, object]]]:
    environment = {k: v for k, v in os.environ.items() if k != "SEPTET_API_KEY"}
    result = await anyio.run_process(
        [sys.executable, "-m", "engine", "send", *args],
        input=stdin,
        check=False,
        env={**environment, **(env or {})},
    )
    events = [msgspec.json.decode(line) for line in result.stdout.splitlines() if line]
    return result.returncode, events


async def test_send_ndjson_over_the_unix_socket_reports_rejections(tmp_path: Path) -> None:
    lines = b'{"to":"+250788200002","text":"ok"}\n{"to":"nope","text":"bad"}\n'
    async with running_daemon(daemon_settings(tmp_path)) as daemon:
        code, events = await septet_send("--socket", str(daemon.unix_path), stdin=lines)
    assert code == 1  # one line was rejected
    kinds = [e["event"] for e in events]
    assert kinds[:2] == ["accepted", "rejected"]


async def test_events_for_a_client_that_left_are_kept_and_fetched_once(tmp_path: Path) -> None:
    settings = daemon_settings(tmp_path)
    async with running_daemon(settings) as daemon:
        async with connected(daemon) as client:
            await client.send({"id": "left", "to": "+250788200003", "text": "bye"})
            await client.wait_for(lambda events: bool(client.of("accepted")))
        # The client is gone; its submitted and dlr events go to the journal's outbox.
        with anyio.fail_after(20):
            while True:
                code, events = await septet_send("--events", "--journal", settings.journal.path)
                assert code == 0
                if any(e["event"] == "dlr" for e in events):
                    break
                await anyio.sleep(0.2)
    assert all(e["id"] == "left" for e in events)
    code, again = await septet_send("--events", "--journal", settings.journal.path)
    assert again == []


async def test_send_from_flags_waits_for_the_delivery_report(tmp_path: Path) -> None:
    async with running_daemon(daemon_settings(tmp_path)) as daemon:
        await daemon.sim_config({"dlr_mix": {"DELIVRD": 1.0}})
        code, events = await septet_send(
            "--socket",
            f"127.0.0.1:{daemon.tcp_port}",
            "--to",
            "+250788200001",
            "--text",
            "hello",
            "--id",
            "cli-1",
            "--wait-dlr",
        )
    assert code == 0
    assert [e["event"] for e in events] == ["accepted", "submitted", "dlr"]
    assert events[-1]["state"] == "DELIVRD"


async def test_blank_line_keepalives_outlast_the_idle_timeout(tmp_path: Path) -> None:
    # The daemon closes a connection that completes no line for idle_timeout_s; waiting
    # for a report takes longer here, and the keep-alives hold the connection open.
    settings = daemon_settings(tmp_path)
    settings = msgspec.structs.replace(
        settings,
        ingress=msgspec.structs.replace(settings.ingress, idle_timeout_s=0.5),
    )
    flags = ("--to", "+250788200004", "--text", "slow report", "--wait-dlr", "--timeout", "20")
    async with running_daemon(settings) as daemon:
        await daemon.sim_config({"dlr_delay_s": 1.5, "dlr_mix": {"DELIVRD": 1.0}})
        address = f"127.0.0.1:{daemon.tcp_port}"
        code, events = await septet_send("--socket", address, "--keepalive", "0.1", *flags)
        assert code == 0
        assert [e["event"] for e in events] == ["accepted", "submitted", "dlr"]
        # Without them the daemon hangs up before the report comes.
        code, events = await septet_send("--socket", address, "--keepalive", "30", *flags)
    assert code == 1
    assert "dlr" not in [e["event"] for e in events]


TOKEN = "send-test_0123456789"


def kept_lines(journal: str) -> list[tuple[str, dict[str, object]]]:
    """The journal's outbox, read beside the daemon: (origin, event) in order."""
    with sqlite3.connect(f"file:{journal}?mode=ro", uri=True) as connection:
        rows = connection.execute("SELECT origin, line FROM outbox ORDER BY id").fetchall()
    return [(origin, msgspec.json.decode(line)) for origin, line in rows]


async def wait_kept(journal: str, ref: str) -> None:
    """Until the final report of `ref` is kept (a bounded poll of the journal)."""
    with anyio.fail_after(20):
        while not any(e["id"] == ref and e["event"] == "dlr" for _, e in kept_lines(journal)):  # noqa: ASYNC110 - polls a file
            await anyio.sleep(0.05)


async def test_send_with_a_session_prints_the_events_kept_for_it_first(tmp_path: Path) -> None:
    settings = daemon_settings(tmp_path)
    async with running_daemon(settings) as daemon:
        await daemon.sim_config({"dlr_mix": {"DELIVRD": 1.0}})
        async with connected(daemon) as client:
            await client.send(
                {"session": TOKEN}, {"id": "first", "to": "+250788200010", "text": "1"}
            )
            await client.wait_for(lambda events: bool(client.of("accepted")))
        await wait_kept(settings.journal.path, "first")
        flags = ("--to", "+250788200011", "--text", "2", "--id", "second", "--wait-dlr")
        code, events = await septet_send(
            "--socket", f"127.0.0.1:{daemon.tcp_port}", "--session", TOKEN, *flags
        )
    assert code == 0
    kinds = [e["event"] for e in events]
    opened = kinds.index("session")
    assert {e["id"] for e in events[:opened]} == {"first"}  # kept while it was away
    assert "dlr" in kinds[:opened]
    assert [k for k in kinds[opened + 1 :] if k != "status"] == ["accepted", "submitted", "dlr"]
    assert {e["id"] for e in events[opened + 1 :]} == {"second"}
    assert not [e for _, e in kept_lines(settings.journal.path) if e["id"] == "first"]


async def test_events_reads_one_session_or_one_origin_or_all(tmp_path: Path) -> None:
    settings = daemon_settings(tmp_path)
    journal = settings.journal.path
    async with running_daemon(settings) as daemon:
        await daemon.sim_config({"dlr_mix": {"DELIVRD": 1.0}})
        for n, first in enumerate(({"session": TOKEN}, {}, {})):
            async with connected(daemon) as client:
                ref = f"client-{n}"
                await client.send(
                    *([first] if first else []), {"id": ref, "to": f"+25078820002{n}", "text": "x"}
                )
                await client.wait_for(lambda events: bool(client.of("accepted")))
            await wait_kept(journal, ref)
    code, mine = await septet_send("--events", "--session", TOKEN, "--journal", journal)
    assert code == 0
    assert mine
    assert {e["id"] for e in mine} == {"client-0"}
    origins = {origin for origin, e in kept_lines(journal) if e["id"] == "client-1"}
    [origin] = origins
    code, theirs = await septet_send("--events", origin, "--journal", journal)
    assert code == 0
    assert theirs
    assert {e["id"] for e in theirs} == {"client-1"}
    code, rest = await septet_send("--events", "--journal", journal)
    assert code == 0
    assert rest
    assert {e["id"] for e in rest} == {"client-2"}
    code, none = await septet_send("--events", "--journal", journal)
    assert (code, none) == (0, [])


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (
            ("--session", "short", "--to", "+250788200030", "--text", "x"),
            "--session: a session token is 16 to 128 characters of A-Z, a-z, 0-9, _ and -",
        ),
        (
            ("--events", "tcp:x:1", "--session", TOKEN),
            "--events takes an ORIGIN or --session, not both",
        ),
    ],
)
async def test_bad_session_usage_is_one_sentence(args: tuple[str, ...], error: str) -> None:
    result = await anyio.run_process([sys.executable, "-m", "engine", "send", *args], check=False)
    assert result.returncode == 2
    assert error in result.stderr.decode()
    assert b"Traceback" not in result.stderr


async def test_send_as_an_account_with_its_key_from_the_environment(tmp_path: Path) -> None:
    # The embedded default's demo account has the API key "demo" (docs/accounts.md).
    flags = ("--to", "+250788200004", "--text", "hi")
    async with running_daemon(daemon_settings(tmp_path)) as daemon:
        socket = ("--socket", f"127.0.0.1:{daemon.tcp_port}")
        code, events = await septet_send(
            *socket, "--account", "demo", *flags, env={"SEPTET_API_KEY": "demo"}
        )
        assert (code, [e["event"] for e in events]) == (0, ["accepted"])
        code, events = await septet_send(
            *socket, "--account", "demo", *flags, env={"SEPTET_API_KEY": "wrong"}
        )
        assert code == 1
        assert [(e["event"], e["error"]) for e in events] == [
            ("rejected", "the account or its API key is wrong")
        ]
    result = await anyio.run_process(
        [sys.executable, "-m", "engine", "send", "--account", "demo", *flags],
        check=False,
        env={k: v for k, v in os.environ.items() if k != "SEPTET_API_KEY"},
    )
    assert result.returncode == 2
    assert b"--account needs the account's API key in $SEPTET_API_KEY" in result.stderr
