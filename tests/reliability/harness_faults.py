"""Provider simulators that log every send request, and a daemon wired to them, for fault tests.

The simulators' own counters say what each provider accepted; they do not say which
request carried which recipient, or when. `recorded_simulators` serves the same
simulators (bridges.sim.runner.build_dispatcher) with one wrapper in front that
writes down, for every send request, the recipients it carried, when it
arrived and when its answer left, and how it ended (a normal reply, a 5xx, a 429 and
whether it named a Retry-After, garbage, or a dropped connection). From that log a test
can prove that nothing which may have reached a provider was sent again, and that a
Retry-After was honoured.
"""

from __future__ import annotations

import socket
import time
import warnings
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl

import anyio
import msgspec
from aiohttp import web

from bridges.sim.bsg import CREATE_PATH as BSG_SEND_PATH
from bridges.sim.core import ProviderState, SimulatorConfig
from bridges.sim.dsc import SEND_PATH as DSC_SEND_PATH
from bridges.sim.routemobile import SEND_PATH as ROUTEMOBILE_SEND_PATH
from bridges.sim.runner import SIMULATORS, SimulatorHandle, build_dispatcher
from engine.config import BridgeConfig, RetrySettings, Settings, SimulatorSettings
from tests.engine.daemon_harness import daemon_settings

SEND_PATHS: dict[str, str] = {
    DSC_SEND_PATH: "dsc",
    ROUTEMOBILE_SEND_PATH: "routemobile",
    BSG_SEND_PATH: "bsg",
    "/sms/send": "smsclub",
}

# How a send request ended, as the client saw it. "maybe_taken" marks the endings after
# which the provider may hold the message although septet got no usable answer: the
# connection dropped or hung (the simulator's timeout_* and reset_* faults) or the
# reply was unreadable (garbage).
Ending = Literal["ok", "5xx", "429", "429_retry_after", "dropped", "garbage", "other"]
MAYBE_TAKEN: frozenset[str] = frozenset({"dropped", "garbage"})
ABORTED_STATUS = 499  # bridges.sim.runner._abort: nothing reached the client

_json_decoder = msgspec.json.Decoder()


class SendRecord(msgspec.Struct, frozen=True):
    """One send request as the provider saw it; times are time.time() seconds."""

    provider: str
    arrived: float
    answered: float
    recipients: tuple[str, ...]  # bare digits
    status: int
    ending: Ending
    retry_after_s: float | None


@dataclass
class RecordedSimulators:
    handle: SimulatorHandle
    records: list[SendRecord] = field(default_factory=list)
    in_progress: int = 0  # send requests not yet answered (a hung one ends late)

    @property
    def url(self) -> str:
        return self.handle.url

    def configure(self, provider: str, changes: Mapping[str, Any]) -> None:
        """Change a provider's simulator config at once (in-process: no HTTP round trip)."""
        self.handle.states[provider].update(changes)

    def counters(self, provider: str) -> dict[str, Any]:
        return self.handle.counters(provider)

    async def settled(self, timeout_s: float = 5.0) -> None:
        """Wait (bounded) until no send request is still being answered, so the log is
        complete: a hung request is logged when the simulator notices the client left."""
        with anyio.fail_after(timeout_s):
            while self.in_progress:  # noqa: ASYNC110 - a bounded poll of a plain counter
                await anyio.sleep(0.02)

    def sends_to(self, recipient: str) -> list[SendRecord]:
        """Every send request that carried `recipient` (digits), in order of arrival."""
        return sorted(
            (record for record in self.records if recipient in record.recipients),
            key=lambda record: record.arrived,
        )


def _digits(text: str) -> str:
    return text.strip().lstrip("+")


