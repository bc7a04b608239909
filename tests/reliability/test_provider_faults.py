"""Provider faults end to end: every simulator's fault mix against a running daemon.

Each message goes to its own recipient with `"dlr": false`, so it is final once it is
submitted or failed, and the simulators' per-recipient counters say how often a
provider took it. The send-request log (tests.reliability.harness_faults) says which
request carried which recipient, when, and how it ended, so the resend rules of
docs/providers.md can be checked request by request:

- dsc and routemobile have no idempotency: once a request may have reached them (the
  connection dropped or hung, or the reply was garbage), that recipient is never sent
  again, to them or to a failover bridge; it fails "outcome unknown".
- bsg resends with the same reference (error 23 = already taken); smsclub resends only
  inside its 2-minute duplicate window (453 on a retry = already taken). Either way a
  provider takes each message at most once.
- a 429 with Retry-After is not retried before that time (bsg, smsclub); dsc's 429 is
  final (its testing-mode daily limit); routemobile's 429 (no Retry-After) is retried.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from bridges.sim.core import FAULT_KINDS, SimulatorConfig
from tests.engine.daemon_harness import Client, Daemon, connected, running_daemon
from tests.reliability.harness_faults import (
    MAYBE_TAKEN,
    fault_daemon_settings,
    recorded_simulators,
)

pytestmark = pytest.mark.anyio

PROVIDERS = ("dsc", "routemobile", "bsg", "smsclub")
NO_IDEMPOTENCY = frozenset({"dsc", "routemobile"})
# A number prefix routed to each provider (engine.routing.default_routes), 12-13 digits.
NUMBER_PREFIX = {
    "dsc": "+25078810",
    "routemobile": "+9198123",
    "bsg": "+4477009",
    "smsclub": "+38050100",
}
MESSAGES = 200  # one per request: ~60 faults, so every kind is dealt
TEXTS = ("Your code is 1234", "Привіт, це тест", "Reminder: meeting at 10", "Ping", "Ok")
EVERY_FAULT = dict.fromkeys(sorted(FAULT_KINDS), 1.0)
RETRY_AFTER_S = 1
# The retry policy's own clock and the log's are the same time.time(); a few ms of
# rounding between "answered" and the daemon reading its clock are all this allows.
CLOCK_SLACK_S = 0.02
MAX_ATTEMPTS = 8  # engine.retry.RetryPolicy.max_attempts


def fault_config(seed: int, **changes: Any) -> SimulatorConfig:
    """Every fault kind at once, 30% of the send requests hit. A slow reply (100 ms)
    stays under septet's 0.5 s timeout here; a hang outlasts it. SMS Club's own 9
    requests/s limit is off: its 429 comes from the fault mix, as for the others."""
    settings: dict[str, Any] = {
        "fail_rate": 0.3,
        "smsclub_rate_limit": None,
        "faults": EVERY_FAULT,
        "slow_ms": 100.0,
        "hang_s": 5.0,
        "retry_after_s": RETRY_AFTER_S,
        "seed": seed,
        **changes,
    }
    return SimulatorConfig(**settings)


def number(provider: str, index: int) -> str:
    return f"{NUMBER_PREFIX[provider]}{index:04d}"


def finals_by_msg_id(client: Client) -> dict[str, list[dict[str, Any]]]:
    finals: dict[str, list[dict[str, Any]]] = {}
    for event in client.events:
        if event["event"] in ("submitted", "failed"):
            finals.setdefault(event["msg_id"], []).append(event)
    return finals


def all_final(count: int) -> Any:
    def check(events: list[dict[str, Any]]) -> bool:
        accepted = {e["msg_id"] for e in events if e["event"] == "accepted"}
        final = {e["msg_id"] for e in events if e["event"] in ("submitted", "failed")}
        return len(accepted) == count and final >= accepted

    return check


def failure_reason(event: dict[str, Any]) -> str:
    """A failed event's reason, in the categories the totals are kept by."""
    error: str = event["error"]
    if "outcome unknown" in error:
        return "outcome unknown"
    if "attempts" in error:
        return "attempts used up"
    return f"rejected {event['code']}"


async def send_all(daemon: Daemon, lines: list[dict[str, Any]], timeout_s: float) -> Client:
    async with connected(daemon) as client:
        await client.send(*lines)
        await client.wait_for(all_final(len(lines)), timeout_s=timeout_s)
    return client


async def metric_value(daemon: Daemon, name: str, labels: dict[str, str]) -> float | None:
    """One sample of the daemon's /metrics (engine.metrics), or None if absent."""
    async with httpx.AsyncClient() as http:
        reply = await http.get(f"http://127.0.0.1:{daemon.http_port}/metrics")
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in reply.text.splitlines():
        found = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if found and ",".join(sorted(found.group(1).split(","))) == wanted:
            return float(found.group(2))
    return None


