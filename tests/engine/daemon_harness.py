"""A septet daemon in-process for tests: embedded simulators, free ports, a client that
collects events."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx
import msgspec

from engine.config import (
    ApiSettings,
    HttpSettings,
    IngressSettings,
    JournalSettings,
    RetrySettings,
    Settings,
    SimulatorSettings,
    default_settings,
)
from engine.daemon import run_daemon

FINAL = frozenset({"DELIVRD", "UNDELIV", "EXPIRED", "REJECTD", "DELETED", "UNKNOWN"})
# The least time between two polls of one BSG message in tests (BSG's own is 60 s).
BSG_TEST_POLL_FLOOR_S = 0.1


@dataclass
class Daemon:
    tcp_port: int
    http_port: int
    smpp_port: int
    sim_url: str
    unix_path: Path
    # The port of `[http] metrics_listen`, where it is set.
    metrics_port: int | None = None
    api_port: int | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    async def sim_config(self, changes: dict[str, Any], provider: str | None = None) -> None:
        params = {"provider": provider} if provider else {}
        async with httpx.AsyncClient() as client:
            reply = await client.post(f"{self.sim_url}/_sim/config", params=params, json=changes)
            reply.raise_for_status()

    async def sim_counters(self) -> dict[str, Any]:
        async with httpx.AsyncClient() as client:
            reply = await client.get(f"{self.sim_url}/_sim/counters")
            reply.raise_for_status()
            counters: dict[str, Any] = reply.json()
            return counters


def daemon_settings(tmp_path: Path, **changes: Any) -> Settings:
    base = default_settings()
    settings = msgspec.structs.replace(
        base,
        journal=JournalSettings(path=str(tmp_path / "septet.db")),
        ingress=IngressSettings(tcp="127.0.0.1:0", unix=str(tmp_path / "septet.sock")),
        http=HttpSettings(listen="127.0.0.1:0"),
        api=ApiSettings(listen="127.0.0.1:0"),
        retry=RetrySettings(base_s=0.05, max_delay_s=1.0, jitter=0.1),
        simulators=SimulatorSettings(enabled=True, dlr_delay_s=0.05),
        smpp=msgspec.structs.replace(base.smpp, listen="127.0.0.1:0"),
    )
    # BSG's one-minute poll floor (engine.dlr) would put every BSG report a minute away:
    # tests poll it every second (the simulator only counts that as abuse, in
    # `poll_abuse`; tests of the floor set its window to match).
    bridges = dict(settings.bridges)
    bridges["bsg"] = msgspec.structs.replace(
        bridges["bsg"], poll_interval_s=1.0, poll_floor_s=BSG_TEST_POLL_FLOOR_S
    )
    settings = msgspec.structs.replace(settings, bridges=bridges)
    return msgspec.structs.replace(settings, **changes)


@asynccontextmanager
async def running_daemon(settings: Settings) -> AsyncIterator[Daemon]:
    info: dict[str, Any] = {}
    ready = anyio.Event()

    def on_ready(details: dict[str, Any]) -> None:
        info.update(details)
        ready.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: run_daemon(settings, ready=on_ready))
        with anyio.fail_after(10):
            await ready.wait()
        assert settings.ingress.unix is not None
        yield Daemon(
            tcp_port=info["tcp_port"],
            smpp_port=info["smpp_port"],
            http_port=info["http_port"],
            sim_url=info["simulators"],
            unix_path=Path(settings.ingress.unix),
            metrics_port=info.get("metrics_port"),
            api_port=info.get("api_port"),
        )
        tg.cancel_scope.cancel()


@dataclass
class Client:
    """One NDJSON connection: send lines, collect every event that comes back."""

    stream: anyio.abc.ByteStream
    events: list[dict[str, Any]] = field(default_factory=list)
    _changed: anyio.Event = field(default_factory=anyio.Event)

    async def send(self, *items: dict[str, Any] | bytes) -> None:
        data = b"".join(
            (item if isinstance(item, bytes) else msgspec.json.encode(item)) + b"\n"
            for item in items
        )
        await self.stream.send(data)

    async def serve_reader(self) -> None:
        buffer = b""
        try:
            while True:
                buffer += await self.stream.receive(65536)
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line:
                        self.events.append(msgspec.json.decode(line))
                self._changed.set()
                self._changed = anyio.Event()
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            return

    async def wait_for(
        self, predicate: Callable[[list[dict[str, Any]]], bool], timeout_s: float = 20.0
    ) -> list[dict[str, Any]]:
        with anyio.fail_after(timeout_s):
            while not predicate(self.events):
                await self._changed.wait()
        return self.events

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [event for event in self.events if event["event"] == kind]

    def final_reports(self) -> dict[str, dict[str, Any]]:
        """msg_id -> the event that made it final (a final dlr or a failed)."""
        finals: dict[str, dict[str, Any]] = {}
        for event in self.events:
            if event["event"] == "failed" or (event["event"] == "dlr" and event["state"] in FINAL):
                finals.setdefault(event["msg_id"], event)
        return finals


@asynccontextmanager
async def connected(daemon: Daemon, *, unix: bool = False) -> AsyncIterator[Client]:
    if unix:
        stream: anyio.abc.ByteStream = await anyio.connect_unix(daemon.unix_path)
    else:
        stream = await anyio.connect_tcp("127.0.0.1", daemon.tcp_port)
    client = Client(stream)
    async with stream, anyio.create_task_group() as tg:
        tg.start_soon(client.serve_reader)
        yield client
        tg.cancel_scope.cancel()


def iso_in(seconds: float) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)).isoformat()
