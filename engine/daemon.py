"""The composition root: builds every part from Settings and runs them in one task group.

Start order: journal, HTTP listener (its port goes into callback URLs), in-process
simulators when configured, drivers and pooled clients, crash recovery of messages left
in flight, scheduler feeder, one dispatcher per bridge, pollers, then ingress (stdin,
TCP, Unix socket). SIGTERM/SIGINT drain: ingress stops reading, dispatchers finish the
requests they have started, the journal commits, and the process exits 0.
"""

from __future__ import annotations

import importlib.metadata
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import structlog

from engine.account_limits import share_limits
from engine.accounts import Accounts
from engine.admin import Admin
from engine.bridge_limits import open_shared_limits
from engine.cluster import draw_run, draw_suffix, node_name
from engine.config import ConfigError, Settings, accounts_of
from engine.daemon_health import DaemonHealth
from engine.daemon_services import (
    START_ATTEMPTS,
    Canceller,
    Runtime,
    attempted,
    build_acceptor,
    build_bridges,
    build_dispatchers,
    failover_rules,
    open_reader_for,
    recover,
    run_forever,
    start_api,
    start_balance_checks,
    start_dispatch,
    start_http,
    start_leader_services,
    start_ndjson,
    start_simulators,
    start_smpp,
)
from engine.dispatch import BridgeDispatcher
from engine.dlr import ReceiptHandler
from engine.ingress.events import EventRouter
from engine.ingress.outbox import Outbox, store_outbox_rest
from engine.journal import Journal, JournalBackend, journal_backend, open_journal
from engine.journal_lock import hold_journal
from engine.membership import Membership, NameInUseError
from engine.metrics import Metrics
from engine.scheduler import BridgeQueue, Scheduler

log = structlog.get_logger("septet.daemon")


async def run_daemon(
    settings: Settings,
    *,
    use_stdin: bool = False,
    exit_when_idle: bool = False,
    stdin: Callable[[], Awaitable[bytes]] | None = None,
    stdout: Callable[[bytes], Awaitable[None]] | None = None,
    ready: Callable[[dict[str, Any]], None] | None = None,
    reopen_log: Callable[[], None] | None = None,
) -> int:
    """Run until a signal (or, with exit_when_idle, until input ends and all is final).

    A listener that cannot bind raises ConfigError naming its key and address; SIGHUP
    calls `reopen_log` (the `[log] file`) and never stops the daemon."""
    metrics = Metrics(list(settings.bridges))
    accounts = accounts_of(settings)
    async with AsyncExitStack() as stack:
        stop = _StopRequest()
        rt, resumed = await _open_runtime(stack, settings, metrics, accounts, stop, reopen_log)
        orphans = await attempted(rt.receipts.recover_orphans, rt.attempts)
        if orphans:
            log.info("orphan_receipts_recovered", receipts=orphans)
        health = DaemonHealth(rt.journal, rt.membership, rt.node, rt.dispatchers, rt.queues)
        metrics.watch(health.live_state)
        reader = await open_reader_for(rt)
        # The admin API answers once the scheduler exists (appended below).
        admins: list[Admin] = []
        http_port, metrics_port, public_url = await start_http(rt, reader, health.readiness, admins)
        sim_url: str | None = None
        if settings.simulators.enabled:
            sim_url = await start_simulators(rt.tg, settings, public_url)
        await build_bridges(rt, sim_url, public_url)
        failover = failover_rules(rt)
        start_balance_checks(rt)
        await recover(rt, failover)
        start_leader_services(rt)

        # ── scheduling and dispatch ───────────────────────────────────────────
        scheduler = Scheduler(rt.queues, rt.journal)
        # What a dead node accepted and never claimed, or a takeover made due again, is in
        # the journal: this node's feeder looks at once.
        rt.membership.on_takeover = scheduler.wake_feeder
        canceller = Canceller(rt.journal, rt.events, scheduler, metrics)
        admins.append(Admin(rt.journal, reader, canceller, woken=scheduler.wake_feeder))
        build_dispatchers(rt, scheduler, failover)
        dispatch_scope = start_dispatch(rt, scheduler)

        # ── ingress ───────────────────────────────────────────────────────────
        acceptor = build_acceptor(rt, scheduler)
        ingress_scope, input_done, tcp_port = await start_ndjson(
            rt, acceptor, use_stdin, stdin, stdout
        )
        smpp_scope, smpp_port = await start_smpp(rt, acceptor)
        if sim_url is not None:
            rt.listeners["simulators"] = sim_url
        api_scope, api_port = await start_api(rt, reader, scheduler, acceptor)
        health.serving = True  # every front door listens: /readyz may say ready
        ports = {
            "api_port": api_port,
            "http_port": http_port,
            "tcp_port": tcp_port,
            "smpp_port": smpp_port,
            "metrics_port": metrics_port,
            "simulators": sim_url,
        }
        _announce(rt, resumed, ports, ready)
        reason = await _wait_for_stop(
            stop, exit_when_idle, input_done, rt.journal, rt.queues, scheduler, rt.dispatchers
        )
        health.serving = False  # the drain closes the front doors: route elsewhere now
        await _shut_down(
            rt, reason, (ingress_scope, smpp_scope, api_scope), scheduler, dispatch_scope
        )
    log.info("stopped")
    return 0