async def wait_for_circuit(daemon: Daemon, bridge: str, state: str, timeout_s: float) -> None:
    with anyio.fail_after(timeout_s):
        while (  # noqa: ASYNC110 - a bounded poll of the daemon's /metrics
            await metric_value(daemon, "septet_circuit_state", {"bridge": bridge, "state": state})
            != 1.0
        ):
            await anyio.sleep(0.05)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_fault_mix_every_message_accounted_for_and_never_sent_twice(
    tmp_path: Path, provider: str
) -> None:
    count = MESSAGES
    seed = 1000 + PROVIDERS.index(provider)
    async with recorded_simulators({provider: fault_config(seed)}) as sims:
        settings = fault_daemon_settings(
            tmp_path,
            sims.url,
            bridges=(provider,),
            max_recipients=1,
            requests_per_s=1000.0,
            requests_burst=1000.0,
        )
        async with running_daemon(settings) as daemon:
            lines = [
                {
                    "id": f"m{n}",
                    "to": number(provider, n),
                    "text": TEXTS[n % len(TEXTS)],
                    "route": provider,  # no failover: every message stays on this provider
                    "dlr": False,
                }
                for n in range(count)
            ]
            client = await send_all(daemon, lines, timeout_s=90)
        await sims.settled()
        counters = sims.counters(provider)

    # ── the totals add up ───────────────────────────────────────────────────────
    accepted = client.of("accepted")
    assert len(accepted) == count
    assert not client.of("rejected")
    to_of = {e["msg_id"]: e["to"].lstrip("+") for e in accepted}
    finals = finals_by_msg_id(client)
    assert set(finals) == set(to_of)
    assert all(len(events) == 1 for events in finals.values()), "a message ended twice"
    submitted = {to_of[e["msg_id"]] for e in client.of("submitted")}
    failed = {to_of[e["msg_id"]]: failure_reason(e) for e in client.of("failed")}
    by_reason = Counter(failed.values())
    assert len(submitted) + sum(by_reason.values()) == count, by_reason

    # Every fault kind the simulators offer was dealt.
    assert set(counters["faults"]) == FAULT_KINDS, counters["faults"]

    # ── a provider took each message at most once; every submit was really taken ──
    taken = counters["accepted_by_recipient"]
    assert max(taken.values()) == 1
    assert submitted <= set(taken)
    if provider == "bsg":
        assert max(counters["accepted_by_reference"].values()) == 1
    # Taken but not reported submitted: only where septet could not know.
    assert all(failed[to] == "outcome unknown" for to in set(taken) - submitted)

    sends = {to: sims.sends_to(to) for to in to_of.values()}
    for to, requests in sends.items():
        assert requests, f"{to} was never sent"
        endings = [r.ending for r in requests]
        if provider in NO_IDEMPOTENCY:
            # Nothing that may have reached the provider is sent again.
            if any(e in MAYBE_TAKEN for e in endings):
                assert endings[-1] in MAYBE_TAKEN, (to, endings)
                assert failed.get(to) == "outcome unknown", (to, endings)
            else:
                assert failed.get(to) != "outcome unknown", (to, endings)
        else:
            # A lost reply is resent (same reference / inside the window), so only
            # attempts running out ends a message as failed.
            if to in failed:
                assert len(requests) >= MAX_ATTEMPTS, (to, endings, failed[to])
        if provider == "dsc" and "429" in endings:
            # dsc's 429 is its testing-mode daily limit: final, never retried.
            assert endings[-1] == "429", (to, endings)
            assert failed[to] == "rejected 429"
        for earlier, later in itertools.pairwise(requests):
            if earlier.ending == "429_retry_after":
                # The provider's Retry-After is the floor of the retry delay.
                assert earlier.retry_after_s is not None
                waited = later.arrived - earlier.answered
                assert waited >= earlier.retry_after_s - CLOCK_SLACK_S, (to, waited)
            if earlier.ending in ("429", "5xx") and provider != "dsc":
                assert later.arrived >= earlier.answered  # retried, after the answer
    if provider in ("bsg", "smsclub"):
        # At least one Retry-After was exercised (the fault mix deals 429s).
        assert any(r.ending == "429_retry_after" for r in sims.records)
        assert not by_reason.get("outcome unknown", 0) or all(
            len(sends[to]) >= MAX_ATTEMPTS for to, why in failed.items()
        )


