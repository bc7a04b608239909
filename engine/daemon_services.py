"""Builds and starts the daemon's services on the shared Runtime: listeners, bridges,
recovery, the cluster leader's duties, dispatch and the front doors (engine.daemon runs
them in order)."""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.abc
import msgspec
import structlog

from bridges.base import BridgeDriver
from bridges.registry import build_driver
from engine import lifecycle
from engine.accounts import Accounts
from engine.admin import Admin
from engine.admin_api import admin_routes, write_run_token
from engine.admission import takes_message
from engine.bridge_limits import BridgeGate, SharedLimits, gate_for
from engine.circuit import CircuitBreaker
from engine.config import (
    BridgeConfig,
    Settings,
    bind_errors,
    bridge_base_url,
    driver_settings,
    price_tables_for,
    routes_for,
    split_host_port,
)
from engine.credentials import (
    CredentialCheck,
    CredentialsRefused,
    NotCheckable,
    check_credentials,
    describe,
)
from engine.dispatch import BridgeDispatcher
from engine.dlr import ReceiptHandler, poll_policy, serve_poller, serve_shared_orphans
from engine.feed import serve_retention
from engine.http_io import BridgeClient
from engine.http_routes import App
from engine.ingress.accept import Acceptor
from engine.ingress.events import DiscardSink, EventRouter
from engine.ingress.http_api import HttpApi, build_api_app, serve_api
from engine.ingress.ndjson import LineHandler
from engine.ingress.outbox import KEPT_POLL_S, KeptWake, Outbox, serve_kept_for_live, serve_outbox
from engine.ingress.prepare import LinePreparer
from engine.ingress.sendsms import sendsms_route
from engine.ingress.sockets import serve_clients
from engine.journal import (
    Change,
    Journal,
    JournalBackend,
    JournalError,
    JournalReader,
    journal_backend,
    max_size_bytes,
    open_reader,
)
from engine.lifecycle import Charge
from engine.listener import build_app, build_metrics_app, metrics_route, serve_listener
from engine.membership import Membership
from engine.metrics import Metrics, Operations
from engine.models import Message
from engine.observe import BacklogCounter
from engine.pricing import NoPriceError, message_cost
from engine.provider_accounts import balance_failed, record_balance, serve_balance
from engine.recovery import recover_claims, recover_inflight, serve_report_deadlines
from engine.retention import SECONDS_PER_DAY, serve_pruning
from engine.retry import RetryPolicy
from engine.routing import Router
from engine.scheduler import BridgeQueue, Scheduler
from engine.smpp.server import serve_smpp
from engine.smpp.storage import SmppStore
from engine.smpp.store import open_store, store_path_for
from engine.webhooks.settings import AccountWebhooks
from engine.webhooks.worker import WebhookWorker

# The daemon's logger: these lines are the daemon's, wherever the code that writes them lives.
log = structlog.get_logger("septet.daemon")


# A start-up step on a shared journal: how often it is tried, and the pause between tries.
START_ATTEMPTS = 5


START_RETRY_S = 1.0


T = TypeVar("T")


@dataclass
class Runtime:
    """What the daemon's parts share once the journal is open and this node has joined.
    Each part starts its tasks in `tg`; the per-bridge maps are filled as the bridges are
    built, and /readyz and /metrics may read them before."""

    settings: Settings
    stack: AsyncExitStack
    tg: anyio.abc.TaskGroup
    journal: Journal
    metrics: Metrics
    accounts: Accounts
    membership: Membership
    node: str
    events: EventRouter
    outbox: Outbox
    shared_limits: SharedLimits | None
    receipts: ReceiptHandler
    # On a shared journal another node's work may collide with a start-up step (a
    # deadlock the database broke by failing one side): the step is tried again.
    attempts: int
    # Every listener by what it serves, for the start line (each part adds its own).
    listeners: dict[str, str] = field(default_factory=dict)
    drivers: dict[str, BridgeDriver] = field(default_factory=dict)
    clients: dict[str, BridgeClient] = field(default_factory=dict)
    queues: dict[str, BridgeQueue] = field(default_factory=dict)
    circuits: dict[str, CircuitBreaker] = field(default_factory=dict)
    # One gate per bridge for its sends, status polls and balance asks: the provider
    # counts them all (shared by the cluster's nodes with [cluster] redis).
    gates: dict[str, BridgeGate] = field(default_factory=dict)
    dispatchers: dict[str, BridgeDispatcher] = field(default_factory=dict)

    @property
    def operations(self) -> Operations:
        return self.metrics.operations

    @property
    def report_timeout_s(self) -> float:
        return self.settings.reports.timeout_s

    def start_forever(self, factory: Callable[[], Awaitable[None]], what: str) -> None:
        """Start a background loop that is restarted when it fails (`run_forever`)."""
        self.tg.start_soon(run_forever, factory, what)

    def start_leading(self, factory: Callable[[], Awaitable[None]], what: str) -> None:
        """Start what must run once per cluster: on its leader only (engine.membership);
        with one node, that node."""
        leading = self.membership.while_leading
        self.tg.start_soon(run_forever, lambda: leading(factory), what)


