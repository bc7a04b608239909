"""The HTTP API v1 over real HTTP against a running daemon (real SQLite, simulators)."""

from __future__ import annotations

import datetime as dt
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import msgspec
import pytest
import trustme

from engine.accounts import AccountSettings, SendsmsLogin
from engine.config import ApiSettings, ConfigError, Settings, default_settings, validate
from tests.engine.daemon_harness import Daemon, daemon_settings, iso_in, running_daemon

pytestmark = [pytest.mark.anyio, pytest.mark.slow]  # a running daemon over real HTTP

KEY = {"Authorization": "Bearer demo"}
FINAL = {"sent", "delivered", "undeliverable", "expired", "rejected", "deleted", "unknown"}


@asynccontextmanager
async def api(tmp_path: Path, **api: Any) -> AsyncIterator[tuple[Daemon, httpx.AsyncClient]]:
    settings = daemon_settings(tmp_path, api=ApiSettings(listen="127.0.0.1:0", **api))
    async with (
        running_daemon(settings) as daemon,
        httpx.AsyncClient(base_url=daemon.api_url, headers=KEY, timeout=30) as client,
    ):
        await daemon.sim_config({"dlr_mix": {"DELIVRD": 1.0}})
        yield daemon, client


async def final_state(client: httpx.AsyncClient, msg_id: str) -> dict[str, Any]:
    """The message once final, asked every 20 ms for at most 20 s."""
    with anyio.fail_after(20):
        while True:
            reply = await client.get(f"/v1/messages/{msg_id}")
            assert reply.status_code == 200, reply.text
            body: dict[str, Any] = reply.json()
            if body["final"]:
                return body
            await anyio.sleep(0.02)


def problem(reply: httpx.Response, status: int) -> str:
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"].startswith("application/problem+json")
    body = reply.json()
    assert set(body) == {"type", "title", "status", "detail"}
    assert body["status"] == status
    detail: str = body["detail"]
    return detail


async def test_one_message_is_accepted_sent_and_read_back(tmp_path: Path) -> None:
    async with api(tmp_path) as (_, client):
        reply = await client.post(
            "/v1/messages", json={"id": "order-1", "to": "+250788100001", "text": "Hello"}
        )
        assert reply.status_code == 200
        (result,) = reply.json()["results"]
        assert result["result"] == "accepted"
        assert result["line"] == 1
        assert result["id"] == "order-1"
        (message,) = result["messages"]
        assert message["to"] == "+250788100001"
        assert message["bridge"] == "dsc"
        assert (message["encoding"], message["segments"]) == ("GSM-7", 1)
        body = await final_state(client, message["msg_id"])
    assert body["state"] == "delivered"
    assert body["id"] == "order-1"
    assert body["text"] == "Hello"
    assert body["from"] == "SEPTET"
    assert body["provider_id"]
    assert body["submitted_at"] <= body["final_at"]
    assert body["due_at"] is None  # not waiting any more


async def test_x_api_key_header_authenticates_too(tmp_path: Path) -> None:
    async with api(tmp_path) as (daemon, _), httpx.AsyncClient(base_url=daemon.api_url) as bare:
        reply = await bare.get("/v1/messages", headers={"X-API-Key": "demo"})
        assert reply.status_code == 200
        assert reply.json() == {"messages": [], "next_cursor": None}


async def test_a_batch_answers_each_line_in_one_request(tmp_path: Path) -> None:
    async with api(tmp_path) as (_, client):
        reply = await client.post(
            "/v1/messages",
            json={
                "messages": [
                    {"id": "b1", "to": ["+250788100001", "+250788100002"], "text": "Hi"},
                    {"id": "b2", "to": "12", "text": "Hi"},
                    {"id": "b1", "to": "+250788100004", "text": "again"},
                ]
            },
        )
        assert reply.status_code == 200
        results = reply.json()["results"]
    assert [r["result"] for r in results] == ["accepted", "rejected", "rejected"]
    assert [r["line"] for r in results] == [1, 2, 3]
    assert [m["to"] for m in results[0]["messages"]] == ["+250788100001", "+250788100002"]
    assert results[1] == {
        "result": "rejected",
        "line": 2,
        "id": "b2",
        "error": "'12' is a local number and no default region is configured",
        "kind": "destination",
        "msg_ids": [],
        "retry_after_s": None,
    }
    assert results[2]["kind"] == "duplicate"
    assert results[2]["msg_ids"] == [m["msg_id"] for m in results[0]["messages"]]