def _announce(
    rt: Runtime,
    resumed: dict[str, int],
    ports: dict[str, Any],
    ready: Callable[[dict[str, Any]], None] | None,
) -> None:
    """Tell the caller the bound ports (tests, `septet run`) and log the start line."""
    if ready is not None:
        ready(ports)
    log.info(
        "started",
        version=septet_version(),
        listeners=rt.listeners,
        resumed=resumed,
        node=rt.node,
        journal=str(Path(rt.settings.journal.path)),
        http_port=ports["http_port"],
    )


async def _open_runtime(
    stack: AsyncExitStack,
    settings: Settings,
    metrics: Metrics,
    accounts: Accounts,
    stop: _StopRequest,
    reopen_log: Callable[[], None] | None,
) -> tuple[Runtime, dict[str, int]]:
    """Open the journal, join the cluster, start the heartbeat and take signals; with what
    this start resumes, by state (the final ones are history, not backlog)."""
    if journal_backend(settings.journal.backend) is JournalBackend.SQLITE:
        # One writer per journal file (engine.journal_lock): held until the journal
        # closes. A database is shared by the nodes: there is no file to hold.
        stack.enter_context(hold_journal(Path(settings.journal.path)))
    journal = await stack.enter_async_context(
        open_journal(
            settings.journal,
            on_commit=metrics.journal_commit,
            feed_accounts=[a.name for a in accounts if a.settings.keeps_feed],
        )
    )
    node, membership = await _join_cluster(stack, settings, journal, metrics)
    resumed = {state: n for state, n in (await journal.counts()).items() if state != "final"}
    outbox = Outbox()
    events = EventRouter(outbox.spill)
    # Before the task group, so it is closed after every task that uses it has ended.
    shared_limits = await open_shared_limits(settings.cluster.redis, stack)
    if shared_limits is not None:
        share_limits({account.name: account.limit for account in accounts}, shared_limits)
    tg = await stack.enter_async_context(anyio.create_task_group())
    # The heartbeat from the start: the rest of the start-up (simulators, credentials,
    # recovery) may take longer than a lease, and a node without a heartbeat in that
    # time would be taken for dead by the others.
    tg.start_soon(run_forever, membership.serve_heartbeat, "heartbeat")
    # Signals are taken from here on: a SIGTERM during start-up drains too.
    await tg.start(_serve_signals, stop, reopen_log)
    receipts = ReceiptHandler(
        journal,
        events,
        on_receipt=metrics.receipt,
        on_charge=metrics.charged,
        report_timeout_s=settings.reports.timeout_s,
    )
    runtime = Runtime(
        settings=settings,
        stack=stack,
        tg=tg,
        journal=journal,
        metrics=metrics,
        accounts=accounts,
        membership=membership,
        node=node,
        events=events,
        outbox=outbox,
        shared_limits=shared_limits,
        receipts=receipts,
        attempts=START_ATTEMPTS if journal.shared else 1,
    )
    return runtime, resumed


async def _join_cluster(
    stack: AsyncExitStack, settings: Settings, journal: Journal, metrics: Metrics
) -> tuple[str, Membership]:
    """This node in the cluster (engine.membership): its name in every log line, its row
    in the journal; a name a live process holds refuses the start."""
    node = node_name(settings.cluster.node, socket.gethostname(), draw_suffix())
    stack.enter_context(structlog.contextvars.bound_contextvars(node=node))
    membership = Membership(journal, node, draw_run(), settings.cluster)
    try:
        await membership.join()
    except NameInUseError as error:
        raise ConfigError(f"cluster.node: {error.sentence}") from None
    metrics.operations.node_info.labels(node).set(1)
    return node, membership


