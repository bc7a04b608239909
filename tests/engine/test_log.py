"""Logging: redaction of secrets in every shape they travel in, and a daemon run whose every
output is searched for its own credentials."""

from __future__ import annotations

import json
import logging
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import anyio
import anyio.abc
import httpx
import msgspec
import pytest
import structlog

from bridges.base import HttpCall
from bridges.sim.core import SimulatorConfig
from bridges.sim.runner import serve_simulators
from engine.log import (
    REDACTED,
    Redactor,
    configure_logging,
    decode_body,
    describe_call,
    mask_number,
    mask_text,
    redact_secrets,
    redact_text,
)

# ── pattern redaction ─────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("text", "kept", "gone"),
    [
        # A provider URL with credentials in its query (Route Mobile, DSC).
        (
            "GET http://h/bulksms?username=rmuser&password=rmpass&type=0&dlr=1",
            ["type=0", "dlr=1", "http://h/bulksms?"],
            ["rmuser", "rmpass"],
        ),
        # DSC's dlrurl: the callback URL, percent-encoded inside the send URL's query.
        (
            "http://h/api?api_key=k3y&dlrurl=http%3A%2F%2F127.0.0.1%3A9750%2Fdlr%2Fdsc"
            "%3Fusername%3Dcbuser%26password%3Dcbpass%26x%3D1&text=hi",
            ["dlr%2Fdsc", "%26x%3D1", "text=hi"],
            ["k3y", "cbuser", "cbpass"],
        ),
        # Encoded twice: a URL inside a URL inside a query.
        ("u=http%253A%252F%252Fh%253Fpassword%253Dtw1ce%2526a%253D1", ["%2526a"], ["tw1ce"]),
        # An aiohttp error message quoting the request URL under an innocuous key.
        (
            "ClientResponseError: 502, message='Bad Gateway', "
            "url='http://h/send?token=t0ken&to=250788'",
            ["Bad Gateway", "to=250788"],
            ["t0ken"],
        ),
        ("redirected to https://admin:hunter2@example.org/x", ["example.org/x"], ["hunter2"]),
        ("Authorization: Bearer abc.def-ghi", ["Authorization"], ["abc.def-ghi"]),
        ('reply {"api_key": "bsgkey", "error": 0}', ['"error": 0'], ["bsgkey"]),
        ("x-api-key=h3ader callback_password=cbp user[password]=nested", [], ["h3ader", "cbp"]),
    ],
)
def test_secrets_inside_text_are_redacted(text: str, kept: list[str], gone: list[str]) -> None:
    redacted = redact_text(text)
    assert REDACTED in redacted
    for part in kept:
        assert part in redacted
    for secret in gone:
        assert secret not in redacted


def test_innocuous_text_is_left_alone() -> None:
    text = "msg_id=01J9 bridge=dsc monkey=1 state=DELIVRD to=+250788100001 keys: 3 passed"
    assert redact_text(text) == text


def test_a_credential_that_is_an_ordinary_word_is_not_searched_for() -> None:
    # The embedded default's credentials are "demo": redaction goes by place, so a path
    # or a text holding that word keeps it (it used to show as "[redacted].db").
    event: dict[str, Any] = {
        "event": "started",
        "journal": "/srv/demo/demo.db",
        "error": "demo account: the provider said no",
        "password": "demo",
    }
    out = Redactor()(None, "info", event)
    assert out["journal"] == "/srv/demo/demo.db"
    assert out["error"] == "demo account: the provider said no"
    assert out["password"] == REDACTED


