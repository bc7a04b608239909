"""Helpers for the end-to-end outcome tests: settings per bridge, the journal's word on a
message, /readyz, and an smpplib client that submits to any destination."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import msgspec
import smpplib.client
import smpplib.consts
import smpplib.gsm
import smpplib.smpp

from engine.config import ReportSettings, Settings
from tests.engine.daemon_harness import Client, Daemon
from tests.engine.smpp.test_real_clients import RECEIPT

Predicate = Callable[[list[dict[str, Any]]], bool]


def with_bridge(settings: Settings, name: str, **changes: Any) -> Settings:
    """`settings` with bridge `name`'s config changed (poll interval, credentials, ...)."""
    bridges = dict(settings.bridges)
    bridges[name] = msgspec.structs.replace(bridges[name], **changes)
    return msgspec.structs.replace(settings, bridges=bridges)


# How often the daemon looks for messages past their report deadline, in these tests: a
# deadline of seconds is met within a fifth of one, not the default sweep's 5 s.
REPORT_SWEEP_S = 0.2


def with_report_timeout(settings: Settings, timeout_s: float) -> Settings:
    reports = ReportSettings(timeout_s=timeout_s, sweep_s=REPORT_SWEEP_S)
    return msgspec.structs.replace(settings, reports=reports)


def events_of(client: Client, msg_id: str) -> list[dict[str, Any]]:
    """Every event the client got for one message, in order."""
    return [event for event in client.events if event.get("msg_id") == msg_id]


def kinds_of(client: Client, msg_id: str) -> list[str]:
    return [event["event"] for event in events_of(client, msg_id)]


def dlrs_of(client: Client, msg_id: str) -> list[dict[str, Any]]:
    return [event for event in events_of(client, msg_id) if event["event"] == "dlr"]


def each_has_dlr(client: Client, msg_ids: list[str]) -> Predicate:
    return lambda events: all(dlrs_of(client, msg_id) for msg_id in msg_ids)


def accepted_ids(client: Client) -> dict[str, str]:
    """The client's own id -> septet's msg_id, for every accepted message."""
    return {event["id"]: event["msg_id"] for event in client.of("accepted")}


def journal_rows(journal_path: str, msg_ids: list[str]) -> dict[str, tuple[int, str | None]]:
    """msg_id -> (state code, outcome) as the journal file holds them (state 3 is final)."""
    connection = sqlite3.connect(f"file:{journal_path}?mode=ro", uri=True)
    try:
        placeholders = ", ".join("?" * len(msg_ids))
        rows = connection.execute(
            f"SELECT msg_id, state, outcome FROM messages WHERE msg_id IN ({placeholders})",  # noqa: S608 - placeholders only
            [int(msg_id) for msg_id in msg_ids],
        ).fetchall()
    finally:
        connection.close()
    return {str(msg_id): (state, outcome) for msg_id, state, outcome in rows}


async def readyz(daemon: Daemon) -> tuple[int, dict[str, Any]]:
    async with httpx.AsyncClient() as client:
        reply = await client.get(f"http://127.0.0.1:{daemon.http_port}/readyz")
    report: dict[str, Any] = reply.json()
    return reply.status_code, report


class SmppClient:
    """One smpplib client bound as demo/demo (a transceiver unless `bind` says otherwise);
    blocking calls run in a worker thread.

    Unlike tests.engine.smpp.test_real_clients.SmpplibSession it sends to any destination
    (so a message can be routed to any bridge) and keeps receipts by message id.
    """

    def __init__(self, port: int, bind: str = "transceiver") -> None:
        self.bind_type = bind
        self.client = smpplib.client.Client("127.0.0.1", port, allow_unknown_opt_params=True)
        self.sent: list[Any] = []
        self.received: list[Any] = []
        self.client.set_message_sent_handler(lambda pdu, **_: self.sent.append(pdu))
        self.client.set_message_received_handler(lambda pdu, **_: self.received.append(pdu))

    async def _run(self, work: Callable[..., Any], *args: Any) -> Any:
        return await anyio.to_thread.run_sync(work, *args)

    def _bind(self) -> None:
        self.client.connect()
        getattr(self.client, f"bind_{self.bind_type}")(system_id="demo", password="demo")

    def _submit(self, destination: str, text: str) -> None:
        parts, encoding, esm_class = smpplib.gsm.make_parts(text)
        assert len(parts) == 1, "one part per message keeps one id per message"
        self.client.send_message(
            source_addr_ton=smpplib.consts.SMPP_TON_ALNUM,
            source_addr="ACME",
            dest_addr_ton=smpplib.consts.SMPP_TON_INTL,
            destination_addr=destination,
            short_message=parts[0],
            data_coding=encoding,
            esm_class=esm_class,
            registered_delivery=1,
        )

    def _read_until(self, into: list[Any], count: int) -> None:
        while len(into) < count:
            self.client.read_once()

    async def bind(self) -> None:
        await self._run(self._bind)

    async def submit(self, destinations: list[str], text: str) -> list[str]:
        """Submit one short message to each destination; the ids septet gave, in order."""
        before = len(self.sent)
        for destination in destinations:
            await self._run(self._submit, destination, text)
        await self._run(self._read_until, self.sent, before + len(destinations))
        return [pdu.message_id.decode() for pdu in self.sent[before:]]

    async def receipts(self, count: int) -> list[dict[str, str]]:
        """The first `count` receipts (deliver_sm), parsed; waits until they are in."""
        await self._run(self._read_until, self.received, count)
        parsed = []
        for pdu in self.received[:count]:
            text = pdu.short_message.decode("ascii", "replace")
            match = RECEIPT.fullmatch(text)
            assert match is not None, text
            assert pdu.receipted_message_id.decode() == match["id"]
            parsed.append(match.groupdict())
        return parsed

    def _ping(self) -> None:
        """An enquire_link round trip: what the server sent before its answer is read
        (and each deliver_sm acknowledged) on the way."""
        self.client.send_pdu(smpplib.smpp.make_pdu("enquire_link", client=self.client))
        while (pdu := self.client.read_pdu()).command != "enquire_link_resp":
            if pdu.command == "deliver_sm":
                self.client._message_received(pdu)

    async def ping(self) -> None:
        await self._run(self._ping)

    async def close(self) -> None:
        await self._run(self.client.unbind)
        await self._run(self.client.disconnect)


def final_states(journal_path: str | Path, msg_ids: list[str]) -> dict[str, str | None]:
    """msg_id -> outcome, for the messages the journal holds as final."""
    return {
        msg_id: outcome
        for msg_id, (state, outcome) in journal_rows(str(journal_path), msg_ids).items()
        if state == 3
    }
