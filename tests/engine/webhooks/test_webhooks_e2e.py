"""Webhooks through a real daemon over real HTTP on 127.0.0.1, from a real SQLite journal.

- a receiver killed with kill -9 mid-run and started again still gets every event, each
  event id at least once (copies on the wire allowed), every signature verified by the
  code docs/webhooks.md gives receivers;
- a daemon killed with kill -9 mid-run and started again on the same journal loses no
  webhook, and every state change it kept has its event (the feed commits with it);
- callback URLs on loopback are refused with a sentence unless the allow-list names the
  host; a 410 stops that URL for that message.

The daemon, the simulators and the kill-9 receiver run as their own processes.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import msgspec
import pytest
from aiohttp import web

from engine.webhooks.settings import WebhookSettings
from tests.engine.daemon_harness import connected, daemon_settings, running_daemon
from tests.engine.test_restart import LineClient
from tests.engine.webhooks.test_signing import documented_verifier
from tests.reliability.harness import free_port, simulators

pytestmark = pytest.mark.slow

SECRET = "webhook-test-secret"
SECRET_ENV = "SEPTET_TEST_WEBHOOK_SECRET"
WAIT_S = 90.0


# ── processes ───────────────────────────────────────────────────────────────────────


@contextmanager
def receiver(port: int, record: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The receiver of tests/engine/webhooks/receiver.py in its own process."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.engine.webhooks.receiver", str(port), str(record)],
        stdout=subprocess.PIPE,
        stderr=log.open("ab"),
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == b"listening", log.read_text()
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)


def write_config(
    tmp_path: Path, sim_url: str, tcp_port: int, http_port: int, hook_url: str
) -> Path:
    bridges = {
        "dsc": 'credentials = { api_key = "demo", username = "demo", password = "demo", '
        'callback_username = "cb", callback_password = "cbpass" }',
        "routemobile": 'credentials = { username = "demo", password = "demo" }',
        "bsg": 'credentials = { api_key = "test_demo" }',
        "smsclub": 'credentials = { token = "demo" }',
    }
    text = [
        f'[journal]\npath = "{tmp_path / "septet.db"}"\n',
        f'[ingress]\ntcp = "127.0.0.1:{tcp_port}"\nunix = ""\n',
        f'[http]\nlisten = "127.0.0.1:{http_port}"\n',
        # No SMPP listener: its default port (2775) may be taken by another process here.
        '[smpp]\nlisten = ""\n',
        # Messages the kill left with an unknown outcome end (UNKNOWN) soon, with their event
        # (the deadline looked for every 0.2 s, not the default 5 s).
        "[reports]\ntimeout_s = 3.0\nsweep_s = 0.2\n",
        f'[webhooks]\ndefault_url = "{hook_url}"\nallowed_hosts = ["127.0.0.1"]\n'
        f'secret = "env:{SECRET_ENV}"\nbase_s = 0.05\nmax_delay_s = 0.5\ntimeout_s = 2.0\n'
        "concurrency = 8\n",
    ]
    for name, credentials in bridges.items():
        text.append(
            f'[bridges.{name}]\ndriver = "{name}"\nbase_url = "{sim_url}"\n{credentials}\n'
            'default_sender = "SEPTET"\npool = 10\npoll_interval_s = 0.3\n'
            "requests_per_s = 10000.0\nrequests_burst = 10000.0\n"
        )
    path = tmp_path / "septet.toml"
    path.write_text("".join(text))
    return path


def start_daemon(config: Path, tmp_path: Path, tcp_port: int, run: int) -> subprocess.Popen[bytes]:
    log = tmp_path / f"daemon-{run}.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "engine", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
        env={**os.environ, SECRET_ENV: SECRET},
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", tcp_port), timeout=0.5).close()
            return process
        except OSError:
            assert process.poll() is None, log.read_text()
            time.sleep(0.05)
    raise AssertionError("the daemon did not start listening")


# ── what was received, what the journal holds ─────────────────────────────────────


def received(record: Path) -> list[dict[str, Any]]:
    if not record.exists():
        return []
    lines = record.read_bytes().split(b"\n")
    return [msgspec.json.decode(line) for line in lines if line.strip()]


def journal(path: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
        return connection.execute(sql).fetchall()


def wait_until(what: str, condition: Callable[[], bool], timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting until {what}")


def all_delivered(db: Path, record: Path) -> bool:
    """Nothing unsent or in flight, no delivery owed, and every event id received."""
    if journal(db, "SELECT count(*) FROM messages WHERE state < 2")[0][0]:
        return False
    if journal(db, "SELECT count(*) FROM deliveries")[0][0]:
        return False
    ids = {row[0] for row in journal(db, "SELECT id FROM events")}
    return ids <= {int(r["event_id"]) for r in received(record)}


def check_every_record(records: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Each POST is signed (the documented snippet verifies it) and names its own event;
    returns event id -> event (copies of one id must be the same event)."""
    verify = documented_verifier()
    events: dict[int, dict[str, Any]] = {}
    for record in records:
        body = record["body"].encode()
        assert verify(SECRET, record["signature"], body), record
        event = msgspec.json.decode(body)
        assert event["event_id"] == int(record["event_id"])
        assert events.setdefault(event["event_id"], event) == event
    return events