async def test_a_batch_of_1000_is_accepted_and_1001_is_too_large(tmp_path: Path) -> None:
    line = {"to": "+250788100001", "text": "batch", "schedule_at": iso_in(3600)}
    async with api(tmp_path) as (_, client):
        reply = await client.post("/v1/messages", json={"messages": [line] * 1000})
        assert reply.status_code == 200
        results = reply.json()["results"]
        assert len(results) == 1000
        assert {r["result"] for r in results} == {"accepted"}
        ids = {r["messages"][0]["msg_id"] for r in results}
        assert len(ids) == 1000
        too_many = await client.post("/v1/messages", json={"messages": [line] * 1001})
        assert problem(too_many, 413) == "the batch has 1001 messages; the limit is 1000"
        listed = await client.get("/v1/messages", params={"state": "scheduled", "limit": 1000})
        assert {m["msg_id"] for m in listed.json()["messages"]} == ids


async def test_every_bad_request_gets_a_problem_never_a_500(tmp_path: Path) -> None:
    async with api(tmp_path, max_body_bytes=4096) as (daemon, client):
        async with httpx.AsyncClient(base_url=daemon.api_url) as bare:
            assert "API key is needed" in problem(await bare.get("/v1/messages"), 401)
            wrong = await bare.get("/v1/messages", headers={"Authorization": "Bearer nope"})
            assert problem(wrong, 401) == "the API key is not valid"
            wrong = await bare.post("/v1/messages", headers={"X-API-Key": "nope"}, json={})
            assert problem(wrong, 401) == "the API key is not valid"
        cases: list[tuple[httpx.Response, int, str]] = [
            (await client.get("/v1/messages/999"), 404, "there is no message 999"),
            (
                await client.get("/v1/messages/abc"),
                400,
                "msg_id 'abc' is not a message id (digits)",
            ),
            (
                await client.post("/v1/messages", content=b"to=1", headers=_form()),
                415,
                "the body must be application/json, not application/x-www-form-urlencoded",
            ),
            (await client.post("/v1/messages", content=b"{no", headers=_json()), 400, ""),
            (await client.post("/v1/messages", content=b"[1]", headers=_json()), 400, ""),
            (await client.post("/v1/messages", json={"to": 5, "text": "x"}), 400, ""),
            (await client.post("/v1/messages", json={"messages": []}), 400, "'messages' is empty"),
            (await client.post("/v1/messages", json={"messages": 3}), 400, ""),
            (
                await client.post(
                    "/v1/messages",
                    json={"messages": [{"to": "+250788100001", "text": "a"}, {"to": 1}]},
                ),
                400,
                "message 2: invalid message: expected 'str | array', got 'int' - at '$.to'",
            ),
            (
                await client.post("/v1/messages", json={"to": "+1", "text": "a", "colour": 1}),
                400,
                "invalid message: unknown field 'colour'",
            ),
            (await client.post("/v1/messages", json={"messages": [], "x": 1}), 400, ""),
            (await client.put("/v1/messages"), 405, "/v1/messages does not take PUT"),
            (await client.get("/v1/nowhere"), 404, "there is no such path in this API"),
            (await client.get("/v1/messages", params={"limit": "0"}), 400, "limit must"),
            (await client.get("/v1/messages", params={"state": "lost"}), 400, "state 'lost'"),
            (await client.get("/v1/messages", params={"since": "yesterday"}), 400, "since"),
            (await client.get("/v1/messages", params={"cursor": "x"}), 400, "cursor"),
            (await client.get("/v1/events", params={"after": "-1"}), 400, "after"),
            (
                await client.post(
                    "/v1/messages", content=b"{" + b" " * 5000 + b"}", headers=_json()
                ),
                413,
                "the request body is larger than this API takes",
            ),
        ]
        for reply, status, detail in cases:
            assert problem(reply, status).startswith(detail), (reply.request.url, reply.text)
        # Still serving after all that.
        ok = await client.post("/v1/messages", json={"to": "+250788100001", "text": "ok"})
        assert ok.json()["results"][0]["result"] == "accepted"


def _json() -> dict[str, str]:
    return {"content-type": "application/json"}


def _form() -> dict[str, str]:
    return {"content-type": "application/x-www-form-urlencoded"}


