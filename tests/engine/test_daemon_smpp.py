"""SMPP through the whole daemon: an smpplib client submits, septet sends to the simulated
provider, and the provider's delivery report comes back as deliver_sm receipts (to the
bind group that submitted it, in the account's alphabet); when the daemon stops
(cancelled, or drained on SIGTERM), bound ESMEs are sent an unbind first."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
import smpplib.gsm

from engine.accounts import AccountSettings, SmppLogin
from engine.smpp import pdu as p
from engine.smpp.codec import PduReader, decode_pdu, encode_pdu
from engine.smpp.text import decode_text
from tests.engine.daemon_harness import daemon_settings, running_daemon
from tests.engine.smpp.raw_client import RawClient
from tests.engine.smpp.test_real_clients import RECEIPT, SmpplibSession


@pytest.mark.anyio
async def test_smpp_submit_reaches_the_provider_and_receipts_come_back(tmp_path: Path) -> None:
    async with running_daemon(daemon_settings(tmp_path)) as daemon:
        await daemon.sim_config({"dlr_mix": {"DELIVRD": 1.0}})
        session = SmpplibSession(daemon.smpp_port)
        await session.bind()
        try:
            short_ids = await session.send("Hello over SMPP")
            long_ids = await session.send("Довге повідомлення з емодзі 👋 " * 4)
            assert len(long_ids) > 1  # smpplib split it; septet reassembles it
            with anyio.fail_after(20):
                receipts = await session.receipts(len(short_ids) + len(long_ids))
        finally:
            await session.close()
        counters = await daemon.sim_counters()
    texts = [pdu.short_message.decode() for pdu in receipts]
    matched = [RECEIPT.fullmatch(text) for text in texts]
    assert all(matched), texts
    receipted = {m["id"] for m in matched if m}
    assert receipted == set(short_ids) | set(long_ids)  # one receipt per id given out
    assert {m["stat"] for m in matched if m} == {"DELIVRD"}
    # Two messages reached the provider: the long one went as one message, not per part.
    assert counters["dsc"]["accepted_total"] == 2


@pytest.mark.anyio
async def test_two_kannel_links_with_alt_charset_through_the_daemon(tmp_path: Path) -> None:
    # Two Kannel smsc groups (alt-charset = ISO-8859-1, a system-type each) on one
    # account whose data_coding_0 is "latin1": each link's text reaches the provider as
    # written, and each link gets the receipts of its own messages only.
    base = daemon_settings(tmp_path)
    login = SmppLogin(password="secret", data_coding_0="latin1")
    settings = msgspec.structs.replace(
        base, accounts={"kannel": AccountSettings(smpp=login)}, ingress=base.ingress
    )
    texts = {"link-a": "Grüße aus Köln", "link-b": "Schöne Grüße"}
    async with running_daemon(settings) as daemon:
        await daemon.sim_config({"dlr_mix": {"DELIVRD": 1.0}})
        links = {
            name: SmpplibSession(
                daemon.smpp_port, system_id="kannel", password="secret", system_type=name
            )
            for name in texts
        }
        try:
            for link in links.values():
                await link.bind()
            sent = {
                name: await link.send_octets(texts[name].encode("latin-1"), 0)
                for name, link in links.items()
            }
            # GSM 03.38 octets on this account: ß (0x1E) is a control character in Latin-1.
            refused = await links["link-a"].send_octets(smpplib.gsm.gsm_encode("Grüße"), 0)
            assert refused == p.ESME_RSUBMITFAIL
            with anyio.fail_after(20):
                receipts = {name: (await link.receipts(1))[0] for name, link in links.items()}
        finally:
            for link in links.values():
                await link.close()
    for name, receipt in receipts.items():
        # The receipt's text is in the account's alphabet for 0, as Kannel reads it.
        assert receipt.data_coding == 0
        match = RECEIPT.fullmatch(decode_text(receipt.short_message, "latin1"))
        assert match is not None
        assert (match["id"], match["stat"], match["text"]) == (sent[name], "DELIVRD", texts[name])


@pytest.mark.anyio
async def test_a_stopping_daemon_unbinds_a_bound_esme(tmp_path: Path) -> None:
    seen: list[p.AnyPdu] = []

    async def esme(client: RawClient) -> None:
        with anyio.fail_after(10):
            unbind = await client.read()
            seen.append(unbind)
            await client.send(p.UnbindResp(sequence_number=unbind.sequence_number))
            assert await client.closed_by_server()

    async with (
        anyio.create_task_group() as tg,
        running_daemon(daemon_settings(tmp_path)) as daemon,
    ):
        client = await RawClient.connect(daemon.smpp_port)
        assert (await client.bind(p.BindReceiver)).command_status == p.ESME_ROK
        tg.start_soon(esme, client)
    (unbind,) = seen
    assert isinstance(unbind, p.Unbind)
    await client.stream.aclose()


# ── SIGTERM, in a process of its own ──────────────────────────────────────────


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / "septet.toml"
    path.write_text(
        f'[journal]\npath = "{tmp_path / "septet.db"}"\n'
        '[ingress]\ntcp = "127.0.0.1:0"\nunix = ""\n'
        '[http]\nlisten = "127.0.0.1:0"\n'
        '[smpp]\nlisten = "127.0.0.1:0"\n'
    )
    return path


def read_log_until(process: subprocess.Popen[bytes], event: str) -> dict[str, Any]:
    """The daemon's JSON log lines on stderr, up to the first `event` line."""
    assert process.stderr is not None
    for raw in process.stderr:
        try:
            line = json.loads(raw)
        except ValueError:
            continue  # not a log line (a warning from Python itself)
        if isinstance(line, dict) and line.get("event") == event:
            return line
    raise AssertionError(f"the daemon exited without logging {event}")


