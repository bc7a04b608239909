"""Accounts through a running daemon: NDJSON auth lines and the listeners' account, client ids
per account, allowed senders, throughput and the daily quota on NDJSON and SMPP (smpplib),
the quota across a restart, and the old [[smpp.accounts]] form."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
import smpplib.consts
import smpplib.exceptions

from engine.accounts import AccountSettings, SmppLogin
from engine.config import IngressSettings, Settings, accounts_of, load_config
from engine.ingress.sessions import SessionProblem, describe
from tests.engine.daemon_harness import Client, connected, daemon_settings, running_daemon
from tests.engine.smpp.test_real_clients import SmpplibSession

pytestmark = pytest.mark.anyio

ACME_KEY = "acme-key-0123456789"
OTHER_KEY = "other-key-0123456789"
AUTH_FORM = describe(SessionProblem.AUTH_FORM)
TOKEN_FORM = describe(SessionProblem.TOKEN_FORM)


def line(**fields: Any) -> dict[str, Any]:
    return {"to": "+250788100001", "text": "hello", **fields}


def auth(account: str, key: str, **extra: Any) -> dict[str, Any]:
    return {"auth": {"account": account, "api_key": key}, **extra}


def with_accounts(tmp_path: Path, accounts: dict[str, AccountSettings], **ingress: Any) -> Settings:
    settings = daemon_settings(tmp_path, accounts=accounts)
    return msgspec.structs.replace(
        settings, ingress=msgspec.structs.replace(settings.ingress, **ingress)
    )


def two_accounts(**acme: Any) -> dict[str, AccountSettings]:
    return {
        "acme": AccountSettings(
            api_key=ACME_KEY,
            smpp=SmppLogin(password="acme-pw"),
            **acme,
        ),
        "other": AccountSettings(api_key=OTHER_KEY),
    }


async def answers(client: Client, count: int) -> list[dict[str, Any]]:
    events = await client.wait_for(
        lambda seen: len([e for e in seen if e["event"] in ("accepted", "rejected")]) >= count
    )
    return [e for e in events if e["event"] in ("accepted", "rejected")]


async def test_two_accounts_may_use_the_same_client_id(tmp_path: Path) -> None:
    settings = with_accounts(tmp_path, two_accounts())
    async with (
        running_daemon(settings) as daemon,
        connected(daemon) as acme,
        connected(daemon) as other,
    ):
        await acme.send(auth("acme", ACME_KEY), line(id="order-1"))
        await other.send(auth("other", OTHER_KEY), line(id="order-1"))
        (a,) = await answers(acme, 1)
        (b,) = await answers(other, 1)
        assert (a["event"], b["event"]) == ("accepted", "accepted")
        assert a["msg_id"] != b["msg_id"]
        await acme.send(line(id="order-1"))
        _, again = await answers(acme, 2)
        assert again["event"] == "rejected"
        assert again["error"] == (
            f"duplicate id 'order-1': already accepted as msg_id {a['msg_id']}"
        )


async def test_a_wrong_auth_line_is_refused_and_the_connection_closed(tmp_path: Path) -> None:
    cases = [
        (auth("acme", OTHER_KEY), "the account or its API key is wrong"),  # another's key
        (auth("nobody", ACME_KEY), "the account or its API key is wrong"),
        ({"auth": {"account": "acme"}}, AUTH_FORM),
        (auth("acme", ACME_KEY, session="short"), TOKEN_FORM),
    ]
    async with running_daemon(with_accounts(tmp_path, two_accounts())) as daemon:
        for first, sentence in cases:
            stream = await anyio.connect_tcp("127.0.0.1", daemon.tcp_port)
            async with stream:
                await stream.send(msgspec.json.encode(first) + b"\n" + msgspec.json.encode(line()))
                received = b""
                with anyio.fail_after(5):  # the daemon closes it: nothing past it is read
                    with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                        while True:
                            received += await stream.receive()
            (refused,) = [msgspec.json.decode(x) for x in received.splitlines()]
            assert (refused["event"], refused["line"], refused["error"]) == (
                "rejected",
                1,
                sentence,
            )


async def test_a_refused_client_still_writing_reads_why_and_then_a_clean_end(
    tmp_path: Path,
) -> None:
    """The daemon half-closes a refused connection and drops what the client still sends:
    a close with unread bytes would be a reset, and the client's write (or its read of the
    refusal) would fail with "connection reset" instead of telling it why."""
    async with running_daemon(with_accounts(tmp_path, two_accounts())) as daemon:
        stream = await anyio.connect_tcp("127.0.0.1", daemon.tcp_port)
        async with stream:
            await stream.send(msgspec.json.encode(auth("acme", OTHER_KEY)) + b"\n")
            received = b""
            with anyio.fail_after(5):
                while not received.endswith(b"\n"):
                    received += await stream.receive()
            # Refused, and the daemon's side is closed for writing; ours is still open.
            for _ in range(20):
                await stream.send(msgspec.json.encode(line()) + b"\n")
            await stream.send_eof()
            with anyio.fail_after(5), pytest.raises(anyio.EndOfStream):
                await stream.receive()  # a clean end, not ConnectionResetError
    (refused,) = [msgspec.json.decode(x) for x in received.splitlines()]
    assert refused["error"] == "the account or its API key is wrong"


async def test_the_feed_keeps_the_events_of_accounts_that_can_read_it(tmp_path: Path) -> None:
    """An account with an API key keeps a feed (the HTTP API reads it); one without, whose
    clients hear back on their connections, stores none of its events."""
    accounts = {**two_accounts(), "plain": AccountSettings()}
    settings = with_accounts(tmp_path, accounts, account="plain")
    async with (
        running_daemon(settings) as daemon,
        connected(daemon) as acme,
        connected(daemon) as plain,
    ):
        await acme.send(auth("acme", ACME_KEY), line(id="a", dlr=True))
        await plain.send(line(id="p", dlr=True))
        for client in (acme, plain):
            await client.wait_for(lambda seen: any(e["event"] == "dlr" for e in seen))
    with sqlite3.connect(settings.journal.path) as connection:
        stored = connection.execute("SELECT account, count(*) FROM events GROUP BY account")
        assert dict(stored.fetchall()) == {"acme": len(acme.events)}


async def test_the_listeners_account_or_an_auth_line_is_required(tmp_path: Path) -> None:
    settings = with_accounts(tmp_path, two_accounts(), account="other")
    async with running_daemon(settings) as daemon, connected(daemon) as client:
        await client.send(line(id="x"), auth("acme", ACME_KEY))
        accepted, misplaced = await answers(client, 2)
        assert accepted["event"] == "accepted"  # the listeners' account, "other"
        assert misplaced["error"] == "a session or auth line must be the connection's first line"
    settings = with_accounts(tmp_path, two_accounts(), require_auth=True)
    async with running_daemon(settings) as daemon, connected(daemon) as client:
        await client.send(line())
        (refused,) = await answers(client, 1)
        assert refused["error"].startswith("this listener needs an auth line first")
    async with running_daemon(settings) as daemon, connected(daemon) as client:
        token = "acme-session-0123456789"
        await client.send(auth("acme", ACME_KEY, session=token), line())
        await client.wait_for(lambda seen: any(e["event"] == "accepted" for e in seen))
        assert client.events[0]["event"] == "session"


async def test_a_session_token_presented_as_another_account_gets_none_of_its_events(
    tmp_path: Path,
) -> None:
    token = "shared-token-0123456789"

    def reported(ref: str) -> Callable[[list[dict[str, Any]]], bool]:
        return lambda events: any(e["event"] == "dlr" and e.get("id") == ref for e in events)

    async with running_daemon(with_accounts(tmp_path, two_accounts())) as daemon:
        await daemon.sim_config({"dlr_mix": {"DELIVRD": 1.0}})
        async with connected(daemon) as acme:
            await acme.send(auth("acme", ACME_KEY, session=token), line(id="acme-1"))
            await acme.wait_for(lambda events: any(e["event"] == "accepted" for e in events))
        # acme has gone: its message's later events are kept for acme's session.
        async with connected(daemon) as other:
            await other.send(auth("other", OTHER_KEY, session=token), line(id="other-1"))
            await other.wait_for(reported("other-1"))
        async with connected(daemon) as again:
            await again.send(auth("acme", ACME_KEY, session=token))
            await again.wait_for(reported("acme-1"))
    [msg_id] = [e["msg_id"] for e in acme.events if e["event"] == "accepted"]
    assert not [e for e in other.events if e.get("msg_id") == msg_id or e.get("id") == "acme-1"]
    assert not [e for e in again.events if e.get("id") == "other-1"]
    sessions = {e["origin"] for e in acme.events + other.events if e["event"] == "session"}
    assert len(sessions) == 2  # one token, two accounts: two sessions


async def test_allowed_senders_on_ndjson_and_smpp(tmp_path: Path) -> None:
    accounts = two_accounts(allowed_senders=["ACME"])
    async with running_daemon(with_accounts(tmp_path, accounts)) as daemon:
        async with connected(daemon) as client:
            await client.send(
                auth("acme", ACME_KEY), line(**{"from": "ACME"}), line(**{"from": "EVIL"})
            )
            ok, refused = await answers(client, 2)
            assert ok["event"] == "accepted"
            assert refused["error"] == (
                "from 'EVIL' is not one of the senders account 'acme' may use"
            )
        session = SmpplibSession(daemon.smpp_port, system_id="acme", password="acme-pw")
        await session.bind()
        assert len(await session.send("fine")) == 1  # source_addr ACME
        with pytest.raises(smpplib.exceptions.PDUError) as refused_pdu:
            await session.send("not fine", source_addr="EVIL")
        assert refused_pdu.value.args[1] == smpplib.consts.SMPP_ESME_RINVSRCADR
        await session.close()


async def test_over_the_rate_ndjson_and_smpp_are_throttled(tmp_path: Path) -> None:
    # 2 messages at once, then one a thousand seconds: the account's bucket is shared by
    # its doors, so the SMPP bind finds it empty after the NDJSON lines.
    accounts = two_accounts(messages_per_s=0.001, burst=2)
    async with running_daemon(with_accounts(tmp_path, accounts)) as daemon:
        async with connected(daemon) as client:
            await client.send(auth("acme", ACME_KEY), line(), line(), line())
            first, second, third = await answers(client, 3)
            assert (first["event"], second["event"]) == ("accepted", "accepted")
            assert third["event"] == "rejected"
            assert third["error"].startswith(
                "account 'acme' is over its 0.001 messages per second: send it again in"
            )
        session = SmpplibSession(daemon.smpp_port, system_id="acme", password="acme-pw")
        await session.bind()
        with pytest.raises(smpplib.exceptions.PDUError) as refused:
            await session.send("one too many")
        assert refused.value.args[1] == smpplib.consts.SMPP_ESME_RTHROTTLED
        await session.close()
        async with connected(daemon) as client:  # another account is not slowed
            await client.send(auth("other", OTHER_KEY), line(), line(), line())
            assert [a["event"] for a in await answers(client, 3)] == ["accepted"] * 3


async def test_the_daily_quota_on_ndjson_and_smpp_survives_a_restart(tmp_path: Path) -> None:
    settings = with_accounts(tmp_path, two_accounts(daily_quota=3))
    async with running_daemon(settings) as daemon:
        async with connected(daemon) as client:
            await client.send(auth("acme", ACME_KEY), line(to=["+250788100001", "+250788100002"]))
            # One line, two messages: two `accepted` events, and two of the quota.
            assert [a["event"] for a in await answers(client, 2)] == ["accepted"] * 2
        session = SmpplibSession(daemon.smpp_port, system_id="acme", password="acme-pw")
        await session.bind()
        assert len(await session.send("the third")) == 1
        await session.close()
    async with running_daemon(settings) as daemon:
        async with connected(daemon) as client:
            await client.send(auth("acme", ACME_KEY), line())
            (refused,) = await answers(client, 1)
            assert refused["error"] == (
                "account 'acme' has used 3 of its daily quota of 3 messages and this is 1 more;"
                " the quota starts again at 00:00 UTC"
            )
        session = SmpplibSession(daemon.smpp_port, system_id="acme", password="acme-pw")
        await session.bind()
        with pytest.raises(smpplib.exceptions.PDUError) as over:
            await session.send("a fourth")
        assert over.value.args[1] == smpplib.consts.SMPP_ESME_RMSGQFUL
        await session.close()


async def test_the_old_smpp_accounts_form_is_read_with_a_notice(tmp_path: Path) -> None:
    config = tmp_path / "old.toml"
    config.write_text(
        "[[smpp.accounts]]\n"
        'system_id = "legacy"\npassword = "env:LEGACY_PASSWORD"\nthroughput = 0.001\nburst = 1\n'
    )
    loaded = load_config(config, environ={"LEGACY_PASSWORD": "legacy1"})
    assert loaded.warnings == (
        "[[smpp.accounts]] is deprecated: each entry is read as the account named by its"
        " system_id; write it as [accounts.NAME] with an [accounts.NAME.smpp] login"
        " (throughput becomes messages_per_s; docs/accounts.md)",
    )
    legacy = accounts_of(loaded.settings).default
    assert (legacy.name, legacy.settings.messages_per_s) == ("legacy", 0.001)
    settings = msgspec.structs.replace(
        daemon_settings(tmp_path, accounts=loaded.settings.accounts),
        ingress=IngressSettings(tcp="127.0.0.1:0", unix=str(tmp_path / "septet.sock")),
    )
    async with running_daemon(settings) as daemon:
        session = SmpplibSession(daemon.smpp_port, system_id="legacy", password="legacy1")
        await session.bind()
        assert len(await session.send("first")) == 1
        with pytest.raises(smpplib.exceptions.PDUError) as refused:
            await session.send("second")
        assert refused.value.args[1] == smpplib.consts.SMPP_ESME_RTHROTTLED
        await session.close()


async def test_each_account_signs_its_webhooks_with_its_own_secret(tmp_path: Path) -> None:
    from aiohttp import web

    from engine.webhooks.settings import AccountWebhooks
    from engine.webhooks.signing import signature
    from tests.engine.webhooks.receiver import build_app

    record = tmp_path / "received.ndjson"
    runner = web.AppRunner(build_app(record))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    secrets = {"acme": "acme-hook-secret", "other": "other-hook-secret"}
    accounts = {
        name: AccountSettings(
            api_key=key,
            webhooks=AccountWebhooks(allowed_hosts=["127.0.0.1"], secret=secrets[name]),
        )
        for name, key in (("acme", ACME_KEY), ("other", OTHER_KEY))
    }
    try:
        async with running_daemon(with_accounts(tmp_path, accounts)) as daemon:
            for name, key in (("acme", ACME_KEY), ("other", OTHER_KEY)):
                async with connected(daemon) as client:
                    url = f"http://127.0.0.1:{port}/{name}"
                    await client.send(auth(name, key), line(callback_url=url))
                    (accepted,) = await answers(client, 1)
                    assert accepted["event"] == "accepted"
            with anyio.fail_after(20):
                while True:
                    received = (
                        [msgspec.json.decode(x) for x in record.read_bytes().splitlines()]
                        if record.exists()
                        else []
                    )
                    if {r["path"] for r in received} == {"/acme", "/other"}:
                        break
                    await anyio.sleep(0.05)
    finally:
        await runner.cleanup()
    for delivery in received:
        secret = secrets[delivery["path"].strip("/")]
        timestamp = int(delivery["signature"].split(",")[0].removeprefix("t="))
        body = delivery["body"].encode()
        assert delivery["signature"] == signature(secret, timestamp, body)