def recipients_of(provider: str, query: Mapping[str, str], body: bytes) -> tuple[str, ...]:
    """The recipients a send request names, in each provider's own request shape
    (docs/providers.md: dsc form `recipients`, routemobile `destination`, bsg `msisdn` or
    `phones[].msisdn`, smsclub JSON `phone[]`)."""
    if provider == "dsc":
        form = dict(parse_qsl(body.decode("utf-8", "replace")))
        return tuple(_digits(n) for n in form.get("recipients", "").split(",") if n.strip())
    if provider == "routemobile":
        fields = dict(query)
        fields.update(parse_qsl(body.decode("utf-8", "replace")))
        return tuple(_digits(n) for n in fields.get("destination", "").split(",") if n.strip())
    try:
        document = _json_decoder.decode(body)
    except msgspec.DecodeError:
        return ()
    if not isinstance(document, dict):
        return ()
    if provider == "bsg":
        phones = document.get("phones")
        if isinstance(phones, list):
            return tuple(_digits(str(p.get("msisdn", ""))) for p in phones if isinstance(p, dict))
        return (_digits(str(document.get("msisdn", ""))),)
    phones = document.get("phone")
    return tuple(_digits(str(n)) for n in phones) if isinstance(phones, list) else ()


def _ending(response: web.StreamResponse) -> tuple[Ending, float | None]:
    status = response.status
    if status == ABORTED_STATUS:
        return "dropped", None
    if status == 429:
        retry_after = response.headers.get("Retry-After")
        if retry_after is not None:
            return "429_retry_after", float(retry_after)
        return "429", None
    if status >= 500:
        return "5xx", None
    if response.content_type == "text/html":
        return "garbage", None  # bridges.sim.runner._faulty "garbage": an HTML error page
    if status < 300:
        return "ok", None
    return "other", None


@asynccontextmanager
async def recorded_simulators(
    configs: Mapping[str, SimulatorConfig],
) -> AsyncIterator[RecordedSimulators]:
    """Serve the simulators named in `configs` on a free 127.0.0.1 port, logging sends.

    No delivery-report sender runs: the fault tests send with `"dlr": false`, so every
    message is final once submitted or failed.
    """
    simulators = {}
    for name, config in configs.items():
        state = ProviderState(name, msgspec.structs.replace(config))
        simulators[name] = SIMULATORS[name](state)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    handle = SimulatorHandle("127.0.0.1", listener.getsockname()[1], simulators)
    recorded = RecordedSimulators(handle)

    dispatcher = build_dispatcher(handle)

    async def record_sends(request: web.BaseRequest) -> web.StreamResponse:
        provider = SEND_PATHS.get(request.path)
        if provider is None:
            return await dispatcher(request)
        arrived = time.time()
        recorded.in_progress += 1
        try:
            body = await request.read()
            # Put it back for the simulator, which may read the stream's buffer directly
            # (bridges.sim.core.read_body) rather than aiohttp's cached copy.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                request.content.unread_data(body)
            response = await dispatcher(request)
        finally:
            recorded.in_progress -= 1
        ending, retry_after = _ending(response)
        recorded.records.append(
            SendRecord(
                provider=provider,
                arrived=arrived,
                answered=time.time(),
                recipients=recipients_of(provider, request.query, body),
                status=response.status,
                ending=ending,
                retry_after_s=retry_after,
            )
        )
        return response

    server = web.Server(record_sends, access_log=None)
    runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=0.5)
    await runner.setup()
    try:
        await web.SockSite(runner, listener).start()
        yield recorded
    finally:
        await runner.cleanup()
        listener.close()


def fault_daemon_settings(
    tmp_path: Path,
    sim_url: str,
    *,
    bridges: Sequence[str] = ("dsc", "routemobile", "bsg", "smsclub"),
    max_recipients: int = 4,
    timeout_s: float = 0.5,
    **bridge_changes: Any,
) -> Settings:
    """The test daemon (tests.engine.daemon_harness) sending to `sim_url`: short provider
    timeouts, so a hung request ends quickly, small batches, so a fault mix reaches many
    requests, and quick retries (base 50 ms, at most 0.4 s)."""
    base = daemon_settings(tmp_path)
    configured: dict[str, BridgeConfig] = {}
    for name in bridges:
        configured[name] = msgspec.structs.replace(
            base.bridges[name],
            base_url=sim_url,
            timeout_s=timeout_s,
            connect_timeout_s=timeout_s,
            max_recipients=max_recipients,
            pool=8,
            **bridge_changes,
        )
    return msgspec.structs.replace(
        base,
        bridges=configured,
        simulators=SimulatorSettings(enabled=False),
        retry=RetrySettings(base_s=0.05, max_delay_s=0.4, jitter=0.1),
    )