class BlockingEsme:
    """A bound transceiver on a plain socket, septet's codec for the PDUs."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.reader = PduReader()
        self.frames: list[bytes] = []

    def send(self, pdu: p.Pdu) -> None:
        self.sock.sendall(encode_pdu(pdu))

    def read(self) -> p.AnyPdu | None:
        """The next PDU; None when the daemon closed the connection."""
        while not self.frames:
            data = self.sock.recv(65536)
            if not data:
                return None
            self.frames.extend(self.reader.feed(data))
        return decode_pdu(self.frames.pop(0))


def test_sigterm_unbinds_bound_esmes_before_the_daemon_exits(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "engine", "run", "--config", str(write_config(tmp_path))],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        port = read_log_until(process, "smpp_listening")["port"]
        esme = BlockingEsme(port)
        esme.send(p.BindTransceiver(sequence_number=1, system_id="demo", password="demo"))
        bound = esme.read()
        assert isinstance(bound, p.BindTransceiverResp)
        assert bound.command_status == p.ESME_ROK
        process.send_signal(signal.SIGTERM)
        unbind = esme.read()
        assert isinstance(unbind, p.Unbind)
        esme.send(p.UnbindResp(sequence_number=unbind.sequence_number))
        assert esme.read() is None  # closed by the daemon once answered
        closed = read_log_until(process, "smpp_closed")
        assert closed["reason"] == "unbind answered"
        assert process.wait(20) == 0  # drained and exited cleanly
        esme.sock.close()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        assert process.stderr is not None
        process.stderr.close()


def test_a_corrupt_smpp_store_is_one_sentence_and_exit_2(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    (tmp_path / "septet.smpp.db").write_bytes(b"this is not an SQLite file" * 100)
    finished = subprocess.run(
        [sys.executable, "-m", "engine", "run", "--config", str(config)],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert finished.returncode == 2  # it could not start (engine.commands.run)
    last = finished.stderr.decode().strip().splitlines()[-1]
    assert last.startswith("septet run: ")
    assert "septet.smpp.db" in last
    assert b"Traceback" not in finished.stderr