@dataclass(frozen=True)
class Failover:
    """How a message is moved on (failover, recovery after a crash or a takeover): the
    retry policy, its price on another bridge, and whether that bridge takes it."""

    policy: RetryPolicy
    price: Callable[[Message, str], tuple[float, str]]
    takes: Callable[[Message, str, float], bool]


async def open_reader_for(rt: Runtime) -> JournalReader:
    """The journal's files and size limit for the gauges, and a read-only connection: the
    backlog's index walks run on it, not between the writer's commits; the HTTP API reads
    through the same one."""
    operations = rt.operations
    if journal_backend(rt.settings.journal.backend) is JournalBackend.SQLITE:
        journal_path = Path(rt.settings.journal.path)
        wal = journal_path.with_name(journal_path.name + "-wal")
        operations.journal_paths = (journal_path, wal)
    operations.journal_max_bytes = max_size_bytes(rt.settings.journal)
    return await rt.stack.enter_async_context(open_reader(rt.settings.journal))


async def start_http(
    rt: Runtime,
    reader: JournalReader,
    readiness: Callable[[], Awaitable[dict[str, object]]],
    admins: list[Admin],
) -> tuple[int, int | None, str | None]:
    """The callbacks' listener, and /metrics with the admin API on it unless they have a
    listener of their own: (its port, the metrics port, the public URL callbacks name)."""
    settings = rt.settings
    backlog = BacklogCounter(reader, rt.operations)

    async def exposition() -> bytes:
        await backlog.refresh()
        return rt.metrics.exposition()

    admin_token = settings.http.admin_token or write_run_token(Path(settings.journal.path))
    admin = admin_routes(lambda: admins[0] if admins else None, admin_token)
    metrics_listen = settings.http.metrics_listen
    app = build_app(
        rt.drivers,
        rt.receipts.handle,  # the runtime's one ReceiptHandler, made before any listener
        readiness,
        extra_routes=[] if metrics_listen else [metrics_route(exposition), *admin],
        body_timeout_s=settings.http.body_timeout_s,
        on_rejected=rt.operations.callback_rejected,
    )
    listen_port = 0
    public_url = settings.http.public_url
    if settings.http.listen:
        host, listen_port = await _start_listener(rt, app, "http.listen", settings.http.listen)
        rt.listeners["http"] = f"{host}:{listen_port}"
        public_url = public_url or f"http://{host}:{listen_port}"
    metrics_port: int | None = None
    if metrics_listen:
        metrics_app = build_metrics_app(exposition, readiness, admin)
        host, metrics_port = await _start_listener(
            rt, metrics_app, "http.metrics_listen", metrics_listen
        )
        rt.listeners["metrics"] = f"{host}:{metrics_port}"
    return listen_port, metrics_port, public_url


async def _start_listener(rt: Runtime, app: App, key: str, address: str) -> tuple[str, int]:
    """Serve `app` on `address` (config key `key`): its host and bound port."""
    host, port = split_host_port(address, key)
    with bind_errors(key, address):
        bound: int = await rt.tg.start(
            lambda task_status: serve_listener(
                app,
                host,
                port,
                idle_timeout_s=rt.settings.http.idle_timeout_s,
                task_status=task_status,
            )
        )
    return host, bound


