"""What a client is told about each message, end to end: the running daemon, real sockets,
real SQLite, the embedded simulators told to misbehave (engine.lifecycle's rules).

- A status that is not final (BSG's "unknown" before its report) is a `status` event,
  never a `dlr` and never an SMPP receipt; the real report follows, once.
- A send whose reply was lost is "outcome unknown" (a `status`), resolved by the
  provider's later report, matched by recipient since its id was never learned.
- A report that never comes ends at the report deadline as one `dlr` UNKNOWN.
- Wrong credentials are the bridge's fault: the route's next bridge carries every
  message, /readyz names the bridge, nothing ends REJECTD.

Every wait is bounded by anyio.fail_after (Client.wait_for); none sleeps for correctness.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.engine.daemon_harness import Client, connected, daemon_settings, running_daemon
from tests.engine.outcomes_harness import (
    SmppClient,
    accepted_ids,
    dlrs_of,
    each_has_dlr,
    events_of,
    final_states,
    kinds_of,
    readyz,
    with_bridge,
    with_report_timeout,
)

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

ALL_DELIVERED = {"dlr_mix": {"DELIVRD": 1.0}}


def journal_path(tmp_path: Path) -> Path:
    return tmp_path / "septet.db"  # where daemon_settings puts it


def assert_status_then_one_dlr(client: Client, msg_id: str, final_state: str) -> None:
    """The message's story: only non-final `status` events before exactly one `dlr`."""
    events = events_of(client, msg_id)
    kinds = [event["event"] for event in events]
    assert kinds.count("dlr") == 1, kinds
    assert kinds[-1] == "dlr", kinds  # nothing after the final report
    assert "failed" not in kinds, kinds
    [dlr] = dlrs_of(client, msg_id)
    assert dlr["state"] == final_state, dlr
    for event in events:
        if event["event"] == "status":
            assert event["final"] is False, event


async def send_sentinel(client: Client, line: dict[str, Any]) -> None:
    """Send one more message and wait for its `dlr`: events of one connection come in
    order, so a stray report for an earlier message would have come before it."""
    await client.send({"id": "sentinel", **line})
    await client.wait_for(lambda events: "sentinel" in accepted_ids(client))
    sentinel = accepted_ids(client)["sentinel"]
    await client.wait_for(each_has_dlr(client, [sentinel]))


# ── 1. BSG's early "unknown" ────────────────────────────────────────────────────────

BSG_POLL_S = 0.2
BSG_REPORT_DELAY_S = 2.0  # ten polls answer "unknown" before the report is there


def bsg_polled_fast(tmp_path: Path) -> Any:
    return with_bridge(daemon_settings(tmp_path), "bsg", poll_interval_s=BSG_POLL_S)


async def test_bsg_unknown_before_the_report_is_a_status_and_one_dlr_delivrd(
    tmp_path: Path,
) -> None:
    async with running_daemon(bsg_polled_fast(tmp_path)) as daemon:
        await daemon.sim_config(
            {**ALL_DELIVERED, "dlr_delay_s": BSG_REPORT_DELAY_S, "bsg_pending_status": "unknown"},
            provider="bsg",
        )
        async with connected(daemon) as client:
            await client.send(
                *(
                    {"id": f"b{n}", "to": f"+4477009002{n:02d}", "text": f"early {n}", "dlr": True}
                    for n in range(5)
                )
            )
            await client.wait_for(lambda events: len(client.of("accepted")) == 5)
            ids = list(accepted_ids(client).values())
            await client.wait_for(each_has_dlr(client, ids))
            await daemon.sim_config({"dlr_delay_s": 0.0}, provider="bsg")
            await send_sentinel(client, {"to": "+447700900299", "text": "sentinel"})
        counters = await daemon.sim_counters()
    assert {e["bridge"] for e in client.of("accepted")} == {"bsg"}
    for msg_id in ids:
        assert_status_then_one_dlr(client, msg_id, "DELIVRD")
        statuses = [e for e in events_of(client, msg_id) if e["event"] == "status"]
        # The poll before the report said "unknown": told as such, not as a final state.
        assert statuses, kinds_of(client, msg_id)
        assert {e["state"] for e in statuses} == {"UNKNOWN"}
    assert not [e for e in client.of("dlr") if e["state"] == "UNKNOWN"]
    assert counters["bsg"]["accepted_total"] == 6  # each sent once, the sentinel too
    assert final_states(journal_path(tmp_path), ids) == dict.fromkeys(ids, "DELIVRD")


