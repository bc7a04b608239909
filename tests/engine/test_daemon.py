"""The daemon end to end: real sockets, real SQLite, real HTTP to in-process simulators."""

from __future__ import annotations

import contextlib
import datetime as dt
import stat
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from tests.engine.daemon_harness import (
    connected,
    daemon_settings,
    iso_in,
    running_daemon,
)

pytestmark = pytest.mark.anyio

# The events of a message that always come, once each and in this order (a `status`
# may come between them).
REPORTED = ("accepted", "submitted", "dlr")


def answered(count: int) -> Any:
    return lambda events: sum(e["event"] in ("accepted", "rejected") for e in events) >= count


async def test_every_provider_and_every_delivery_report_path(tmp_path: Path) -> None:
    async with running_daemon(daemon_settings(tmp_path)) as daemon:
        await daemon.sim_config({"dlr_mix": {"DELIVRD": 1.0}})
        async with connected(daemon) as client:
            await client.send(
                {"id": "dsc", "to": "+250788100001", "text": "callback by GET"},
                {"id": "rm", "to": "+919812300001", "text": "callback by POST"},
                {"id": "bsg", "to": "+447700900001", "text": "polled by id"},
                {"id": "club", "to": "+380501000001", "text": "polled in batches"},
            )
            await client.wait_for(lambda events: len(client.final_reports()) == 4)
        bridges = {e["id"]: e["bridge"] for e in client.of("accepted")}
        assert bridges == {"dsc": "dsc", "rm": "routemobile", "bsg": "bsg", "club": "smsclub"}
        reports = {e["id"]: e for e in client.final_reports().values()}
        assert {ref: e["state"] for ref, e in reports.items()} == dict.fromkeys(
            ("dsc", "rm", "bsg", "club"), "DELIVRD"
        )
        assert reports["dsc"]["provider_status"] == "D"  # DSC's own code, kept raw
        # Every event of a message comes in order: accepted, submitted, dlr.
        for ref in ("dsc", "rm", "bsg", "club"):
            kinds = [e["event"] for e in client.events if e.get("id") == ref]
            assert kinds[0] == "accepted"
            assert kinds[1] == "submitted"
            assert kinds[-1] == "dlr"


async def test_many_clients_mixed_encodings_each_recipient_sent_once(tmp_path: Path) -> None:
    texts = ["Hello {n}", "Привіт {n} 👋", "Long " + "x" * 200 + " {n}", "Curly {{braces}} {n}"]
    prefixes = ["+2507881", "+9198123", "+4477009"]
    per_client = 400
    async with running_daemon(daemon_settings(tmp_path)) as daemon:
        sent: set[str] = set()
        async with anyio.create_task_group() as tg:

            async def one_client(index: int, unix: bool) -> None:
                lines = []
                for n in range(per_client):
                    to = f"{prefixes[n % 3]}{index}{n:04d}"
                    sent.add(to)
                    # A few distinct texts, so batches form as in real bulk traffic.
                    lines.append({"to": to, "text": texts[n % 4].format(n=n % 7)})
                async with connected(daemon, unix=unix) as client:
                    await client.send(*lines)
                    await client.wait_for(
                        lambda events: len(client.of("submitted")) >= per_client, timeout_s=60
                    )
                    assert len(client.of("accepted")) == per_client
                    assert not client.of("failed")
                    assert not client.of("rejected")
                    encodings = {e["encoding"] for e in client.of("accepted")}
                    assert encodings == {"GSM-7", "UCS-2"}
                    assert {e["segments"] for e in client.of("accepted")} >= {1, 2}

            tg.start_soon(one_client, 1, False)
            tg.start_soon(one_client, 2, False)
            tg.start_soon(one_client, 3, True)
        counters = await daemon.sim_counters()
    seen: dict[str, int] = {}
    for provider in counters.values():
        for recipient, count in provider["accepted_by_recipient"].items():
            seen[recipient.lstrip("+")] = seen.get(recipient.lstrip("+"), 0) + count
    assert sorted(seen) == sorted(to.lstrip("+") for to in sent)
    assert set(seen.values()) == {1}  # nothing lost, nothing sent twice


async def test_bad_lines_are_rejected_by_line_and_the_daemon_goes_on(tmp_path: Path) -> None:
    async with running_daemon(daemon_settings(tmp_path)) as daemon, connected(daemon) as client:
        await client.send(
            b"not json",
            {"to": "+250788100002", "text": "ok", "colour": "red"},
            {"to": "0781234567", "text": "local number"},
            {"to": "+250788100002", "text": ""},
            {"to": "+250788100002", "text": "x", "route": "nowhere"},
            {"to": "+250788100002", "text": "x", "schedule_at": "2030-01-01T00:00:00"},
            b"",
            {"id": "good", "to": "+250788100002", "text": "still running"},
            {"id": "good", "to": "+250788100003", "text": "same id again"},
        )
        await client.wait_for(answered(8))
    rejected = {e["line"]: e["error"] for e in client.of("rejected")}
    assert "not a JSON object" in rejected[1]
    assert "unknown field 'colour'" in rejected[2]
    assert "local number" in rejected[3]
    assert "text is empty" in rejected[4]
    assert "nowhere" in rejected[5]
    assert "time zone" in rejected[6]
    assert "duplicate id 'good'" in rejected[9]
    accepted = client.of("accepted")
    assert [e["id"] for e in accepted] == ["good"]
    assert accepted[0]["msg_id"] in rejected[9]  # the duplicate names the original