async def build_bridges(rt: Runtime, sim_url: str | None, public_url: str | None) -> None:
    """Each bridge's driver, pooled client, queue, circuit and rate-limit gate."""
    settings = rt.settings
    for name, bridge in settings.bridges.items():
        base_url = bridge_base_url(bridge, settings.simulators.enabled) or sim_url or ""
        rt.drivers[name] = build_driver(
            bridge.driver, driver_settings(name, bridge, settings, base_url, public_url)
        )
        rt.clients[name] = await rt.stack.enter_async_context(
            BridgeClient(
                base_url,
                max_connections=bridge.pool,
                connect_timeout_s=bridge.connect_timeout_s,
                timeout_s=bridge.timeout_s,
            )
        )
        capabilities = rt.drivers[name].capabilities
        rt.queues[name] = BridgeQueue.for_capabilities(name, bridge.queue_size, capabilities)
    for name, bridge in settings.bridges.items():
        rt.circuits[name] = CircuitBreaker(open_s=bridge.circuit_open_s)
        rt.gates[name] = gate_for(name, bridge, rt.shared_limits)


def failover_rules(rt: Runtime) -> Failover:
    """The retry policy and prices of the settings; failover only to a bridge whose limits
    the message keeps (engine.admission)."""
    retry = rt.settings.retry
    return Failover(
        policy=RetryPolicy(
            base_s=retry.base_s,
            factor=retry.factor,
            max_delay_s=retry.max_delay_s,
            jitter=retry.jitter,
        ),
        price=_pricer(rt.settings),
        takes=functools.partial(takes_message, {n: d.limits for n, d in rt.drivers.items()}),
    )


def start_balance_checks(rt: Runtime) -> None:
    """Where a provider has a cheap authenticated call (BSG, SMS Club balance), the
    credentials are checked now, in the background: one line each, and a refusal opens
    the bridge's circuit before the first message meets it. The balance is asked again
    every `balance_interval_s`."""
    for name, bridge in rt.settings.bridges.items():
        driver, client = rt.drivers[name], rt.clients[name]
        rt.tg.start_soon(_check_credentials, name, driver, client, rt.circuits[name], rt.operations)
        # A driver that fails on an odd balance reply is logged and asked again later,
        # never the daemon's end.
        rt.start_forever(
            functools.partial(
                serve_balance,
                name,
                driver,
                client,
                rt.operations,
                interval_s=bridge.balance_interval_s,
                on_check=_log_balance_failure,
                limiter=rt.gates[name],
            ),
            f"balance:{name}",
        )


async def recover(rt: Runtime, failover: Failover) -> None:
    """Recover the messages a crash left in flight, then take over the nodes that died
    while none was running, before anything is sent; watch for more deaths from then on."""
    journal, drivers, events = rt.journal, rt.drivers, rt.events
    await attempted(
        functools.partial(
            recover_inflight,
            journal,
            drivers,
            events,
            policy=failover.policy,
            price=failover.price,
            takes=failover.takes,
            report_timeout_s=rt.report_timeout_s,
        ),
        rt.attempts,
    )
    await attempted(rt.receipts.match_recovered_unconfirmed, rt.attempts)

    async def recover_taken(claims: Sequence[Message]) -> dict[str, int]:
        # A dead node's claims, under the same rules as this node's own after a crash.
        tally = await recover_claims(
            journal,
            claims,
            drivers,
            events,
            policy=failover.policy,
            price=failover.price,
            takes=failover.takes,
            report_timeout_s=rt.report_timeout_s,
            now=time.time(),
        )
        for state, count in tally.items():
            rt.operations.claims_taken_over.labels(state).inc(count)
        if "unconfirmed" in tally:
            await rt.receipts.match_recovered_unconfirmed()
        return tally

    await attempted(functools.partial(rt.membership.take_over, recover_taken), rt.attempts)
    rt.start_forever(functools.partial(rt.membership.serve_takeover, recover_taken), "takeover")


def start_leader_services(rt: Runtime) -> None:
    """What must run once per cluster, on its leader only (engine.membership): event and
    journal retention, webhooks, report deadlines, and on a shared journal the reports
    kept before their submit."""
    settings, journal, operations = rt.settings, rt.journal, rt.operations
    rt.start_leading(lambda: serve_retention(journal, settings.events.keep_s), "event_retention")
    if settings.journal.keep_days > 0:
        rt.start_leading(
            lambda: serve_pruning(
                journal,
                settings.journal.keep_days * SECONDS_PER_DAY,
                on_pruned=operations.journal_pruned_rows,
            ),
            "journal_retention",
        )
    webhooks = WebhookWorker(
        journal,
        settings.webhooks,
        functools.partial(_webhook_account, settings, rt.accounts),
        metrics=rt.metrics,
    )
    membership = rt.membership
    # Only the leader delivers (below): another node's hand-offs would only pile up.
    journal.on_deliveries = lambda added: webhooks.wake(added) if membership.leading else None
    rt.start_leading(webhooks.serve, "webhooks")
    rt.start_leading(
        lambda: serve_report_deadlines(
            journal,
            rt.events,
            report_timeout_s=rt.report_timeout_s,
            on_final=rt.metrics.receipt,
            sweep_s=rt.settings.reports.sweep_s,
        ),
        "report_deadlines",
    )
    if journal.shared:
        # A report another node kept before this one journaled its submit.
        rt.start_leading(
            lambda: serve_shared_orphans(rt.receipts, interval_s=settings.cluster.heartbeat_s),
            "shared_orphans",
        )