def test_numbers_and_texts_are_masked_by_place_unless_personal_data_is_allowed() -> None:
    def event() -> dict[str, Any]:
        return {
            "event": "callback_received",
            "to": "+250788100800",
            "query": {"destination": "250788100800,250788100801", "msgid": "77"},
            "text": "meet me at nine",
            "body": decode_body(b'{"msisdn": "447700900123", "body": "secret plan"}'),
            "raw": {"body": decode_body(b"not a form, not json")},
            "msg_id": "m-250788100800",
        }

    masked = Redactor()(None, "debug", event())
    assert masked["to"] == "+25078****800"
    assert masked["query"] == {"destination": "25078****800,25078****801", "msgid": "77"}
    assert masked["body"]["msisdn"] == "44770****123"
    hashed = mask_text("meet me at nine")
    assert masked["text"] == hashed
    assert hashed.startswith("[15 chars, sha256 ")
    assert "secret" not in json.dumps(masked)
    assert masked["raw"]["body"] == mask_text("not a form, not json")
    # An id is not a phone number, whatever digits it holds.
    assert masked["msg_id"] == "m-250788100800"
    allowed = Redactor(personal_data=True)(None, "debug", event())
    assert allowed["to"] == "+250788100800"
    assert allowed["text"] == "meet me at nine"
    assert allowed["body"] == {"msisdn": "447700900123", "body": "secret plan"}


def test_a_provider_request_is_logged_as_fields_so_each_is_redacted_by_its_key() -> None:
    # DSC's form body carries the credentials and the callback URL with its own.
    call = HttpCall(
        method="POST",
        path="/api/send",
        headers=(("Authorization", "Bearer b3arer"), ("X-API-Key", "xk3y")),
        body=b"api_key=k3y&username=us3r&to=%2B250788100800&text=hi+there"
        b"&dlrurl=http%3A%2F%2Fh%2Fdlr%3Fusername%3Dcbu%26password%3Dcbp",
    )
    fields = Redactor()(None, "debug", describe_call(call))
    rendered = json.dumps(fields)
    for secret in ("b3arer", "xk3y", "k3y", "us3r", "cbu", "cbp", "250788100800", "hi there"):
        assert secret not in rendered
    assert fields["body"]["dlrurl"] == (f"http://h/dlr?username={REDACTED}&password={REDACTED}")
    assert fields["body"]["to"] == "+25078****800"
    many = HttpCall(method="POST", path="/", body=msgspec.json.encode({"to": list(range(100))}))
    assert describe_call(many)["body"]["to"][-1] == "... (100 items)"


def test_mask_number_keeps_the_country_and_the_last_digits() -> None:
    assert mask_number("+250788100800") == "+25078****800"
    assert mask_number("12345") == "***45"
    assert mask_number("123") == "***"


def test_the_processor_redacts_by_key_at_any_depth_and_inside_values() -> None:
    event: dict[str, Any] = {
        "event": "request_failed",
        "api_key": "k",
        "headers": {"Authorization": "Basic dXNlcjpwYXNz", "accept": "json"},
        "calls": [{"url": "http://h/?password=p4ss"}, ("a", "token=t0k")],
        "body": b"username=bob&password=b0b",
        "error": ValueError("cannot reach http://h/?api_key=v4lue"),
        "count": 3,
    }
    out = redact_secrets(None, "warning", event)
    rendered = json.dumps(out, default=str)
    for secret in ("dXNlcjpwYXNz", "p4ss", "t0k", "b0b", "v4lue"):
        assert secret not in rendered
    assert out["api_key"] == REDACTED
    assert out["headers"]["accept"] == "json"
    assert out["count"] == 3
    assert out["event"] == "request_failed"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.reset_defaults()
    root.handlers, root.level = handlers, level


