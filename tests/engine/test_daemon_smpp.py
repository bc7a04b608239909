"""SMPP through the whole daemon: an smpplib client submits, septet sends to the simulated
provider, and the provider's delivery report comes back as deliver_sm receipts."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from tests.engine.daemon_harness import daemon_settings, running_daemon
from tests.engine.smpp.test_real_clients import RECEIPT, SmpplibSession

pytestmark = pytest.mark.anyio


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