def lines_for(count: int, hook_url: str) -> list[bytes]:
    """Half name their own callback URL (another path on the receiver), half use the
    default; all end DELIVRD on dsc (one report each, by callback)."""
    return [
        msgspec.json.encode(
            {
                "id": f"w{n}",
                "to": f"+2507881{n:05d}",
                "text": f"webhook {n}",
                **({"callback_url": f"{hook_url}/own"} if n % 2 else {}),
            }
        )
        for n in range(count)
    ]


# ── a receiver killed mid-run ─────────────────────────────────────────────────────


def test_a_receiver_killed_and_restarted_gets_every_event(tmp_path: Path) -> None:
    count = 120
    tcp_port, http_port, hook_port = free_port(), free_port(), free_port()
    hook_url = f"http://127.0.0.1:{hook_port}/hook"
    record = tmp_path / "received.ndjson"
    db = tmp_path / "septet.db"
    with simulators(tmp_path) as sim_url:
        httpx.post(
            f"{sim_url}/_sim/config", json={"latency_ms": 20, "dlr_mix": {"DELIVRD": 1.0}}
        ).raise_for_status()
        config = write_config(tmp_path, sim_url, tcp_port, http_port, hook_url)
        daemon = start_daemon(config, tmp_path, tcp_port, 1)
        try:
            client = LineClient(tcp_port)
            with receiver(hook_port, record, tmp_path / "receiver.log") as first:
                client.send(*lines_for(count, hook_url))
                wait_until("the receiver got some events", lambda: len(received(record)) >= 20)
                first.send_signal(signal.SIGKILL)
            before = {int(r["event_id"]) for r in received(record)}
            # The daemon goes on while the receiver is down: every message ends.
            client.read_until(lambda events: sum(e["event"] == "dlr" for e in events) == count)
            owed = journal(db, "SELECT count(*) FROM deliveries")[0][0]
            assert owed > 0  # events of the down time wait in the journal
            with receiver(hook_port, record, tmp_path / "receiver.log"):
                wait_until("every event was delivered", lambda: all_delivered(db, record))
        finally:
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(30) == 0

    events = check_every_record(received(record))
    journaled = {row[0] for row in journal(db, "SELECT id FROM events")}
    assert set(events) == journaled  # every id arrived; nothing the journal lacks
    assert before < set(events)
    kinds: dict[str, list[str]] = {}
    for event_id in sorted(events):
        kinds.setdefault(events[event_id]["msg_id"], []).append(events[event_id]["event"])
    assert len(kinds) == count
    for sequence in kinds.values():
        assert [k for k in sequence if k != "status"] == ["accepted", "submitted", "dlr"]
    paths = {record["path"] for record in received(record)}
    assert paths == {"/hook", "/hook/own"}


# ── the daemon killed mid-run ─────────────────────────────────────────────────────