async def test_circuit_opens_under_a_5xx_burst_and_closes_after_recovery(tmp_path: Path) -> None:
    count = 30
    open_s = 2.0  # `[bridges.dsc] circuit_open_s`: the default 10 s only lengthens the wait
    async with recorded_simulators(
        {"dsc": SimulatorConfig(fail_rate=1.0, faults={"5xx": 1.0})}
    ) as sims:
        settings = fault_daemon_settings(
            tmp_path, sims.url, bridges=("dsc",), circuit_open_s=open_s
        )
        async with running_daemon(settings) as daemon, connected(daemon) as client:
            await wait_for_circuit(daemon, "dsc", "closed", timeout_s=5)
            await client.send(
                *(
                    {"to": number("dsc", n), "text": "burst", "route": "dsc", "dlr": False}
                    for n in range(count)
                )
            )
            # engine.circuit: 5 failures in a row open it (CircuitBreaker defaults).
            await wait_for_circuit(daemon, "dsc", "open", timeout_s=10)
            sims.configure("dsc", {"fail_rate": 0.0})  # the provider recovers
            # After open_s one trial goes through, succeeds, and closes it.
            await wait_for_circuit(daemon, "dsc", "closed", timeout_s=30)
            await client.wait_for(all_final(count), timeout_s=30)
        await sims.settled()
    arrivals = sorted(r.arrived for r in sims.records)
    # While open, nothing was sent: the longest pause between two requests is the open
    # time (a lower bound the breaker enforces, not a measured speed).
    assert max(b - a for a, b in itertools.pairwise(arrivals)) >= 0.9 * open_s
    assert len(client.of("submitted")) == count
    assert not client.of("failed")
    taken = sims.counters("dsc")["accepted_by_recipient"]
    assert sorted(taken) == sorted(number("dsc", n).lstrip("+") for n in range(count))
    assert set(taken.values()) == {1}


async def test_failover_moves_only_what_never_reached_the_provider(tmp_path: Path) -> None:
    """250 routes to dsc, then routemobile. A 5xx (nothing taken) fails over after the
    bridge's attempts; a dropped request (maybe taken) never does."""
    count = 40
    configs = {
        "dsc": SimulatorConfig(
            fail_rate=0.6, faults={"5xx": 3.0, "reset_after": 1.0}, seed=5, hang_s=5.0
        ),
        "routemobile": SimulatorConfig(),
    }
    async with recorded_simulators(configs) as sims:
        settings = fault_daemon_settings(tmp_path, sims.url, bridges=("dsc", "routemobile"))
        async with running_daemon(settings) as daemon:
            lines = [
                {"to": number("dsc", n), "text": f"failover {n % 3}", "dlr": False}
                for n in range(count)
            ]
            client = await send_all(daemon, lines, timeout_s=60)
        await sims.settled()
    to_of = {e["msg_id"]: e["to"].lstrip("+") for e in client.of("accepted")}
    bridge_of = {to_of[e["msg_id"]]: e["bridge"] for e in client.of("submitted")}
    failed = {to_of[e["msg_id"]]: failure_reason(e) for e in client.of("failed")}
    assert len(bridge_of) + len(failed) == count
    assert "routemobile" in bridge_of.values()  # some did fail over
    for to in to_of.values():
        endings = [(r.provider, r.ending) for r in sims.sends_to(to)]
        providers = [provider for provider, _ in endings]
        if ("dsc", "dropped") in endings:
            assert "routemobile" not in providers, endings
            assert failed[to] == "outcome unknown"
        elif "routemobile" in providers:
            # Failed over only after 5xx answers on dsc (attempts_per_bridge of them).
            dsc_endings = [e for p, e in endings if p == "dsc"]
            assert dsc_endings == ["5xx"] * len(dsc_endings), endings
            assert bridge_of[to] == "routemobile"
    taken: dict[str, int] = {}
    for provider in ("dsc", "routemobile"):
        for to, times in sims.counters(provider)["accepted_by_recipient"].items():
            taken[to] = taken.get(to, 0) + times
    assert max(taken.values()) == 1


async def test_open_circuit_fails_over_at_once(tmp_path: Path) -> None:
    """A primary that answers only 5xx opens its circuit; messages whose route has a next
    bridge go there at once rather than waiting out the open time (10 s, then 20, 40...:
    one trial request per half-open), which would hold them for minutes."""
    count = 40
    configs = {
        "dsc": SimulatorConfig(fail_rate=1.0, faults={"5xx": 1.0}),
        "routemobile": SimulatorConfig(),
    }
    async with recorded_simulators(configs) as sims:
        settings = fault_daemon_settings(tmp_path, sims.url, bridges=("dsc", "routemobile"))
        async with running_daemon(settings) as daemon, connected(daemon) as client:
            await client.send(
                *(
                    {"to": number("dsc", n), "text": f"down {n % 3}", "dlr": False}
                    for n in range(count)
                )
            )
            # Well inside the first open time (10 s): only failing over finishes by then.
            await client.wait_for(all_final(count), timeout_s=8)
            assert (
                await metric_value(
                    daemon, "septet_circuit_state", {"bridge": "dsc", "state": "open"}
                )
                == 1.0
            )
    assert {e["bridge"] for e in client.of("submitted")} == {"routemobile"}
    assert len(client.of("submitted")) == count
    assert sims.counters("dsc")["accepted_total"] == 0
    assert set(sims.counters("routemobile")["accepted_by_recipient"].values()) == {1}
