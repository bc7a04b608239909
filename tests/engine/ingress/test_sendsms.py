"""Kannel's sendsms: the parameters (pure), the dlr-url escapes, and curl against a daemon."""

from __future__ import annotations

import datetime as dt
import subprocess
import urllib.parse
from pathlib import Path

import anyio
import httpx
import pytest
from aiohttp import web

from engine.ingress.sendsms import (
    ACCEPTED,
    AUTH_FAILED,
    Refusal,
    SendSms,
    parse_sendsms,
    read_params,
)
from engine.kannel_dlr import DlrValues, KannelDlr, dlr_type, expand_dlr_url
from engine.webhooks.settings import WebhookSettings
from tests.engine.daemon_harness import daemon_settings, running_daemon
from tests.engine.http_harness import serve_app

NOW = 1_800_000_000.0
LOGIN = "username=demo&password=demo"


def parse(query: str) -> SendSms | Refusal:
    return parse_sendsms(read_params(query, b""), NOW)


def sendsms(query: str) -> SendSms:
    parsed = parse(query)
    assert isinstance(parsed, SendSms), parsed
    return parsed


def test_kannel_parameters_become_a_submission() -> None:
    parsed = sendsms(
        f"{LOGIN}&to=%2B250788100001&text=Hello+world&from=ACME&dlr-mask=31"
        "&dlr-url=http%3A%2F%2Fapp%2Fdlr%3Ftype%3D%25d&validity=90&deferred=10&priority=2"
        "&mclass=0&smsc=bsg"
    )
    sub = parsed.submission
    assert (parsed.username, parsed.password) == ("demo", "demo")
    assert (sub.to, sub.text, sub.sender, sub.route) == (
        "+250788100001",
        "Hello world",
        "ACME",
        "bsg",
    )
    assert (sub.validity_s, sub.priority, sub.flash, sub.dlr) == (5400, 2, True, True)
    assert sub.schedule_at == dt.datetime.fromtimestamp(NOW + 600, dt.UTC)
    assert parsed.dlr == KannelDlr(url="http://app/dlr?type=%d", mask=31)


def test_several_recipients_and_no_report_without_a_mask() -> None:
    parsed = sendsms(f"{LOGIN}&to=%2B250788100001+%2B250788100002&text=x&dlr-url=http://a/b")
    assert parsed.submission.to == ["+250788100001", "+250788100002"]
    assert parsed.dlr is None
    assert parsed.submission.dlr is False


def test_text_in_the_charset_kannel_clients_send() -> None:
    ucs2 = urllib.parse.quote("Привіт".encode("utf-16-be"))
    assert sendsms(f"{LOGIN}&to=%2B1&coding=2&charset=UTF-16BE&text={ucs2}").submission.text == (
        "Привіт"
    )
    latin = urllib.parse.quote("café".encode("latin-1"))
    assert sendsms(f"{LOGIN}&to=%2B1&charset=ISO-8859-1&text={latin}").submission.text == "café"
    assert sendsms(f"{LOGIN}&to=%2B1&text=caf%C3%A9").submission.text == "café"


@pytest.mark.parametrize(
    ("query", "status", "text"),
    [
        ("to=%2B1&text=x", 403, AUTH_FAILED),
        ("username=demo&to=%2B1&text=x", 403, AUTH_FAILED),
        (f"{LOGIN}&text=x", 400, "Missing receiver number, rejected"),
        (f"{LOGIN}&to=%2B1&text=", 400, "Empty text not allowed, rejected"),
        (f"{LOGIN}&to=%2B1&text=x&udh=%06%05%04", 400, "UDH is not supported by septet, rejected"),
        (
            f"{LOGIN}&to=%2B1&text=x&coding=1",
            400,
            "Coding 1 (8-bit binary) is not supported by septet, rejected",
        ),
        (f"{LOGIN}&to=%2B1&text=x&coding=7", 400, "Coding field misformed, rejected"),
        (
            f"{LOGIN}&to=%2B1&text=x&mclass=2",
            400,
            "MClass 2 (to SIM) is not supported by septet, rejected",
        ),
        (f"{LOGIN}&to=%2B1&text=x&validity=abc", 400, "Validity field misformed, rejected"),
        (f"{LOGIN}&to=%2B1&text=x&priority=9", 400, "Priority field misformed, rejected"),
        (f"{LOGIN}&to=%2B1&text=x&dlr-mask=64", 400, "Dlr-mask field misformed, rejected"),
        (
            f"{LOGIN}&to=%2B1&text=x&dlr-mask=1&dlr-url=ftp://a/b",
            400,
            "DLR-URL is not an http(s) URL, rejected",
        ),
        (
            f"{LOGIN}&to=%2B1&text=%FF&charset=klingon",
            400,
            "Charset 'klingon' is not supported, rejected",
        ),
        (f"{LOGIN}&to=%2B1&text=%FF", 400, "Text is not valid utf-8, rejected"),
    ],
)
def test_refusals_are_kannel_lines(query: str, status: int, text: str) -> None:
    assert parse(query) == Refusal(status, text)