async def test_overlong_line_is_rejected_without_stopping_the_connection(tmp_path: Path) -> None:
    settings = daemon_settings(tmp_path)
    settings = msgspec.structs.replace(
        settings, ingress=msgspec.structs.replace(settings.ingress, max_line_bytes=1024)
    )
    async with running_daemon(settings) as daemon, connected(daemon) as client:
        await client.send(b'{"to":"+250788100004","text":"' + b"y" * 100_000 + b'"}')
        await client.send({"to": "+250788100004", "text": "short"})
        await client.wait_for(answered(2))
    assert "longer than 1024 bytes" in client.of("rejected")[0]["error"]
    assert client.of("rejected")[0]["line"] == 1
    assert len(client.of("accepted")) == 1


async def test_one_line_many_recipients_is_one_answer_group(tmp_path: Path) -> None:
    async with running_daemon(daemon_settings(tmp_path)) as daemon, connected(daemon) as client:
        await client.send(
            {
                "id": "group",
                "to": ["+250788100010", "+250788100011", "+447700900010"],
                "text": "to three",
            },
            {"id": "bad-group", "to": ["+250788100012", "nonsense"], "text": "half bad"},
        )
        await client.wait_for(answered(4))
    accepted = client.of("accepted")
    assert [e["id"] for e in accepted] == ["group"] * 3
    assert len({e["msg_id"] for e in accepted}) == 3
    assert {e["bridge"] for e in accepted} == {"dsc", "bsg"}
    # A line is never half accepted.
    assert client.of("rejected")[0]["id"] == "bad-group"
    assert "nonsense" in client.of("rejected")[0]["error"]


async def test_scheduled_message_is_held_until_its_time(tmp_path: Path) -> None:
    async with running_daemon(daemon_settings(tmp_path)) as daemon, connected(daemon) as client:
        when = iso_in(1.5)
        await client.send({"id": "later", "to": "+250788100020", "text": "at", "schedule_at": when})
        await client.send({"id": "now", "to": "+250788100021", "text": "now"})
        await client.wait_for(lambda events: len(client.of("submitted")) == 2)
    submitted = {e["id"]: dt.datetime.fromisoformat(e["ts"]) for e in client.of("submitted")}
    assert submitted["later"] >= dt.datetime.fromisoformat(when)
    assert submitted["now"] < dt.datetime.fromisoformat(when)


async def test_partial_failure_in_one_request(tmp_path: Path) -> None:
    async with running_daemon(daemon_settings(tmp_path)) as daemon:
        await daemon.sim_config({"recipient_codes": {"250788100031": "failed"}}, provider="dsc")
        async with connected(daemon) as client:
            await client.send(
                {"id": "pair", "to": ["+250788100030", "+250788100031"], "text": "one fails"}
            )
            await client.wait_for(lambda events: len(client.final_reports()) == 2)
    outcome = {e["msg_id"]: e["event"] for e in client.final_reports().values()}
    assert sorted(outcome.values()) == ["dlr", "failed"]
    failed = client.of("failed")[0]
    assert failed["final"] is True
    assert failed["bridge"] == "dsc"


async def test_failover_when_the_primary_keeps_failing(tmp_path: Path) -> None:
    async with running_daemon(daemon_settings(tmp_path)) as daemon:
        await daemon.sim_config({"fail_rate": 1.0, "faults": {"5xx": 1.0}}, provider="dsc")
        async with connected(daemon) as client:
            await client.send({"id": "fo", "to": "+250788100040", "text": "failover"})
            await client.wait_for(lambda events: bool(client.of("submitted")))
    submitted = client.of("submitted")[0]
    assert submitted["bridge"] == "routemobile"  # 250's failover (engine.routing)


async def test_explicit_route_has_no_failover_and_validity_ends(tmp_path: Path) -> None:
    async with running_daemon(daemon_settings(tmp_path)) as daemon:
        await daemon.sim_config({"fail_rate": 1.0, "faults": {"5xx": 1.0}}, provider="dsc")
        async with connected(daemon) as client:
            await client.send(
                {
                    "id": "v",
                    "to": "+250788100050",
                    "text": "soon stale",
                    "route": "dsc",
                    "validity_s": 1,
                }
            )
            await client.wait_for(lambda events: bool(client.of("failed")), timeout_s=30)
    failed = client.of("failed")[0]
    assert failed["code"] == "validity" or "attempts" in failed["error"]
    assert not client.of("submitted")