def test_a_daemon_killed_mid_run_loses_no_webhook(tmp_path: Path) -> None:
    count = 300
    tcp_port, http_port, hook_port = free_port(), free_port(), free_port()
    hook_url = f"http://127.0.0.1:{hook_port}/hook"
    record = tmp_path / "received.ndjson"
    db = tmp_path / "septet.db"
    with (
        simulators(tmp_path) as sim_url,
        receiver(hook_port, record, tmp_path / "receiver.log"),
    ):
        httpx.post(
            f"{sim_url}/_sim/config",
            json={
                "latency_ms": 30,
                "dlr_mix": {"DELIVRD": 1.0},
                "routemobile_dlr_url": f"http://127.0.0.1:{http_port}/dlr/routemobile",
            },
        ).raise_for_status()
        config = write_config(tmp_path, sim_url, tcp_port, http_port, hook_url)
        daemon = start_daemon(config, tmp_path, tcp_port, 1)
        client = LineClient(tcp_port)
        client.send(*lines_for(count, hook_url))
        client.read_until(lambda events: sum(e["event"] == "submitted" for e in events) >= 60)
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(10)
        client.sock.close()
        left = journal(db, "SELECT count(*) FROM messages WHERE state < 3")[0][0]
        assert left > 0  # killed mid-run: some messages had not ended

        daemon = start_daemon(config, tmp_path, tcp_port, 2)
        try:
            wait_until(
                "every message ended and every event was delivered",
                lambda: (
                    journal(db, "SELECT count(*) FROM messages WHERE state < 3")[0][0] == 0
                    and all_delivered(db, record)
                ),
            )
        finally:
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(30) == 0

    events = check_every_record(received(record))
    journaled = {row[0] for row in journal(db, "SELECT id FROM events")}
    assert set(events) == journaled
    # The feed commits with the state change: every final message has its final event,
    # every message its accepted one.
    finals = {str(row[0]) for row in journal(db, "SELECT msg_id FROM messages WHERE state = 3")}
    assert len(finals) == count
    ended = {e["msg_id"] for e in events.values() if e["event"] in ("dlr", "failed")}
    accepted = {e["msg_id"] for e in events.values() if e["event"] == "accepted"}
    assert finals == ended == accepted


# ── refusals, the allow-list, 410 (in-process daemon, in-process receiver) ────────


class Receiver:
    """An aiohttp receiver in the test's own loop; /gone answers 410."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str, str, bytes]] = []
        self.changed = anyio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.records.append(
            (
                request.path,
                request.headers["Septet-Event-Id"],
                request.headers["Septet-Signature"],
                body,
            )
        )
        self.changed.set()
        self.changed = anyio.Event()
        return web.Response(status=410 if request.path == "/gone" else 204)

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        with anyio.fail_after(20):
            while not predicate():
                await self.changed.wait()


@pytest.mark.anyio
async def test_loopback_callbacks_need_the_allow_list_and_410_stops_a_url(
    tmp_path: Path,
) -> None:
    hooks = Receiver()
    app = web.Application()
    app.router.add_post("/{tail:.*}", hooks.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    url = f"http://127.0.0.1:{port}"
    try:
        closed = daemon_settings(tmp_path / "closed", webhooks=WebhookSettings(secret=SECRET))
        (tmp_path / "closed").mkdir()
        async with running_daemon(closed) as daemon, connected(daemon) as client:
            await client.send({"to": "+250788100001", "text": "hi", "callback_url": f"{url}/h"})
            await client.wait_for(lambda events: bool(client.of("rejected")))
            [rejected] = client.of("rejected")
            assert rejected["error"] == (
                "callback_url host '127.0.0.1' is a loopback address; septet calls only public"
                " addresses unless the account's webhook allowed_hosts lists the host"
            )
            assert client.of("accepted") == []

        allowed = WebhookSettings(secret=SECRET, allowed_hosts=["127.0.0.1"], base_s=0.05)
        (tmp_path / "open").mkdir()
        settings = daemon_settings(tmp_path / "open", webhooks=allowed)
        async with running_daemon(settings) as daemon, connected(daemon) as client:
            await daemon.sim_config({"dlr_mix": {"DELIVRD": 1.0}})
            await client.send(
                {"id": "kept", "to": "+250788100002", "text": "hi", "callback_url": f"{url}/h"},
                {"id": "gone", "to": "+250788100003", "text": "hi", "callback_url": f"{url}/gone"},
            )
            await client.wait_for(lambda events: len(client.of("dlr")) == 2)
            await hooks.wait_for(
                lambda: [r[0] for r in hooks.records].count("/h") >= 3  # accepted, submitted, dlr
            )
            # Every owed delivery settled: the "gone" message's later events were dropped
            # without a POST (its URL answered 410 to the first), not left to retry.
            db = tmp_path / "open" / "septet.db"
            with anyio.fail_after(20):
                while journal(db, "SELECT count(*) FROM deliveries")[0][0]:  # noqa: ASYNC110
                    await anyio.sleep(0.05)
        verify = documented_verifier()
        for _path, event_id, header, body in hooks.records:
            assert verify(SECRET, header, body)
            assert msgspec.json.decode(body)["event_id"] == int(event_id)
        gone = [msgspec.json.decode(r[3]) for r in hooks.records if r[0] == "/gone"]
        assert [(e["event"], e["id"]) for e in gone] == [("accepted", "gone")]
        kept = [msgspec.json.decode(r[3])["event"] for r in hooks.records if r[0] == "/h"]
        assert [k for k in kept if k != "status"][:1] == ["accepted"]
        assert {"accepted", "submitted", "dlr"} <= set(kept)
    finally:
        await runner.cleanup()