@pytest.mark.usefixtures("restore_logging")
def test_configured_logging_writes_redacted_json_lines_for_structlog_and_stdlib(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("json", "debug")
    log = structlog.get_logger("septet.test")
    log.debug("state_changed", detail="value Bearer v3ry-long-secret here")
    log.warning("request_failed", url="http://h/?password=pw12345")
    logging.getLogger("aiohttp.client").warning("failed http://h/?token=tk67890")
    logging.getLogger("aiohttp.client").debug("stdlib debug chatter stays out")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [line["event"] for line in lines[:2]] == ["state_changed", "request_failed"]
    assert lines[0]["level"] == "debug"
    assert lines[1]["level"] == "warning"
    assert "timestamp" in lines[0]
    assert len(lines) == 3
    assert lines[2]["logger"] == "aiohttp.client"
    text = json.dumps(lines)
    for secret in ("v3ry-long-secret", "pw12345", "tk67890"):
        assert secret not in text


@pytest.mark.usefixtures("restore_logging")
def test_console_format_is_for_people(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("console", "info")
    structlog.get_logger("septet.test").info("started", http_port=9750, password="p")
    structlog.get_logger("septet.test").debug("hidden at info")
    err = capsys.readouterr().err
    assert "started" in err
    assert "http_port=9750" in err
    assert "hidden" not in err
    assert "password=[redacted]" in err
    with pytest.raises(json.JSONDecodeError):
        json.loads(err.splitlines()[0])


# ── a daemon run, searched for its own secrets ───────────────────────────────────────

# Unusual values, so a hit can only be a leak; some need percent-encoding in URLs.
SECRETS = {
    "SEPTET_T_DSC_API_KEY": "dscK3y-Qv7Zr2Xw",
    "SEPTET_T_DSC_USERNAME": "dscUs3r-Lm4Np8",
    "SEPTET_T_DSC_PASSWORD": "dscPa55/w+rd-Hj6",
    "SEPTET_T_DSC_CB_USERNAME": "cbUs3r-Tt2Gg9",
    "SEPTET_T_DSC_CB_PASSWORD": "cbPa55 w@rd-Kk1",
    "SEPTET_T_RM_USERNAME": "rmUs3r-Bb5Cc3",
    "SEPTET_T_RM_PASSWORD": "rmPa55:w0rd-Dd7",
    "SEPTET_T_RM_CB_TOKEN": "rmCbT0k3n-Ee8Ff4",
    "SEPTET_T_BSG_API_KEY": "bsgK3y-Rr3Ss6Uu1",
    "SEPTET_T_SMSCLUB_TOKEN": "clubT0k3n-Ww9Yy2",
}
CREDENTIALS = {
    "dsc": {
        "api_key": "SEPTET_T_DSC_API_KEY",
        "username": "SEPTET_T_DSC_USERNAME",
        "password": "SEPTET_T_DSC_PASSWORD",
        "callback_username": "SEPTET_T_DSC_CB_USERNAME",
        "callback_password": "SEPTET_T_DSC_CB_PASSWORD",
    },
    "routemobile": {
        "username": "SEPTET_T_RM_USERNAME",
        "password": "SEPTET_T_RM_PASSWORD",
        "callback_token": "SEPTET_T_RM_CB_TOKEN",
    },
    "bsg": {"api_key": "SEPTET_T_BSG_API_KEY"},
    "smsclub": {"token": "SEPTET_T_SMSCLUB_TOKEN"},
}
RECIPIENTS = {
    "dsc": "+2507881",
    "routemobile": "+9198123",
    "bsg": "+4477009",
    "smsclub": "+3805010",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def secret_forms() -> dict[str, str]:
    """Each secret as it could appear: raw, and percent-encoded as in a URL or a form."""
    forms = {}
    for name, secret in SECRETS.items():
        for form in (secret, quote(secret, safe=""), quote_plus(secret), quote(secret)):
            forms[form] = name
    return forms


def write_config(tmp_path: Path, sim_url: str, http_port: int) -> Path:
    lines = [
        "[journal]",
        f'path = "{tmp_path / "septet.db"}"',
        "[ingress]",
        'tcp = "127.0.0.1:0"',
        f'unix = "{tmp_path / "septet.sock"}"',
        "[http]",
        f'listen = "127.0.0.1:{http_port}"',
        "[smpp]",
        'listen = "127.0.0.1:0"',
        "[retry]",
        "base_s = 0.02",
        "max_delay_s = 0.2",
        # A message whose outcome is unknown (the simulators' faults) waits for a report
        # that never comes: a short deadline ends it with its final dlr UNKNOWN (looked
        # for every 0.2 s, not the default 5 s).
        "[reports]",
        "timeout_s = 1",
        "sweep_s = 0.2",
    ]
    for bridge, credentials in CREDENTIALS.items():
        values = ", ".join(f'{key} = "env:{env}"' for key, env in credentials.items())
        lines += [
            f"[bridges.{bridge}]",
            f'driver = "{bridge}"',
            f'base_url = "{sim_url}"',
            f"credentials = {{ {values} }}",
            'default_sender = "SEPTET"',
            "timeout_s = 2.0",
            "poll_interval_s = 0.2",
            "linger_ms = 0.0",
        ]
    path = tmp_path / "septet.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def simulator_configs(http_port: int) -> dict[str, SimulatorConfig]:
    base = SimulatorConfig(
        dlr_delay_s=0.05,
        seed=7,
        # Faults on a quarter of the sends: retries, unknown outcomes, unparseable
        # replies — the paths whose error texts end up in logs and `failed` events.
        fail_rate=0.25,
        faults={"5xx": 1.0, "429": 1.0, "reset_before": 1.0, "reset_after": 1.0, "garbage": 1.0},
        dsc_api_key=SECRETS["SEPTET_T_DSC_API_KEY"],
        dsc_username=SECRETS["SEPTET_T_DSC_USERNAME"],
        dsc_password=SECRETS["SEPTET_T_DSC_PASSWORD"],
        dsc_daily_limit=1000,
        routemobile_username=SECRETS["SEPTET_T_RM_USERNAME"],
        routemobile_password=SECRETS["SEPTET_T_RM_PASSWORD"],
        routemobile_dlr_url=(
            f"http://127.0.0.1:{http_port}/dlr/routemobile"
            f"?token={quote(SECRETS['SEPTET_T_RM_CB_TOKEN'], safe='')}"
        ),
        bsg_api_key=SECRETS["SEPTET_T_BSG_API_KEY"],
        smsclub_token=SECRETS["SEPTET_T_SMSCLUB_TOKEN"],
        smsclub_rate_limit=None,
        smsclub_duplicate_window_s=0.0,
    )
    return dict.fromkeys(CREDENTIALS, base)


FINAL_STATES = frozenset({"DELIVRD", "UNDELIV", "EXPIRED", "REJECTD", "DELETED", "UNKNOWN"})


async def read_all(stream: anyio.abc.ByteReceiveStream, into: bytearray) -> None:
    async for chunk in stream:
        into.extend(chunk)


@pytest.mark.anyio
@pytest.mark.slow
async def test_no_secret_appears_in_logs_events_or_metrics(tmp_path: Path) -> None:
    http_port = free_port()
    per_bridge = 10
    lines = [
        msgspec.json.encode({"id": f"{bridge}-{n}", "to": f"{prefix}{n:05d}", "text": f"Hi {n}"})
        for bridge, prefix in RECIPIENTS.items()
        for n in range(per_bridge)
    ]
    lines.append(b'{"to": "+250788100001", "text": "", "password": "x"}')  # rejected
    expected = per_bridge * len(RECIPIENTS)
    stdout, stderr = bytearray(), bytearray()
    scraped: dict[str, str] = {}
    env = {"PATH": "/usr/bin:/bin", **SECRETS}
    async with anyio.create_task_group() as tg:
        handle = await tg.start(
            lambda task_status: serve_simulators(
                list(CREDENTIALS),
                configs=simulator_configs(http_port),
                task_status=task_status,
            )
        )
        config = write_config(tmp_path, handle.url, http_port)
        command = [sys.executable, "-m", "engine", "run", "--config", str(config)]
        command += ["--stdin", "--exit-when-idle", "--log-level", "debug"]
        with anyio.fail_after(50):
            async with await anyio.open_process(command, env=env, cwd=tmp_path) as process:
                assert process.stdin is not None
                assert process.stdout is not None
                assert process.stderr is not None
                tg.start_soon(read_all, process.stderr, stderr)
                await process.stdin.send(b"\n".join(lines) + b"\n")
                finals: set[str] = set()
                buffer = b""
                async for chunk in process.stdout:
                    stdout.extend(chunk)
                    *complete, buffer = (buffer + chunk).split(b"\n")
                    for line in complete:
                        event = json.loads(line)
                        if event["event"] == "failed" or (
                            event["event"] == "dlr" and event["state"] in FINAL_STATES
                        ):
                            finals.add(event["msg_id"])
                    if len(finals) >= expected:
                        break
                async with httpx.AsyncClient() as client:
                    base = f"http://127.0.0.1:{http_port}"
                    for path in ("/metrics", "/readyz", "/healthz"):
                        scraped[path] = (await client.get(base + path)).text
                    # Callbacks with wrong and with malformed credentials: logged warnings.
                    dsc_cb = {
                        "username": SECRETS["SEPTET_T_DSC_CB_USERNAME"],
                        "password": "not-the-password",
                    }
                    assert (await client.get(base + "/dlr/dsc", params=dsc_cb)).status_code == 401
                    dsc_cb["password"] = SECRETS["SEPTET_T_DSC_CB_PASSWORD"]
                    dsc_cb["command"] = "bogus"
                    assert (await client.get(base + "/dlr/dsc", params=dsc_cb)).status_code == 400
                await process.stdin.aclose()
                async for chunk in process.stdout:
                    stdout.extend(chunk)
                assert await process.wait() == 0, stderr.decode(errors="replace")[-2000:]
        tg.cancel_scope.cancel()

    events = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    logs = [json.loads(line) for line in stderr.splitlines() if line.strip()]
    # The run did what it is meant to exercise: every bridge submitted with the secret
    # credentials, faults happened, debug and warning events were written.
    assert {e["bridge"] for e in events if e["event"] == "submitted"} == set(CREDENTIALS)
    assert len(finals) == expected
    kinds = {log["event"] for log in logs}
    assert {"message_submitted", "message_report", "callback_rejected"} <= kinds
    assert {"debug", "warning"} <= {log["level"] for log in logs}
    assert "septet_messages_total" in scraped["/metrics"]
    outputs = {
        "stderr": stderr.decode(errors="replace"),
        "stdout": stdout.decode(errors="replace"),
        **scraped,
    }
    leaks = [
        f"{name} in {where}"
        for where, text in outputs.items()
        for form, name in secret_forms().items()
        if form in text
    ]
    assert not leaks
    # Personal data stays out of the logs by default: no recipient's number in full (in
    # any of the shapes the providers take it), though debug logged every request.
    log_text = outputs["stderr"]
    for bridge, prefix in RECIPIENTS.items():
        for n in range(per_bridge):
            number = f"{prefix}{n:05d}"
            assert number[1:] not in log_text, f"{bridge}'s recipient {number} is in the logs"
    assert "****" in log_text


# ── [log] personal_data through `septet run` ─────────────────────────────────────────


@pytest.mark.anyio
@pytest.mark.parametrize("personal_data", [True, False])
async def test_personal_data_in_the_debug_log_follows_the_config(
    tmp_path: Path, personal_data: bool
) -> None:
    config = tmp_path / "septet.toml"
    config.write_text(
        "\n".join(
            [
                "[journal]",
                f'path = "{tmp_path / "septet.db"}"',
                "[http]",
                'listen = "127.0.0.1:0"',
                "[simulators]",
                "enabled = true",
                "[log]",
                f"personal_data = {str(personal_data).lower()}",
                "[bridges.smsclub]",
                'driver = "smsclub"',
                'default_sender = "SEPTET"',
                'credentials = { token = "demo" }',
                "poll_interval_s = 0.2",
                "[routing]",
                'default = ["smsclub"]',
                "replace = true",
            ]
        )
        + "\n"
    )
    line = b'{"to": "+380501234567", "text": "meet at the north gate"}\n'
    command = [sys.executable, "-m", "engine", "run", "--config", str(config)]
    command += ["--stdin", "--exit-when-idle", "--log-level", "debug"]
    with anyio.fail_after(60):
        result = await anyio.run_process(command, input=line, cwd=tmp_path, check=False)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    log_text = result.stderr.decode()
    # The provider request was logged at debug either way, with its phone and message.
    assert '"provider_request"' in log_text
    if personal_data:
        assert "380501234567" in log_text
        assert "meet at the north gate" in log_text
    else:
        assert "380501234567" not in log_text
        assert "meet at the north gate" not in log_text
        assert "38050****567" in log_text
        assert mask_text("meet at the north gate") in log_text