def build_dispatchers(rt: Runtime, scheduler: Scheduler, failover: Failover) -> None:
    """One dispatcher per bridge, and a status poller (leader only) for a bridge whose
    provider is asked for its delivery reports."""
    membership = rt.membership
    for name, bridge in rt.settings.bridges.items():
        driver = rt.drivers[name]
        rt.dispatchers[name] = BridgeDispatcher(
            name=name,
            driver=driver,
            client=rt.clients[name],
            queue=rt.queues[name],
            scheduler=scheduler,
            journal=rt.journal,
            events=rt.events,
            hooks=_SubmitHooks(rt.metrics, rt.receipts, rt.tg, failover.price),
            policy=failover.policy,
            # One gate per bridge for its sends and its status polls: the provider counts both.
            limits=rt.gates[name],
            circuit=rt.circuits[name],
            pool=bridge.pool,
            linger_s=bridge.linger_ms / 1000,
            max_recipients=bridge.max_recipients or driver.capabilities.max_recipients,
            attempts_per_bridge=bridge.attempts_per_bridge,
            price=failover.price,
            takes=failover.takes,
            report_timeout_s=rt.report_timeout_s,
            leased=membership.holds_lease,
        )
        if driver.capabilities.delivery == "poll":
            _start_poller(rt, name, bridge)


def _start_poller(rt: Runtime, name: str, bridge: BridgeConfig) -> None:
    """Bridge `name`'s status poller, on the leader only, through the bridge's gate."""
    driver = rt.drivers[name]
    polls = poll_policy(
        name,
        driver.capabilities,
        interval_s=bridge.poll_interval_s,
        max_interval_s=bridge.poll_max_interval_s,
        floor_s=bridge.poll_floor_s,
    )
    rt.start_leading(
        lambda: serve_poller(
            bridge=name,
            driver=driver,
            client=rt.clients[name],
            journal=rt.journal,
            handler=rt.receipts,
            limiter=rt.gates[name],
            policy=polls,
            on_request=rt.metrics.status_request_hook(name),
        ),
        f"poller:{name}",
    )


def start_dispatch(rt: Runtime, scheduler: Scheduler) -> anyio.CancelScope:
    """The scheduler's feeder, the dispatchers (in a scope of their own, cancelled after
    the drain), the outbox's spill to the journal, and on a shared journal the events
    other nodes made for this node's clients. Returns the dispatchers' scope."""
    tg, journal = rt.tg, rt.journal
    # A journal that cannot be read (a database gone for a while) pauses the feeder, it
    # does not end the daemon.
    rt.start_forever(scheduler.serve_feeder, "feeder")
    dispatch_scope = anyio.CancelScope()

    async def run_dispatchers() -> None:
        with dispatch_scope:
            async with anyio.create_task_group() as dtg:
                for dispatcher in rt.dispatchers.values():
                    dtg.start_soon(dispatcher.serve)

    tg.start_soon(run_dispatchers)
    tg.start_soon(serve_outbox, rt.outbox, journal)
    if journal.shared:
        # A client's events made on another node reach it here (docs/cluster.md).
        kept_wake = KeptWake()
        journal.on_kept_events = kept_wake.set
        rt.start_forever(journal.serve_notifications, "notifications")
        rt.start_forever(
            lambda: serve_kept_for_live(rt.events, journal, kept_wake, poll_s=KEPT_POLL_S),
            "kept_for_live",
        )
    return dispatch_scope