async def test_bsg_unknown_before_the_report_gives_one_smpp_receipt_delivrd(
    tmp_path: Path,
) -> None:
    async with running_daemon(bsg_polled_fast(tmp_path)) as daemon:
        await daemon.sim_config(
            {**ALL_DELIVERED, "dlr_delay_s": BSG_REPORT_DELAY_S, "bsg_pending_status": "unknown"},
            provider="bsg",
        )
        smpp = SmppClient(daemon.smpp_port)
        await smpp.bind()
        try:
            destinations = [f"4477009003{n:02d}" for n in range(5)]
            ids = await smpp.submit(destinations, "early unknown over SMPP")
            with anyio.fail_after(20):
                receipts = await smpp.receipts(5)
            # A sentinel through the same bridge, reported at once: its receipt comes
            # after any stray receipt for the first five.
            await daemon.sim_config({"dlr_delay_s": 0.0}, provider="bsg")
            [sentinel] = await smpp.submit(["447700900399"], "sentinel")
            with anyio.fail_after(20):
                receipts = await smpp.receipts(6)
        finally:
            await smpp.close()
        counters = await daemon.sim_counters()
    assert len(set(ids)) == 5
    # One receipt per message, carrying DELIVRD; no stat:UNKNOWN before it.
    assert sorted(r["id"] for r in receipts[:5]) == sorted(ids)
    assert {r["stat"] for r in receipts} == {"DELIVRD"}
    assert receipts[5]["id"] == sentinel
    assert counters["bsg"]["accepted_total"] == 6
    assert final_states(journal_path(tmp_path), ids) == dict.fromkeys(ids, "DELIVRD")


# ── 2. The reply is lost, the report comes later ────────────────────────────────────


async def test_lost_reply_is_unknown_until_the_providers_report_resolves_it(
    tmp_path: Path,
) -> None:
    """dsc takes the messages, then the connection is reset before the reply ("reset_after":
    bridges/sim/runner._faulty runs the handler, then aborts). dsc has no idempotency, so
    septet must not resend: each message is "outcome unknown" until dsc's callback (by
    recipient: the id was never learned) says DELIVRD."""
    async with running_daemon(daemon_settings(tmp_path)) as daemon:
        await daemon.sim_config(
            {
                **ALL_DELIVERED,
                "fail_rate": 1.0,
                "faults": {"reset_after": 1.0},
                "dlr_delay_s": 1.0,  # after septet has seen the reset
            },
            provider="dsc",
        )
        await daemon.sim_config(ALL_DELIVERED, provider="routemobile")
        async with connected(daemon) as client:
            await client.send(
                *(
                    {"id": f"lost{n}", "to": f"+25078820000{n}", "text": f"lost reply {n}"}
                    for n in range(3)
                )
            )
            await client.wait_for(lambda events: len(client.of("accepted")) == 3)
            ids = list(accepted_ids(client).values())
            await client.wait_for(each_has_dlr(client, ids))
        counters = await daemon.sim_counters()
    for msg_id in ids:
        assert_status_then_one_dlr(client, msg_id, "DELIVRD")
        kinds = kinds_of(client, msg_id)
        unknown = [e for e in events_of(client, msg_id) if e["event"] == "status"]
        assert unknown, kinds
        assert unknown[0]["state"] == "UNKNOWN"
        assert unknown[0]["final"] is False
        assert "submitted" not in kinds  # the reply that would have said so was lost
        # It may sit at dsc: never resent there, never moved to another bridge.
        assert "failover" not in kinds
        assert "retry" not in kinds
    assert not client.of("failed")
    assert set(counters["dsc"]["faults"]) == {"reset_after"}
    assert sorted(counters["dsc"]["accepted_by_recipient"]) == [f"25078820000{n}" for n in range(3)]
    assert set(counters["dsc"]["accepted_by_recipient"].values()) == {1}  # never sent twice
    assert counters["routemobile"]["accepted_total"] == 0
    assert final_states(journal_path(tmp_path), ids) == dict.fromkeys(ids, "DELIVRD")


