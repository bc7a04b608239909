"""How SMPP sessions end (SMPP v3.4 section 4.2): the ESME's unbind is answered after
every submit_sm_resp it is owed, and a stopping server unbinds its bound ESMEs, waits a
bounded time for their unbind_resp, and still answers the submit_sm it had read."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from engine.smpp import pdu as p
from engine.smpp.codec import encode_pdu
from tests.engine.smpp.harness import AcceptGate, smpp_harness
from tests.engine.smpp.raw_client import RawClient

pytestmark = pytest.mark.anyio

# Long enough that a connection closing in time was closed by its unbind_resp, never
# by running out of time: the tests are bounded by fail_after well before it.
PATIENT_S = 60.0


def submit_sm(client: RawClient, text: bytes) -> bytes:
    return encode_pdu(
        p.SubmitSm(
            sequence_number=client.next_sequence(),
            source_addr="ACME",
            dest_addr_ton=1,
            destination_addr="250788123456",
            short_message=text,
            registered_delivery=1,
        )
    )


async def test_unbind_resp_comes_after_every_submit_sm_resp(tmp_path: Path) -> None:
    gate = AcceptGate()
    async with (
        smpp_harness(tmp_path, wrap_accept=gate.wrap) as harness,
        await RawClient.connect(harness.port) as client,
    ):
        await client.bind()
        submits = b"".join(submit_sm(client, f"message {n}".encode()) for n in range(3))
        unbind = p.Unbind(sequence_number=client.next_sequence())
        await client.send_bytes(submits + encode_pdu(unbind))
        await gate.wait_for(3)  # three submit_sm in progress, the unbind behind them
        gate.open()
        answers = [await client.read() for _ in range(4)]
        assert [type(answer) for answer in answers] == [p.SubmitSmResp] * 3 + [p.UnbindResp]
        assert all(answer.command_status == p.ESME_ROK for answer in answers)
        assert answers[-1].sequence_number == unbind.sequence_number
        assert await client.closed_by_server()
        assert len(harness.scheduler.messages) == 3


async def answer_the_unbind(client: RawClient, seen: list[p.AnyPdu]) -> None:
    """Play a well-behaved ESME: answer the server's unbind, then see the close (the
    task fails if the server does not close)."""
    with anyio.fail_after(10):
        unbind = await client.read()
        seen.append(unbind)
        await client.send(p.UnbindResp(sequence_number=unbind.sequence_number))
        assert await client.closed_by_server()


async def test_a_stopping_server_unbinds_each_bound_esme(tmp_path: Path) -> None:
    seen: list[p.AnyPdu] = []
    async with anyio.create_task_group() as tg:
        with anyio.fail_after(10):
            async with smpp_harness(tmp_path, unbind_wait_s=PATIENT_S) as harness:
                client = await RawClient.connect(harness.port)
                await client.bind(p.BindReceiver)
                never_bound = await RawClient.connect(harness.port)
                await never_bound.send(p.EnquireLink(sequence_number=1))
                assert isinstance(await never_bound.read(), p.EnquireLinkResp)
                tg.start_soon(answer_the_unbind, client, seen)
            # The harness stopped the server: it returned once the ESME had answered.
        assert await never_bound.closed_by_server()  # not bound: closed, no unbind
    (unbind,) = seen  # answered, and then the server closed the connection
    assert isinstance(unbind, p.Unbind)
    await client.stream.aclose()
    await never_bound.stream.aclose()


async def test_an_esme_that_never_answers_the_unbind_is_closed_in_bounded_time(
    tmp_path: Path,
) -> None:
    with anyio.fail_after(10):
        async with smpp_harness(tmp_path, unbind_wait_s=0.05) as harness:
            client = await RawClient.connect(harness.port)
            await client.bind()
        # Stopped: the server gave up waiting and closed the connection.
        assert isinstance(await client.read(), p.Unbind)
        assert await client.closed_by_server()
        await client.stream.aclose()


async def test_a_submit_read_before_the_stop_is_still_answered(tmp_path: Path) -> None:
    gate = AcceptGate()
    got: list[p.AnyPdu] = []

    async def esme(client: RawClient) -> None:
        with anyio.fail_after(10):
            unbind = await client.read()
            got.append(unbind)
            await client.send(p.UnbindResp(sequence_number=unbind.sequence_number))
            gate.open()  # the submit_sm in progress goes on, after the unbind
            got.append(await client.read())
            assert await client.closed_by_server()

    async with anyio.create_task_group() as tg:
        async with smpp_harness(
            tmp_path, wrap_accept=gate.wrap, unbind_wait_s=PATIENT_S
        ) as harness:
            client = await RawClient.connect(harness.port)
            await client.bind()
            await client.send_bytes(submit_sm(client, b"in progress at the stop"))
            await gate.wait_for(1)
            tg.start_soon(esme, client)
        assert len(harness.scheduler.messages) == 1
    unbind, answer = got
    assert isinstance(unbind, p.Unbind)
    assert isinstance(answer, p.SubmitSmResp)
    assert answer.command_status == p.ESME_ROK
    assert answer.message_id.isdigit()
    await client.stream.aclose()


async def test_a_submit_crossing_the_servers_unbind_is_refused(tmp_path: Path) -> None:
    seen: list[p.AnyPdu] = []

    async def esme(client: RawClient) -> None:
        with anyio.fail_after(10):
            seen.append(await client.read())  # the unbind
            # The ESME had not read it yet and submits: the session is ending.
            await client.send_bytes(submit_sm(client, b"too late"))
            seen.append(await client.read())
            await client.send(p.UnbindResp(sequence_number=seen[0].sequence_number))
            assert await client.closed_by_server()

    async with anyio.create_task_group() as tg:
        async with smpp_harness(tmp_path, unbind_wait_s=PATIENT_S) as harness:
            client = await RawClient.connect(harness.port)
            await client.bind()
            tg.start_soon(esme, client)
        assert harness.scheduler.messages == []
    unbind, refused = seen
    assert isinstance(unbind, p.Unbind)
    assert isinstance(refused, p.SubmitSmResp)
    assert refused.command_status == p.ESME_RINVBNDSTS
    await client.stream.aclose()