def build_acceptor(rt: Runtime, scheduler: Scheduler) -> Acceptor:
    """What every front door hands its lines to: checked, routed, priced, journaled."""
    settings = rt.settings
    preparer = LinePreparer(
        router=Router(*routes_for(settings), settings.bridges.keys()),
        prices=price_tables_for(settings),
        default_senders={n: b.default_sender for n, b in settings.bridges.items()},
        limits={name: driver.limits for name, driver in rt.drivers.items()},
        max_text_chars=settings.ingress.max_text_chars,
        max_recipients=settings.ingress.max_recipients_per_line,
        default_region=settings.ingress.default_region,
        webhooks=settings.webhooks,
    )
    return Acceptor(
        preparer,
        rt.journal,
        scheduler,
        on_lines=rt.metrics.ingress,
        # SMPP submissions reserve queue room before their commit (engine.ingress.accept).
        room=scheduler,
        shared_quota=rt.journal.shared,
    )


async def start_ndjson(
    rt: Runtime,
    acceptor: Acceptor,
    use_stdin: bool,
    stdin: Callable[[], Awaitable[bytes]] | None,
    stdout: Callable[[bytes], Awaitable[None]] | None,
) -> tuple[anyio.CancelScope, anyio.Event, int | None]:
    """The NDJSON front doors (stdin, TCP, Unix socket): their scope, the event set when
    input ends, and the TCP port."""
    settings = rt.settings
    handler = LineHandler(
        acceptor, max_line_bytes=settings.ingress.max_line_bytes, on_lines=rt.metrics.ingress
    )
    ingress_scope = anyio.CancelScope()
    input_done = anyio.Event()

    async def run_ingress(*, task_status: anyio.abc.TaskStatus[int | None]) -> None:
        with ingress_scope:
            await serve_clients(
                settings.ingress,
                handler,
                rt.events,
                rt.outbox,
                rt.journal,
                rt.accounts,
                input_done=input_done,
                use_stdin=use_stdin,
                stdin=stdin,
                stdout=stdout,
                task_status=task_status,
            )

    tcp_port: int | None = await rt.tg.start(run_ingress)
    rt.listeners.update(_ingress_listeners(settings, tcp_port, use_stdin))
    return ingress_scope, input_done, tcp_port


def open_smpp_store(rt: Runtime) -> contextlib.AbstractAsyncContextManager[SmppStore]:
    """The SMPP server's store: a SQLite file beside the journal's path, or with the
    PostgreSQL journal its database, shared by the nodes (engine.smpp.storage)."""
    journal = rt.settings.journal
    if journal_backend(journal.backend) is JournalBackend.POSTGRESQL:
        # PostgreSQL's client is an extra (septet[postgresql]): imported only when used.
        from engine.smpp.store_postgres import open_postgres_store

        # The journal opened on this dsn already (it is set).
        dsn = journal.dsn or ""
        return open_postgres_store(dsn, rt.node, lease_s=rt.settings.cluster.lease_s)
    return open_store(store_path_for(journal.path), synchronous=journal.synchronous)


async def start_smpp(rt: Runtime, acceptor: Acceptor) -> tuple[anyio.CancelScope, int | None]:
    """The SMPP server when `[smpp] listen` is set: its scope and port."""
    settings, queues = rt.settings, rt.queues
    smpp_scope = anyio.CancelScope()
    if not settings.smpp.listen:
        return smpp_scope, None

    async def run_smpp(*, task_status: anyio.abc.TaskStatus[int]) -> None:
        with smpp_scope:
            await serve_smpp(
                settings.smpp,
                accept=acceptor.accept,
                accounts=rt.accounts,
                events=rt.events,
                journal=rt.journal,
                store=functools.partial(open_smpp_store, rt),
                # A full bridge queue: parts of long messages are answered
                # ESME_RTHROTTLED; whole messages wait in line for room instead.
                congested=lambda: any(queue.room() == 0 for queue in queues.values()),
                monitor=rt.operations,
                task_status=task_status,
            )

    with bind_errors("smpp.listen", settings.smpp.listen):
        smpp_port: int = await rt.tg.start(run_smpp)
    rt.listeners["smpp"] = f"{split_host_port(settings.smpp.listen, 'smpp.listen')[0]}:{smpp_port}"
    return smpp_scope, smpp_port


