"""engine.listener over real HTTP on 127.0.0.1: every answer a provider's callback can get."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import anyio
import httpx
import pytest

from bridges.base import BridgeSettings, Receipt
from bridges.routemobile import RouteMobileDriver
from engine.journal import JournalError
from engine.listener import UNWRITABLE_RETRY_AFTER_S, build_app, serve_listener

pytestmark = pytest.mark.anyio

TOKEN = "callback-secret-7"


class Recorder:
    """The receipt sink: keeps what it is given, or fails like an unwritable journal."""

    def __init__(self) -> None:
        self.received: list[tuple[str, list[Receipt]]] = []
        self.unwritable = False

    async def __call__(self, bridge: str, receipts: Sequence[Receipt]) -> None:
        if self.unwritable:
            raise JournalError("The journal /tmp/x.db cannot be written: disk I/O error.")
        self.received.append((bridge, list(receipts)))


async def ready() -> dict[str, object]:
    return {"ready": True}


def route_mobile_driver() -> RouteMobileDriver:
    return RouteMobileDriver(
        BridgeSettings(
            base_url="http://127.0.0.1:1",
            credentials={"username": "u", "password": "p", "callback_token": TOKEN},
        )
    )


@pytest.fixture
async def served() -> AsyncIterator[tuple[httpx.AsyncClient, Recorder]]:
    driver = route_mobile_driver()
    recorder = Recorder()
    app = build_app({"rm": driver}, recorder, ready)
    async with anyio.create_task_group() as tg:
        port = await tg.start(serve_listener, app, "127.0.0.1", 0)
        assert port != 0
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            yield client, recorder
        tg.cancel_scope.cancel()


def dlr_query(**extra: str) -> dict[str, str]:
    return {"sMessageId": "rm-41", "sStatus": "DELIVRD", "sMobileNo": "380501234567", **extra}


async def test_a_receipt_with_the_token_is_recorded_then_answered_200(
    served: tuple[httpx.AsyncClient, Recorder],
) -> None:
    client, recorder = served
    reply = await client.get("/dlr/rm", params=dlr_query(token=TOKEN))
    assert reply.status_code == 200
    [(bridge, [receipt])] = recorder.received
    assert (bridge, receipt.provider_id, receipt.state) == ("rm", "rm-41", "DELIVRD")


async def test_a_wrong_token_is_answered_401_and_nothing_is_recorded(
    served: tuple[httpx.AsyncClient, Recorder],
) -> None:
    client, recorder = served
    reply = await client.get("/dlr/rm", params=dlr_query(token="guess"))
    assert reply.status_code == 401
    assert TOKEN not in reply.text
    assert recorder.received == []


async def test_a_receipt_without_a_message_id_is_answered_400_naming_the_field(
    served: tuple[httpx.AsyncClient, Recorder],
) -> None:
    client, recorder = served
    reply = await client.get("/dlr/rm", params={"sStatus": "DELIVRD", "token": TOKEN})
    assert reply.status_code == 400
    assert "sMessageId" in reply.text
    assert recorder.received == []


async def test_an_unknown_bridge_is_answered_404(
    served: tuple[httpx.AsyncClient, Recorder],
) -> None:
    client, _ = served
    reply = await client.get("/dlr/nosuch", params=dlr_query(token=TOKEN))
    assert reply.status_code == 404
    assert "nosuch" in reply.text


async def test_an_unwritable_journal_is_answered_503_with_retry_after_then_recovers(
    served: tuple[httpx.AsyncClient, Recorder],
) -> None:
    client, recorder = served
    recorder.unwritable = True
    refused = await client.get("/dlr/rm", params=dlr_query(token=TOKEN))
    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == str(UNWRITABLE_RETRY_AFTER_S)
    assert "again later" in refused.text
    assert recorder.received == []
    # The provider's retry, once the journal can be written, is recorded.
    recorder.unwritable = False
    retried = await client.get("/dlr/rm", params=dlr_query(token=TOKEN))
    assert retried.status_code == 200
    assert [receipt.provider_id for _, [receipt] in recorder.received] == ["rm-41"]


async def test_health_and_readiness_answer_json(
    served: tuple[httpx.AsyncClient, Recorder],
) -> None:
    client, _ = served
    assert (await client.get("/healthz")).json() == {"status": "alive"}
    assert (await client.get("/readyz")).json() == {"ready": True}


async def test_a_callback_stuck_at_shutdown_is_cut_off_unanswered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # aiohttp would wait 60 s for it and hold the daemon's exit; the provider resends what
    # it got no 200 for.
    monkeypatch.setattr("engine.listener.SHUTDOWN_TIMEOUT_S", 0.2)
    driver = route_mobile_driver()
    handling = anyio.Event()

    async def stuck(bridge: str, receipts: Sequence[Receipt]) -> None:
        handling.set()
        await anyio.sleep_forever()

    app = build_app({"rm": driver}, stuck, ready)
    outcome: list[object] = []
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            listener = anyio.CancelScope()

            async def run_listener(*, task_status: anyio.abc.TaskStatus[int]) -> None:
                with listener:
                    await serve_listener(app, "127.0.0.1", 0, task_status=task_status)

            port = await tg.start(run_listener)

            async def call() -> None:
                async with httpx.AsyncClient() as client:
                    try:
                        reply = await client.get(
                            f"http://127.0.0.1:{port}/dlr/rm", params=dlr_query(token=TOKEN)
                        )
                        outcome.append(reply.status_code)
                    except httpx.TransportError as error:
                        outcome.append(type(error).__name__)

            tg.start_soon(call)
            await handling.wait()
            listener.cancel()
    # The connection closes with no answer: the provider will send the receipt again.
    assert outcome == ["RemoteProtocolError"]