def test_dlr_url_escapes_are_substituted_and_encoded() -> None:
    values = DlrValues(
        dlr_type=1,
        smsc_reply="id:77 stat:DELIVRD",
        to="+250788100001",
        sender="0044ACME",
        at=NOW,
        smsc_id="dsc",
        msg_id="42",
        text="Hello  big world",
        provider_id="77",
        account="demo",
    )
    url = expand_dlr_url(
        "http://app/dlr?t=%d&r=%A&p=%p&q=%q&P=%P&Q=%Q&ts=%t&T=%T&i=%i&I=%I&a=%a&b=%b&k=%k"
        "&F=%F&n=%n&u=%u&z=%z&pct=100%%",
        values,
    )
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query, keep_blank_values=True))
    assert query == {
        "t": "1",
        "r": "id:77 stat:DELIVRD",
        "p": "250788100001",
        "q": "+250788100001",
        "P": "0044ACME",
        "Q": "+44ACME",
        "ts": "2027-01-15 08:00:00",
        "T": "1800000000",
        "i": "dsc",
        "I": "42",
        "a": "Hello big world",
        "b": "Hello  big world",
        "k": "Hello",
        "F": "77",
        "n": "demo",
        "u": "",  # a Kannel escape septet has no value for
        "z": "%z",  # not an escape: kept as written
        "pct": "100%",
    }


def test_dlr_type_follows_kannel_values() -> None:
    assert dlr_type("DELIVRD", submitted=True, refused=False) == 1
    assert dlr_type("UNDELIV", submitted=True, refused=False) == 2
    assert dlr_type("EXPIRED", submitted=False, refused=False) == 2
    assert dlr_type(None, submitted=True, refused=False) == 8
    assert dlr_type(None, submitted=False, refused=True) == 16
    assert dlr_type(None, submitted=False, refused=False) == 4


def curl(url: str, *extra: str) -> tuple[int, str]:
    """curl, the way a Kannel application's shell script calls sendsms."""
    done = subprocess.run(
        ["curl", "-sS", "-w", "\n%{http_code}", *extra, url],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    )
    body, _, status = done.stdout.rpartition("\n")
    return int(status), body


@pytest.mark.slow
@pytest.mark.anyio
async def test_a_kannel_client_sends_with_curl(tmp_path: Path) -> None:
    async with running_daemon(daemon_settings(tmp_path)) as daemon:
        base = f"{daemon.api_url}/cgi-bin/sendsms"
        get = f"{base}?{LOGIN}&to=%2B250788100001&text=Hello+from+Kannel&from=ACME"
        assert await anyio.to_thread.run_sync(curl, get) == (202, ACCEPTED)
        form = ["-d", LOGIN, "-d", "to=%2B250788100002", "-d", "text=by+POST"]
        assert await anyio.to_thread.run_sync(curl, base, *form) == (202, ACCEPTED)
        later = f"{base}?{LOGIN}&to=%2B250788100003&text=later&deferred=30"
        assert await anyio.to_thread.run_sync(curl, later) == (202, "3: Queued for later delivery")
        wrong = f"{base}?username=demo&password=nope&to=%2B250788100001&text=x"
        assert await anyio.to_thread.run_sync(curl, wrong) == (403, AUTH_FAILED)
        bad = f"{base}?{LOGIN}&to=12&text=x"
        status, body = await anyio.to_thread.run_sync(curl, bad)
        assert (status, body) == (
            400,
            "'12' is a local number and no default region is configured, rejected",
        )
        async with httpx.AsyncClient(base_url=daemon.api_url, headers={"X-API-Key": "demo"}) as api:
            listed = (await api.get("/v1/messages")).json()["messages"]
    assert sorted(m["text"] for m in listed) == ["Hello from Kannel", "by POST", "later"]
    assert {m["to"]: m["state"] for m in listed}["+250788100003"] == "scheduled"


@pytest.mark.slow
@pytest.mark.anyio
async def test_a_kannel_client_gets_its_delivery_reports_at_its_dlr_url(tmp_path: Path) -> None:
    """curl sends with Kannel's dlr-mask and dlr-url escapes; the receiver gets a GET for
    the provider's taking it (8) and for its delivery (1), the escapes substituted."""
    got: list[dict[str, str]] = []
    delivered = anyio.Event()

    async def receive(request: web.Request) -> web.Response:
        got.append(dict(request.query))
        if request.query.get("type") == "1":
            delivered.set()
        return web.Response(text="ok")

    settings = daemon_settings(tmp_path, webhooks=WebhookSettings(allowed_hosts=["127.0.0.1"]))
    async with (
        serve_app([web.get("/dlr", receive)]) as receiver,
        running_daemon(settings) as daemon,
    ):
        await daemon.sim_config({"dlr_mix": {"DELIVRD": 1.0}})
        template = f"{receiver}/dlr?type=%d&id=%I&to=%p&from=%P&smsc=%i&fid=%F&reply=%A&t=%T"
        query = urllib.parse.urlencode(
            {
                "username": "demo",
                "password": "demo",
                "to": "+250788100001",
                "from": "ACME",
                "text": "Hello with a report",
                "dlr-mask": "31",
                "dlr-url": template,
            }
        )
        status = await anyio.to_thread.run_sync(curl, f"{daemon.api_url}/cgi-bin/sendsms?{query}")
        assert status == (202, ACCEPTED)
        with anyio.fail_after(20):
            await delivered.wait()
        async with httpx.AsyncClient(base_url=daemon.api_url, headers={"X-API-Key": "demo"}) as api:
            (message,) = (await api.get("/v1/messages")).json()["messages"]
    by_type = {report["type"]: report for report in got}
    assert set(by_type) == {"8", "1"}  # taken by the provider, then delivered
    for report in by_type.values():
        assert report["id"] == message["msg_id"]
        assert report["to"] == "250788100001"
        assert report["from"] == "ACME"
        assert report["smsc"] == "dsc"
        assert report["fid"] == message["provider_id"]
        assert report["t"].isdigit()
    assert by_type["1"]["reply"] == "stat:DELIVRD err:D"
    assert by_type["8"]["reply"] == f"ACK/{message['provider_id']}"