async def start_api(
    rt: Runtime, reader: JournalReader, scheduler: Scheduler, acceptor: Acceptor
) -> tuple[anyio.CancelScope, int | None]:
    """The HTTP API and sendsms when `[api] listen` is set: their scope and port."""
    settings = rt.settings
    api_scope = anyio.CancelScope()
    if not settings.api.listen:
        return api_scope, None
    api_app = _api_app(
        settings, rt.journal, reader, rt.events, scheduler, rt.accounts, acceptor, rt.metrics
    )

    async def run_api(*, task_status: anyio.abc.TaskStatus[int]) -> None:
        with api_scope:
            await serve_api(settings.api, api_app, task_status=task_status)

    with bind_errors("api.listen", settings.api.listen):
        api_port: int = await rt.tg.start(run_api)
    api_host = split_host_port(settings.api.listen, "api.listen")[0]
    rt.listeners["api"] = f"{api_host}:{api_port}"
    return api_scope, api_port


class Canceller:
    """What DELETE /v1/messages/{id} does to the engine: the journal's compare-and-set,
    then the step's events and counts, and the message out of its bridge queue."""

    def __init__(
        self, journal: Journal, events: EventRouter, scheduler: Scheduler, metrics: Metrics
    ) -> None:
        self._journal = journal
        self._events = events
        self._scheduler = scheduler
        self._metrics = metrics

    async def cancel(self, changes: Sequence[Change]) -> bool:
        return await self._journal.cancel(changes)

    def cancelled(self, message: Message, step: lifecycle.Step) -> None:
        for origin, event in step.events:
            self._events.emit(origin, event)
        for count in step.counts:
            self._metrics.outcome(message.bridge, count.outcome, 1, count.reason)
        self._scheduler.discard(message)


def _api_app(
    settings: Settings,
    journal: Journal,
    reader: JournalReader,
    events: EventRouter,
    scheduler: Scheduler,
    accounts: Accounts,
    acceptor: Acceptor,
    metrics: Metrics,
) -> App:
    """The HTTP API and sendsms on their listener (engine.ingress.http_api)."""
    for origin in ("api", "sendsms"):
        events.register(DiscardSink(origin))
    api = HttpApi(
        accounts=accounts,
        accept=acceptor.accept,
        reader=reader,
        canceller=Canceller(journal, events, scheduler, metrics),
        feed=reader,
        max_batch=settings.api.max_batch,
        body_timeout_s=settings.api.body_timeout_s,
    )
    return build_api_app(
        api,
        sendsms_route(
            accounts.by_login, acceptor.accept, body_timeout_s=settings.api.body_timeout_s
        ),
        max_body_bytes=settings.api.max_body_bytes,
    )


def _ingress_listeners(settings: Settings, tcp_port: int | None, use_stdin: bool) -> dict[str, str]:
    listeners: dict[str, str] = {}
    if settings.ingress.tcp and tcp_port is not None:
        host = split_host_port(settings.ingress.tcp, "ingress.tcp")[0]
        listeners["ndjson_tcp"] = f"{host}:{tcp_port}"
    if settings.ingress.unix:
        listeners["ndjson_unix"] = settings.ingress.unix
    if use_stdin:
        listeners["ndjson_stdin"] = "stdin"
    return listeners


class _SubmitHooks:
    """Dispatch hooks: metrics, and replay delivery reports that arrived before the submit."""

    def __init__(
        self,
        metrics: Metrics,
        receipts: ReceiptHandler,
        tg: anyio.abc.TaskGroup,
        price: Callable[[Message, str], tuple[float, str]],
    ) -> None:
        self._metrics = metrics
        self._receipts = receipts
        self._tg = tg
        self._price = price

    def submitted(self, bridge: str, messages: Sequence[tuple[Message, str | None]]) -> None:
        # The accept-time estimate is the route's first bridge's; a message that failed
        # over is counted at this bridge's price, as its `submitted` event states it.
        counted: list[Message] = []
        for message, _ in messages:  # a loop, not a comprehension: no frame of its own
            if message.bridge_index:
                message = msgspec.structs.replace(message, **self._repriced(message, bridge))
            counted.append(message)
        self._metrics.submitted(bridge, counted, time.time())
        if self._receipts.has_orphans(bridge):
            ids = [pid for _, pid in messages if pid]
            match = functools.partial(self._receipts.match_orphans, bridge, ids)
            self._tg.start_soon(_logged, match, "match_orphans")

    def _repriced(self, message: Message, bridge: str) -> dict[str, Any]:
        cost, currency = self._price(message, bridge)
        return {"cost": cost, "currency": currency}

    def charged(self, bridge: str, charges: Sequence[Charge]) -> None:
        self._metrics.charged(bridge, charges)

    def unconfirmed(self, bridge: str, messages: Sequence[Message]) -> None:
        # A report may have come while the request was in flight: matched by recipient.
        if self._receipts.has_orphans(bridge):
            match = functools.partial(self._receipts.match_unconfirmed, bridge, list(messages))
            self._tg.start_soon(_logged, match, "match_unconfirmed")

    def outcome(self, bridge: str, outcome: str, count: int, reason: str | None = None) -> None:
        self._metrics.outcome(bridge, outcome, count, reason)

    def request_done(self, bridge: str, seconds: float, status: str) -> None:
        self._metrics.request_done(bridge, "send", seconds, status)

    def bucket_wait(self, bridge: str, seconds: float) -> None:
        self._metrics.bucket_wait(bridge, seconds)


