"""`septet providers balance|senders` against the provider simulators, as a process."""

from __future__ import annotations

import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from bridges.sim.core import SimulatorConfig
from bridges.sim.runner import serve_simulators

pytestmark = pytest.mark.anyio

CREDENTIALS = {
    # Callbacks are on (public_url): dsc needs the pair it registers with them.
    "dsc": '{ api_key = "demo", username = "demo", password = "demo",'
    ' callback_username = "cb", callback_password = "cb-password" }',
    "routemobile": '{ username = "demo", password = "demo" }',
    "bsg": '{ api_key = "test_demo" }',
    "smsclub": '{ token = "club-token" }',
}


def write_config(tmp_path: Path, base_url: str, *, smsclub_token: str = "club-token") -> Path:
    lines = ["[http]", 'public_url = "https://septet.example.org"']
    for name, credentials in CREDENTIALS.items():
        credentials = credentials.replace("club-token", smsclub_token)
        lines += [
            f"[bridges.{name}]",
            f'driver = "{name}"',
            f'base_url = "{base_url}"',
            f"credentials = {credentials}",
            'default_sender = "SEPTET"',
            "timeout_s = 2.0",
            "connect_timeout_s = 2.0",
        ]
    path = tmp_path / "septet.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@asynccontextmanager
async def simulators() -> AsyncIterator[str]:
    config = SimulatorConfig(
        bsg_balance=42.5,
        smsclub_token="club-token",
        smsclub_originators=["ACME", "SHOP"],
        smsclub_money="120.5000",
    )
    async with anyio.create_task_group() as tg:
        handle = await tg.start(
            lambda task_status: serve_simulators(
                ["dsc", "routemobile", "bsg", "smsclub"], config=config, task_status=task_status
            )
        )
        yield handle.url
        tg.cancel_scope.cancel()


async def septet_providers(*args: str) -> tuple[int, list[str], str]:
    result = await anyio.run_process(
        [sys.executable, "-m", "engine", "providers", *args], check=False
    )
    return result.returncode, result.stdout.decode().splitlines(), result.stderr.decode()


async def test_balance_asks_the_providers_that_have_the_call(tmp_path: Path) -> None:
    async with simulators() as url:
        code, lines, err = await septet_providers(
            "balance", "--config", str(write_config(tmp_path, url))
        )
    assert (code, err) == (0, "")
    assert lines == [
        "dsc: the provider has no balance call",
        "routemobile: the provider has no balance call",
        "bsg: balance 42.50 EUR",
        "smsclub: balance 120.50 UAH",
    ]


async def test_senders_lists_sms_clubs_sender_ids(tmp_path: Path) -> None:
    async with simulators() as url:
        config = str(write_config(tmp_path, url))
        code, lines, _ = await septet_providers("senders", "smsclub", "bsg", "--config", config)
    assert code == 0
    assert lines == [
        "smsclub: sender IDs: ACME, SHOP",
        "bsg: the provider has no call that lists sender IDs",
    ]


async def test_a_refused_token_is_one_line_and_exit_1(tmp_path: Path) -> None:
    async with simulators() as url:
        config = str(write_config(tmp_path, url, smsclub_token="wrong"))
        code, lines, err = await septet_providers("balance", "smsclub", "--config", config)
        senders_code, senders, _ = await septet_providers("senders", "smsclub", "--config", config)
    assert code == 1
    assert err == ""
    (line,) = lines
    assert line.startswith("smsclub: credentials refused by the provider: ")
    assert senders_code == 1
    (sender_line,) = senders
    assert sender_line.startswith(
        "smsclub: sender IDs not listed, the provider's answer was unclear"
    )


async def test_an_unreachable_provider_is_one_line_and_exit_1(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    code, lines, _ = await septet_providers(
        "balance", "bsg", "--config", str(write_config(tmp_path, closed))
    )
    assert code == 1
    (line,) = lines
    assert line.startswith("bsg: credentials not checked, the provider could not be reached: ")
    assert "Traceback" not in line


async def test_an_unknown_bridge_or_a_bad_config_is_one_sentence_and_exit_2(tmp_path: Path) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:9")
    code, lines, err = await septet_providers("balance", "nope", "--config", str(config))
    assert (code, lines) == (2, [])
    assert (
        err
        == "septet providers: no bridge named nope (configured: dsc, routemobile, bsg, smsclub)\n"
    )
    broken = tmp_path / "broken.toml"
    broken.write_text("[bridges.bsg]\ndriver = 'bsg'\nnope = 1\n")
    code, lines, err = await septet_providers("balance", "--config", str(broken))
    assert code == 2
    assert err.startswith("septet providers: ")
    assert "Traceback" not in err