async def _shut_down(
    rt: Runtime,
    reason: str,
    front_doors: Sequence[anyio.CancelScope],
    scheduler: Scheduler,
    dispatch_scope: anyio.CancelScope,
) -> None:
    """The drain: the front doors stop reading, the dispatchers finish what they started
    (at most `[shutdown] drain_s`), the outbox's rest is stored, this node leaves."""
    for scope in front_doors:
        scope.cancel()
    await _drain(reason, rt.settings.shutdown.drain_s, scheduler, rt.dispatchers)
    dispatch_scope.cancel()
    # No await between the last store and the cancel: no event can slip in between.
    await store_outbox_rest(rt.outbox, rt.journal)
    # Said last: what this node still holds is any live node's to take from now on.
    await rt.membership.leave()
    rt.tg.cancel_scope.cancel()


def warn_at_start(warnings: Sequence[str]) -> None:
    """Log the configuration's warnings (engine.config.check_settings), one line each."""
    for sentence in warnings:
        log.warning("config_warning", problem=sentence)


def septet_version() -> str:
    """The installed distribution's version (`septet --version`)."""
    try:
        return importlib.metadata.version("septet")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class _StopRequest:
    """SIGTERM or SIGINT arrived: which one, once."""

    def __init__(self) -> None:
        self.requested = anyio.Event()
        self.reason = "signal"


async def _serve_signals(
    stop: _StopRequest,
    reopen_log: Callable[[], None] | None,
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """SIGTERM/SIGINT request the drain; SIGHUP reopens the log file (logrotate moved it
    away) and never stops the daemon."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        task_status.started()
        async for signum in signals:
            if signum != signal.SIGHUP:
                if not stop.requested.is_set():
                    stop.reason = signal.Signals(signum).name
                    stop.requested.set()
                continue
            if reopen_log is None:
                log.info("hangup", action="none: the log goes to stderr")
                continue
            try:
                reopen_log()
            except OSError as error:
                log.error("log_reopen_failed", error=error.strerror or str(error))
            else:
                log.info("log_reopened")


async def _drain(
    reason: str, drain_s: float, scheduler: Scheduler, dispatchers: dict[str, BridgeDispatcher]
) -> None:
    """Let workers finish the requests they have in flight, at most `drain_s`; they start
    no new ones, and what is still queued stays accepted in the journal."""

    def held() -> dict[str, Any]:
        return {
            "messages_in_hand": len(scheduler.in_hand),
            "requests_in_flight": {n: d.in_flight for n, d in dispatchers.items() if d.in_flight},
        }

    # The line names what the drain waits for: messages a worker holds (in a request, or
    # waiting on the bridge's rate limit) and requests in flight, by bridge.
    log.info("draining", reason=reason, drain_s=drain_s, waiting_for=held())
    for dispatcher in dispatchers.values():
        dispatcher.draining = True
    started = time.monotonic()
    with anyio.move_on_after(drain_s) as drain_scope:
        while scheduler.in_hand or any(d.in_flight for d in dispatchers.values()):  # noqa: ASYNC110 - bounded drain poll
            await anyio.sleep(0.01)
    if drain_scope.cancelled_caught:
        # Say what was still held: it stays in the journal (accepted, or in flight and
        # resolved at the next start), but a drain that runs out is worth knowing about.
        log.warning("drain_timed_out", after_s=drain_s, **held())
    else:
        log.info("drained", took_s=round(time.monotonic() - started, 3))


async def _wait_for_stop(
    stop: _StopRequest,
    exit_when_idle: bool,
    input_done: anyio.Event,
    journal: Any,
    queues: dict[str, BridgeQueue],
    scheduler: Scheduler,
    dispatchers: dict[str, BridgeDispatcher],
) -> str:
    reason = "signal"
    async with anyio.create_task_group() as tg:

        async def on_signal() -> None:
            nonlocal reason
            await stop.requested.wait()
            reason = stop.reason
            tg.cancel_scope.cancel()

        async def on_idle() -> None:
            nonlocal reason
            await input_done.wait()
            while True:
                busy = (
                    any(len(q) for q in queues.values())
                    or scheduler.in_hand
                    or any(d.in_flight for d in dispatchers.values())
                )
                if not busy and await journal.pending_count() == 0:
                    reason = "idle"
                    tg.cancel_scope.cancel()
                    return
                await anyio.sleep(0.05)

        tg.start_soon(on_signal)
        if exit_when_idle:
            tg.start_soon(on_idle)
    return reason