async def attempted(step: Callable[[], Awaitable[T]], attempts: int) -> T:
    """A start-up step, tried up to `attempts` times when the journal fails it (a pause
    between tries); the last failure is the start's."""
    for attempt in range(1, attempts):
        try:
            return await step()
        except JournalError as error:
            log.warning("start_step_failed", attempt=attempt, error=str(error))
            await anyio.sleep(START_RETRY_S)
    return await step()


async def _logged(work: Callable[[], Awaitable[None]], what: str) -> None:
    """A one-off task whose journal failure is logged, not the daemon's end: the orphan
    reports it would have matched stay in the journal for the next look."""
    try:
        await work()
    except JournalError as error:
        log.error("journal_failed", task=what, error=str(error))


async def run_forever(factory: Callable[[], Awaitable[None]], what: str) -> None:
    """Restart a background loop that failed unexpectedly, after a pause; log why."""
    while True:
        try:
            await factory()
            return
        except Exception as error:
            log.error("task_failed", task=what, error=repr(error))
            await anyio.sleep(1.0)


def _webhook_account(settings: Settings, accounts: Accounts, name: str) -> AccountWebhooks:
    """An account's webhook settings: its own (`[accounts.NAME.webhooks]`), else those of
    `[webhooks]` (also for messages of an account no longer configured, or from before
    accounts)."""
    account = accounts.get(name)
    found = account.webhooks if account is not None else None
    return found or settings.webhooks


async def _check_credentials(
    name: str,
    driver: BridgeDriver,
    client: BridgeClient,
    circuit: CircuitBreaker,
    operations: Operations,
) -> None:
    check = await check_credentials(name, driver, client)
    record_balance(check, operations, time.time())
    if isinstance(check, CredentialsRefused):
        log.warning("credentials_refused", bridge=name, fault=check.fault, line=describe(check))
        circuit.trip(time.time(), describe(check))
    elif not isinstance(check, NotCheckable):
        log.info("credentials_checked", bridge=name, line=describe(check))


def _log_balance_failure(check: CredentialCheck) -> None:
    """A periodic balance ask that failed: one warning (the gauge keeps its last value)."""
    if balance_failed(check):
        log.warning("balance_not_read", bridge=check.bridge, line=describe(check))


def _pricer(settings: Settings) -> Callable[[Message, str], tuple[float, str]]:
    """A message's (cost, currency) on another bridge of its route, for failover events;
    the old estimate where the new bridge has no price for the number."""
    tables = price_tables_for(settings)

    def price(message: Message, bridge: str) -> tuple[float, str]:
        table = tables.get(bridge)
        if table is None:
            return message.cost, message.currency
        try:
            cost = message_cost(table, message.to, message.segments)
        except NoPriceError:
            return message.cost, message.currency
        return cost.amount, cost.currency

    return price


async def start_simulators(
    tg: anyio.abc.TaskGroup, settings: Settings, public_url: str | None
) -> str:
    from bridges.sim.core import SimulatorConfig
    from bridges.sim.runner import serve_simulators

    config = SimulatorConfig(
        latency_ms=settings.simulators.latency_ms,
        fail_rate=settings.simulators.fail_rate,
        dlr_delay_s=settings.simulators.dlr_delay_s,
        routemobile_dlr_url=f"{public_url}/dlr/routemobile" if public_url else None,
    )
    handle = await tg.start(
        lambda task_status: serve_simulators(
            ["dsc", "routemobile", "bsg", "smsclub"],
            port=0,
            config=config,
            task_status=task_status,
        )
    )
    return f"http://127.0.0.1:{handle.port}"