async def test_listing_filters_and_pages_by_cursor(tmp_path: Path) -> None:
    async with api(tmp_path) as (_, client):
        later = iso_in(3600)
        lines = [
            {"id": f"p{n}", "to": "+250788100001", "text": "x", "schedule_at": later}
            for n in range(5)
        ]
        reply = await client.post("/v1/messages", json={"messages": lines})
        ids = [r["messages"][0]["msg_id"] for r in reply.json()["results"]]
        seen: list[str] = []
        cursor: str | None = None
        for _ in range(10):
            params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
            page = (await client.get("/v1/messages", params=params)).json()
            seen += [m["msg_id"] for m in page["messages"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == ids[::-1]  # newest first, each once
        by_id = (await client.get("/v1/messages", params={"id": "p3"})).json()["messages"]
        assert [m["msg_id"] for m in by_id] == [ids[3]]
        future = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
        since = (await client.get("/v1/messages", params={"since": future})).json()
        assert since == {"messages": [], "next_cursor": None}
        sent = (await client.get("/v1/messages", params={"state": "delivered"})).json()
        assert sent["messages"] == []


async def test_cancel_a_scheduled_message(tmp_path: Path) -> None:
    async with api(tmp_path) as (daemon, client):
        reply = await client.post(
            "/v1/messages",
            json={"id": "c1", "to": "+250788100001", "text": "later", "schedule_at": iso_in(60)},
        )
        msg_id = reply.json()["results"][0]["messages"][0]["msg_id"]
        waiting = (await client.get(f"/v1/messages/{msg_id}")).json()
        assert waiting["state"] == "scheduled"
        assert waiting["due_at"] is not None
        cancelled = await client.delete(f"/v1/messages/{msg_id}")
        assert cancelled.status_code == 200
        assert (cancelled.json()["state"], cancelled.json()["final"]) == ("cancelled", True)
        again = await client.delete(f"/v1/messages/{msg_id}")
        assert again.json()["state"] == "cancelled"
        delivered = await client.post("/v1/messages", json={"to": "+250788100002", "text": "now"})
        done = await final_state(client, delivered.json()["results"][0]["messages"][0]["msg_id"])
        refused = await client.delete(f"/v1/messages/{done['msg_id']}")
        assert problem(refused, 409) == (
            f"message {done['msg_id']} cannot be cancelled: it is final already (delivered)"
        )
        assert problem(await client.delete("/v1/messages/424242"), 404)
        counters = await daemon.sim_counters()
        async with httpx.AsyncClient() as plain:
            exposition = (await plain.get(f"http://127.0.0.1:{daemon.http_port}/metrics")).text
    assert 'septet_messages_total{bridge="dsc",outcome="cancelled"} 1.0' in exposition
    assert "+250788100001" not in str(counters)
    assert "250788100001" not in str(counters)


async def test_cancel_racing_dispatch_ends_cancelled_or_sent_never_both(tmp_path: Path) -> None:
    """Messages due now, each cancelled as soon as it is accepted: each ends either
    cancelled and never at the provider, or refused (409, already sent) and sent once."""
    count = 60
    settings = daemon_settings(tmp_path)
    # dsc sends 20 requests a second, one message each (distinct texts): the first ones
    # are claimed before their cancel comes, the later ones wait in the queue.
    bridges = dict(settings.bridges)
    bridges["dsc"] = msgspec.structs.replace(
        bridges["dsc"], requests_per_s=20.0, requests_burst=1.0
    )
    settings = msgspec.structs.replace(settings, bridges=bridges)
    async with (
        running_daemon(settings) as daemon,
        httpx.AsyncClient(base_url=daemon.api_url, headers=KEY, timeout=30) as client,
    ):
        answers: dict[str, int] = {}

        async def submit_and_cancel(n: int) -> None:
            number = f"+2507881{n:05d}"
            reply = await client.post("/v1/messages", json={"to": number, "text": f"race {n}"})
            msg_id = reply.json()["results"][0]["messages"][0]["msg_id"]
            answers[number] = (await client.delete(f"/v1/messages/{msg_id}")).status_code

        async with anyio.create_task_group() as tg:
            for n in range(count):
                tg.start_soon(submit_and_cancel, n)
        page = (await client.get("/v1/messages", params={"limit": count})).json()["messages"]
        finals = {m["to"]: (await final_state(client, m["msg_id"]))["state"] for m in page}
        counters = await daemon.sim_counters()
    taken = msgspec.convert(counters["dsc"]["accepted_by_recipient"], dict[str, int])
    assert set(answers.values()) <= {200, 409}
    assert {200, 409} <= set(answers.values())  # both sides of the race were run
    for number, status in answers.items():
        digits = number.lstrip("+")
        if status == 200:
            assert finals[number] == "cancelled"
            assert digits not in taken
        else:
            assert finals[number] in FINAL
            assert taken.get(digits) == 1


async def test_openapi_document_is_served(tmp_path: Path) -> None:
    async with api(tmp_path) as (daemon, _), httpx.AsyncClient(base_url=daemon.api_url) as bare:
        reply = await bare.get("/v1/openapi.json")
    document = reply.json()
    assert document["openapi"] == "3.1.0"
    assert set(document["paths"]) == {"/v1/messages", "/v1/messages/{msg_id}", "/v1/events"}
    assert "Submission" in document["components"]["schemas"]


async def test_the_event_feed_and_a_messages_history(tmp_path: Path) -> None:
    async with api(tmp_path) as (_, client):
        reply = await client.post(
            "/v1/messages", json={"id": "f1", "to": "+250788100001", "text": "x"}
        )
        msg_id = reply.json()["results"][0]["messages"][0]["msg_id"]
        body = await final_state(client, msg_id)
        later = await client.post(
            "/v1/messages", json={"to": "+250788100002", "text": "y", "schedule_at": iso_in(60)}
        )
        cancelled_id = later.json()["results"][0]["messages"][0]["msg_id"]
        assert (await client.delete(f"/v1/messages/{cancelled_id}")).status_code == 200
        first = (await client.get("/v1/events", params={"after": "0", "limit": "2"})).json()
        rest = (await client.get("/v1/events", params={"after": first["next_cursor"]})).json()
        again = (await client.get("/v1/events", params={"after": "0"})).json()
        end = (await client.get("/v1/events", params={"after": rest["next_cursor"]})).json()
    events = first["events"] + rest["events"]
    assert again["events"] == events  # reading does not consume
    assert end == {"events": [], "next_cursor": rest["next_cursor"]}
    ids = [event["event_id"] for event in events]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    mine = [event["event"] for event in events if event["msg_id"] == msg_id]
    assert mine[0] == "accepted"
    assert "submitted" in mine
    assert mine[-1] == "dlr"
    assert [e["event"] for e in events if e["msg_id"] == cancelled_id] == ["accepted", "cancelled"]
    assert [event["event"] for event in body["history"]] == mine


def two_accounts(tmp_path: Path) -> Settings:
    """Account "a" (key-a) meters 1 message a second with a burst of 2; "b" (key-b) may
    send 1 message a day, and has a sendsms login."""
    accounts = {
        "a": AccountSettings(api_key="key-a", messages_per_s=1.0, burst=2.0),
        "b": AccountSettings(api_key="key-b", daily_quota=1, sendsms=SendsmsLogin(password="pw-b")),
    }
    return daemon_settings(tmp_path, accounts=accounts)


async def test_accounts_see_their_own_and_are_held_to_their_limits(tmp_path: Path) -> None:
    async with running_daemon(two_accounts(tmp_path)) as daemon:
        url = daemon.api_url
        async with (
            httpx.AsyncClient(base_url=url, headers={"X-API-Key": "key-a"}) as a,
            httpx.AsyncClient(base_url=url, headers={"Authorization": "Bearer key-b"}) as b,
        ):
            later = iso_in(3600)
            line = {"to": "+250788100001", "text": "x", "schedule_at": later}
            burst = await a.post("/v1/messages", json={"messages": [line, line, line]})
            results = burst.json()["results"]
            assert [r["result"] for r in results] == ["accepted", "accepted", "rejected"]
            assert results[2]["kind"] == "throttled"
            assert results[2]["retry_after_s"] > 0
            over = await a.post("/v1/messages", json=line)
            assert problem(over, 429)
            assert int(over.headers["Retry-After"]) >= 1
            msg_id = results[0]["messages"][0]["msg_id"]
            assert problem(await b.get(f"/v1/messages/{msg_id}"), 403) == (
                f"message {msg_id} belongs to another account"
            )
            assert problem(await b.delete(f"/v1/messages/{msg_id}"), 403)
            assert (await b.get("/v1/messages")).json()["messages"] == []
            assert (await b.get("/v1/events")).json()["events"] == []
            mine = (await a.get("/v1/messages")).json()["messages"]
            assert len(mine) == 2
            first = await b.post("/v1/messages", json=line)
            assert first.json()["results"][0]["result"] == "accepted"
            quota = await b.post("/v1/messages", json=line)
            assert "quota" in problem(quota, 429)
            assert int(quota.headers["Retry-After"]) >= 1
            kannel = await b.get(
                "/cgi-bin/sendsms",
                params={"username": "b", "password": "pw-b", "to": "+250788100002", "text": "x"},
            )
            assert kannel.status_code == 429
            assert kannel.text.endswith(", rejected")
            assert int(kannel.headers["Retry-After"]) >= 1


async def test_kannel_report_fields_on_a_json_line_are_checked(tmp_path: Path) -> None:
    async with api(tmp_path) as (_, client):
        reply = await client.post(
            "/v1/messages",
            json={
                "messages": [
                    {"to": "+250788100001", "text": "a", "dlr_url": "https://app.example/r"},
                    {
                        "to": "+250788100001",
                        "text": "b",
                        "dlr_url": "http://127.0.0.1/r?type=%d",
                        "dlr_mask": 3,
                    },
                    {
                        "to": "+250788100001",
                        "text": "c",
                        "dlr_url": "https://app.example/r",
                        "dlr_mask": 3,
                        "callback_url": "https://app.example/hook",
                    },
                ]
            },
        )
        results = reply.json()["results"]
        too_big = await client.post(
            "/v1/messages", json={"to": "+1", "text": "x", "dlr_url": "https://a/b", "dlr_mask": 32}
        )
    assert [(r["result"], r["kind"]) for r in results] == [("rejected", "callback")] * 3
    assert results[0]["error"] == "dlr_url needs a dlr_mask (Kannel's bits, 1 to 31)"
    assert "127.0.0.1" in results[1]["error"]  # loopback, not in [webhooks] allowed_hosts
    assert results[2]["error"] == "callback_url and dlr_url cannot both be set"
    assert "dlr_mask" in problem(too_big, 400)


async def test_the_api_over_tls_with_cert_and_key(tmp_path: Path) -> None:
    authority = trustme.CA()
    server = authority.issue_cert("127.0.0.1")
    cert, key = tmp_path / "api.pem", tmp_path / "api.key"
    server.cert_chain_pems[0].write_to_path(str(cert))
    server.private_key_pem.write_to_path(str(key))
    trusting = ssl.create_default_context()
    authority.configure_trust(trusting)
    api_settings = ApiSettings(listen="127.0.0.1:0", cert=str(cert), key=str(key))
    async with running_daemon(daemon_settings(tmp_path, api=api_settings)) as daemon:
        url = f"https://127.0.0.1:{daemon.api_port}"
        async with httpx.AsyncClient(base_url=url, headers=KEY, verify=trusting) as client:
            reply = await client.post("/v1/messages", json={"to": "+250788100001", "text": "tls"})
            assert reply.json()["results"][0]["result"] == "accepted"
        async with httpx.AsyncClient(base_url=url, headers=KEY) as untrusting:
            with pytest.raises(httpx.ConnectError):
                await untrusting.get("/v1/messages")
        async with httpx.AsyncClient(base_url=daemon.api_url, headers=KEY) as plain:
            with pytest.raises(httpx.HTTPError):
                await plain.get("/v1/messages")  # plain HTTP to a TLS listener: no answer


def test_cert_without_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"api\.cert and api\.key go together"):
        validate(msgspec.structs.replace(default_settings(), api=ApiSettings(cert="a.pem")))


async def test_a_body_that_trickles_is_answered_408(tmp_path: Path) -> None:
    async with api(tmp_path, body_timeout_s=0.3) as (daemon, _):
        assert daemon.api_port is not None
        async with await anyio.connect_tcp("127.0.0.1", daemon.api_port) as stream:
            await stream.send(
                b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer demo\r\n"
                b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"to":'
            )
            head = b""
            with anyio.fail_after(10):
                while b's"}' not in head:  # the end of the problem's detail
                    head += await stream.receive()
    assert head.startswith(b"HTTP/1.1 408 ")
    assert b"the request body did not arrive within 0.3 s" in head