async def test_throttled_provider_still_gets_everything(tmp_path: Path) -> None:
    async with running_daemon(daemon_settings(tmp_path)) as daemon:
        await daemon.sim_config(
            {"fail_rate": 0.5, "faults": {"429": 1.0}, "seed": 7}, provider="bsg"
        )
        async with connected(daemon) as client:
            await client.send(*({"to": f"+4477009001{n:02d}", "text": f"t{n}"} for n in range(20)))
            await client.wait_for(lambda events: len(client.of("submitted")) == 20, timeout_s=60)
        counters = await daemon.sim_counters()
    assert counters["bsg"]["faults"].get("429", 0) > 0
    # A message throttled too often fails over to routemobile (44's second bridge);
    # either way every one is sent exactly once.
    assert counters["bsg"]["accepted_total"] + counters["routemobile"]["accepted_total"] == 20


async def test_unix_socket_is_private(tmp_path: Path) -> None:
    async with running_daemon(daemon_settings(tmp_path)) as daemon:
        mode = stat.S_IMODE(daemon.unix_path.stat().st_mode)
    assert mode == 0o600


async def test_connection_limit_per_listener(tmp_path: Path) -> None:
    settings = daemon_settings(tmp_path)
    settings = msgspec.structs.replace(
        settings, ingress=msgspec.structs.replace(settings.ingress, max_connections=3)
    )
    async with running_daemon(settings) as daemon:
        held = [await anyio.connect_tcp("127.0.0.1", daemon.tcp_port) for _ in range(3)]
        extra = await anyio.connect_tcp("127.0.0.1", daemon.tcp_port)
        with anyio.fail_after(5):
            refusal = msgspec.json.decode(await extra.receive())
        assert refusal["event"] == "rejected"
        assert "too many connections" in refusal["error"]
        for stream in held:
            await stream.aclose()
        # Once one closes, a new client is served again.
        with anyio.fail_after(5):
            while True:
                async with connected(daemon) as client:
                    await client.send({"to": "+250788100060", "text": "after the limit"})
                    await client.wait_for(answered(1))
                    if client.of("accepted"):
                        break
                await anyio.sleep(0.05)


async def test_a_session_gets_its_own_events_back_and_no_other_client_does(
    tmp_path: Path,
) -> None:
    token_a, token_b = "client-A_0123456789", "client-B_0123456789"

    def final(client_events: list[dict[str, Any]], ref: str) -> bool:
        return any(e["event"] == "dlr" and e.get("id") == ref for e in client_events)

    async with running_daemon(daemon_settings(tmp_path)) as daemon:
        await daemon.sim_config({"dlr_mix": {"DELIVRD": 1.0}})
        async with connected(daemon) as a:
            await a.send({"session": token_a}, {"id": "a", "to": "+447700900070", "text": "A"})
            await a.wait_for(lambda events: bool(a.of("accepted")))
        # A has gone; the events of its message are kept for its session meanwhile.
        async with connected(daemon) as b, connected(daemon, unix=True) as c:
            await b.send({"session": token_b}, {"id": "b", "to": "+447700900071", "text": "B"})
            await c.send({"id": "c", "to": "+447700900072", "text": "C"})
            await b.wait_for(lambda events: final(events, "b"))
            await c.wait_for(lambda events: final(events, "c"))
        async with connected(daemon) as again:
            await again.send({"session": token_a})
            await again.wait_for(
                lambda events: (
                    final(a.events + events, "a") and any(e["event"] == "session" for e in events)
                )
            )
    [msg_id] = [e["msg_id"] for e in a.of("accepted")]
    assert not [e for e in b.events + c.events if e.get("msg_id") == msg_id or e.get("id") == "a"]
    mine = [e["event"] for e in a.events + again.events if e.get("msg_id") == msg_id]
    assert [kind for kind in mine if kind in REPORTED] == list(REPORTED)  # each once, in order
    assert [e["event"] for e in again.events].count("session") == 1
    assert [e["event"] for e in c.events if e["event"] in REPORTED] == list(REPORTED)
    assert "session" not in [e["event"] for e in c.events]


async def test_a_bad_session_line_is_one_sentence_and_the_daemon_goes_on(tmp_path: Path) -> None:
    async with running_daemon(daemon_settings(tmp_path)) as daemon:
        async with await anyio.connect_tcp("127.0.0.1", daemon.tcp_port) as stream:
            await stream.send(b'{"session": "too short"}\n{"to": "+250788100080", "text": "x"}\n')
            received = b""
            with anyio.fail_after(5):
                with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                    while True:  # until the daemon closes the connection
                        received += await stream.receive()
        [refusal] = [msgspec.json.decode(line) for line in received.splitlines()]
        assert (refusal["event"], refusal["line"]) == ("rejected", 1)
        assert refusal["error"] == (
            "a session token is 16 to 128 characters of A-Z, a-z, 0-9, _ and -"
        )
        async with connected(daemon) as client:
            await client.send({"to": "+250788100081", "text": "after it"})
            await client.wait_for(answered(1))
        assert client.of("accepted")