async def test_report_that_comes_before_the_lost_reply_is_noticed_still_resolves_it(
    tmp_path: Path,
) -> None:
    """dsc takes the message and holds the reply ("timeout_after") while its report is
    already on the way: the report reaches septet while the request is still in flight,
    and the message becomes "outcome unknown" only when the bridge's timeout ends it.
    The report came first; the client must still get DELIVRD, not wait for a deadline."""
    settings = with_bridge(daemon_settings(tmp_path), "dsc", timeout_s=1.5)
    settings = with_report_timeout(settings, 4.0)  # the wrong answer, if it comes, comes in time
    async with running_daemon(settings) as daemon:
        await daemon.sim_config(
            {
                **ALL_DELIVERED,
                "fail_rate": 1.0,
                "faults": {"timeout_after": 1.0},
                "dlr_delay_s": 0.1,
            },
            provider="dsc",
        )
        async with connected(daemon) as client:
            await client.send({"id": "early", "to": "+250788210001", "text": "report first"})
            await client.wait_for(lambda events: len(client.of("accepted")) == 1)
            [msg_id] = accepted_ids(client).values()
            await client.wait_for(each_has_dlr(client, [msg_id]))
        counters = await daemon.sim_counters()
    assert counters["dsc"]["dlr_ok"] == 1  # septet took the report (while in flight)
    assert counters["dsc"]["accepted_total"] == 1
    assert_status_then_one_dlr(client, msg_id, "DELIVRD")
    assert final_states(journal_path(tmp_path), [msg_id]) == {msg_id: "DELIVRD"}


# ── 3. The report never comes ─────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("provider", "to"),
    [("dsc", "+250788220001"), ("bsg", "+447700900401")],
    ids=["callback", "polled"],
)
async def test_report_that_never_comes_ends_as_one_dlr_unknown_at_the_deadline(
    tmp_path: Path, provider: str, to: str
) -> None:
    settings = with_report_timeout(daemon_settings(tmp_path), 1.0)
    settings = with_bridge(settings, "bsg", poll_interval_s=BSG_POLL_S)
    async with running_daemon(settings) as daemon:
        # The report is due in an hour: as far as this test can tell, never. BSG's polls
        # answer "unknown" all the while.
        await daemon.sim_config({"dlr_delay_s": 3600.0}, provider=provider)
        await daemon.sim_config(ALL_DELIVERED, provider="routemobile")
        async with connected(daemon) as client:
            await client.send({"id": "silent", "to": to, "text": "no report", "route": provider})
            await client.wait_for(lambda events: len(client.of("accepted")) == 1)
            [msg_id] = accepted_ids(client).values()
            await client.wait_for(each_has_dlr(client, [msg_id]), timeout_s=15)
            await send_sentinel(
                client, {"to": "+919812300401", "text": "sentinel", "route": "routemobile"}
            )
    assert_status_then_one_dlr(client, msg_id, "UNKNOWN")
    kinds = kinds_of(client, msg_id)
    assert kinds[:2] == ["accepted", "submitted"], kinds
    [dlr] = dlrs_of(client, msg_id)
    assert dlr["bridge"] == provider
    assert "1 s" in dlr["provider_status"]  # "no final report within 1 s"
    assert final_states(journal_path(tmp_path), [msg_id]) == {msg_id: "UNKNOWN"}


# ── 4. Wrong credentials on a bridge that has a failover ─────────────────────────────

# bridge -> (the credential made wrong, a number its route starts at it, the failover)
WRONG_CREDENTIALS = {
    "dsc": ("api_key", "+2507882300{n:02d}", "routemobile"),
    "routemobile": ("password", "+9198123300{n:02d}", "bsg"),
    "bsg": ("api_key", "+4477009005{n:02d}", "routemobile"),
    "smsclub": ("token", "+3805023000{n:02d}", "bsg"),
}


@pytest.mark.parametrize("bad", list(WRONG_CREDENTIALS))
async def test_wrong_credentials_fail_over_and_readyz_names_the_bridge(
    tmp_path: Path, bad: str
) -> None:
    key, number, failover = WRONG_CREDENTIALS[bad]
    settings = daemon_settings(tmp_path)
    credentials = {**settings.bridges[bad].credentials, key: "wrong"}
    settings = with_bridge(settings, bad, credentials=credentials)
    settings = with_bridge(settings, "bsg", poll_interval_s=BSG_POLL_S)
    recipients = [number.format(n=n) for n in range(5)]
    async with running_daemon(settings) as daemon:
        await daemon.sim_config(ALL_DELIVERED)
        async with connected(daemon) as client:
            await client.send(
                *(
                    {"id": f"c{n}", "to": to, "text": f"creds {n}"}
                    for n, to in enumerate(recipients)
                )
            )
            await client.wait_for(lambda events: len(client.of("accepted")) == 5)
            ids = list(accepted_ids(client).values())
            await client.wait_for(each_has_dlr(client, ids))
            status, ready = await readyz(daemon)
        counters = await daemon.sim_counters()
    assert {e["bridge"] for e in client.of("accepted")} == {bad}
    for msg_id in ids:
        assert_status_then_one_dlr(client, msg_id, "DELIVRD")
        kinds = kinds_of(client, msg_id)
        assert "failover" in kinds, kinds
        [submitted] = [e for e in events_of(client, msg_id) if e["event"] == "submitted"]
        assert submitted["bridge"] == failover
        moves = [e for e in events_of(client, msg_id) if e["event"] == "failover"]
        # Seen once under load: two failover events for one message; say them all if again.
        assert [(e["from_bridge"], e["bridge"]) for e in moves] == [(bad, failover)], events_of(
            client, msg_id
        )
    assert not client.of("failed")
    # Every message went out once, through the failover; none reached the bad bridge,
    # which refused the account (a few requests at most: the circuit opened at the first).
    assert counters[bad]["accepted_total"] == 0
    assert 1 <= sum(counters[bad]["rejects"].values()) <= 5, counters[bad]["rejects"]
    at_failover = {r.lstrip("+"): c for r, c in counters[failover]["accepted_by_recipient"].items()}
    assert at_failover == {to.lstrip("+"): 1 for to in recipients}
    # The daemon is ready (another bridge can send); the bad one is named, with why.
    assert status == 200, ready
    assert ready["bridges"][bad] == "open"
    assert list(ready["unready_bridges"]) == [bad]
    assert "credentials" in ready["unready_bridges"][bad]
    assert final_states(journal_path(tmp_path), ids) == dict.fromkeys(ids, "DELIVRD")


async def test_wrong_credentials_without_failover_wait_and_are_never_rejected(
    tmp_path: Path,
) -> None:
    """A message routed to the bad bridge alone has nowhere to go: it waits for the bridge
    to mend (a `retry`), it is not failed REJECTD for the account's fault."""
    settings = daemon_settings(tmp_path)
    credentials = {**settings.bridges["dsc"].credentials, "api_key": "wrong"}
    settings = with_bridge(settings, "dsc", credentials=credentials)
    async with running_daemon(settings) as daemon, connected(daemon) as client:
        await client.send({"id": "only", "to": "+250788240001", "text": "x", "route": "dsc"})
        await client.wait_for(lambda events: bool(client.of("retry")), timeout_s=10)
        status, ready = await readyz(daemon)
    assert not client.of("failed")
    assert not client.of("dlr")
    assert "dsc" in ready["unready_bridges"]
    assert status == 200
