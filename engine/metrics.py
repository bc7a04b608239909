"""Every Prometheus metric of septet, defined here and nowhere else, on one registry per daemon.

Names follow `septet_<what>_<unit>` (docs/design.md "Metrics"); counters are named without
`_total`, which prometheus_client appends in the exposition. Labels are of bounded
cardinality only: bridge, outcome, reason, state, encoding, currency, call, status class, node,
result, source — never a number, an id or free text. Values that would break that rule (an
unexpected delivery state, an HTTP status, a provider's odd currency) are folded into a
fixed set first.

Hot-path updates are O(1) and take no lock: each bridge's label children are resolved
once (`_BridgeSeries`), and what the engine counts is kept in plain numbers (`LoopTally`)
that are added to those children when the registry is collected (a scrape), not at each
event: prometheus_client's `inc` and `observe` take a lock and make several calls each.
Counters are added to once per batch, not per message; only latencies are counted per
message (a bucket index and a sum), because a histogram needs each value. Gauges of the
daemon's live state (queue depth, requests in flight, circuit state) are read at scrape
time by `LiveStateCollector`, so the engine never updates them per message.

`journal_commit` runs on the journal's writer thread (prometheus_client's values are
locked, and it uses them directly); every other method runs on the event loop, which
alone touches the caches and the tally, and which also serves the scrapes that flush it.
"""

from __future__ import annotations

import math
import platform
import re
from bisect import bisect_left
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import msgspec
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric

from engine.lifecycle import Charge
from engine.models import Message

# ── label vocabularies (bounded; every value known before the first message) ──────────

OUTCOMES = ("submitted", "retry", "failover", "failed", "transport_error", "cancelled")
# Why a message was retried or failed: the kind of outcome, never the provider's text.
REASONS = (
    "throttled",
    "retry_later",
    # The provider refused the message, by what it blamed (bridges.base.RejectionCause):
    "invalid_number",  # the recipient's number (invalid, barred, do-not-disturb)
    "sender_refused",
    "content_refused",  # the text, a template, spam
    "rejected",  # anything else, or a provider that does not say
    "unknown",
    "connect_failed",
    "reply_lost",
    "reply_too_large",
    "transport",
    "unparseable",
    "expired",
    # The provider refused the account, not the message (bridges.base.AccountFault):
    "account_credentials",
    "account_blocked",
    "account_credit",
    "crash",  # septet stopped while the request was in flight
    "circuit_open",
)
# SMPP v3.4 section 5.2.28 message_state names, as septet's receipts carry them.
FINAL_DLR_STATES = ("DELIVRD", "UNDELIV", "EXPIRED", "REJECTD", "DELETED", "UNKNOWN")
DLR_STATES = (*FINAL_DLR_STATES, "ENROUTE", "ACCEPTD")
ENCODINGS = ("GSM-7", "UCS-2")
LINE_RESULTS = ("accepted", "rejected", "duplicate")
CIRCUIT_STATES = ("closed", "open", "half_open")
CALLS = ("send", "status")
# Whose figure a cost is: septet's estimate (engine.pricing) or the provider's own charge.
COST_SOURCES = ("estimate", "provider")
OTHER = "other"
# A provider names the currency of its charge: an ISO 4217 code becomes a label, at most
# this many per bridge (a provider bills an account in one or two); others are "other".
CURRENCY_CODE = re.compile(r"[A-Z]{3}")
MAX_PROVIDER_CURRENCIES = 8

# ── histogram buckets, fitted to what each one measures ───────────────────────────────

# A provider request: a local simulator answers in well under a millisecond, a real
# provider in tens to hundreds of ms; timeouts default to 30 s (config.BridgeConfig).
PROVIDER_REQUEST_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
# Accept -> submit: milliseconds when queues are short, minutes under backoff or a
# rate limit, up to an hour for long retry chains (retry.max_delay_s defaults to 300 s).
SUBMIT_LATENCY_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
    3600.0,
)  # fmt: skip
# Submit -> final delivery report: seconds on a live handset, hours when it is off
# (validity defaults to a day at most providers).
DELIVERY_LATENCY_BUCKETS = (
    0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0,
    14400.0, 43200.0, 86400.0,
)  # fmt: skip
# A token-bucket wait: a fraction of one request's interval up to a minute of backlog.
BUCKET_WAIT_BUCKETS = (0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0)
# A SQLite WAL group commit: tens of microseconds to a slow fsync.
WEBHOOK_OUTCOMES = ("delivered", "retry", "gave_up", "gone", "refused")
WEBHOOK_LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 300.0, 3600.0, 86400.0)
JOURNAL_COMMIT_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
)  # fmt: skip


def status_class(status: str) -> str:
    """An HTTP status as its class ("2xx" … "5xx"); anything else (a transport failure)
    stays a word from a fixed set, so the label never carries a number."""
    if len(status) == 3 and status.isdigit():
        return f"{status[0]}xx"
    return "transport" if status == "transport" else OTHER


class LiveState(msgspec.Struct, frozen=True, kw_only=True):
    """The daemon's state at one scrape: per-bridge queue depth, requests in flight,
    circuit state, and whether the bridge's rate limits answer (a cluster's shared
    limits may not: engine.cluster_limits)."""

    queue_depth: dict[str, int]
    in_flight: dict[str, int]
    circuit: dict[str, str]
    rate_limits_reachable: dict[str, bool] = msgspec.field(default_factory=dict)


class LiveStateCollector:
    """Reads `LiveState` when Prometheus scrapes, and turns it into gauges."""

    def __init__(self, read: Callable[[], LiveState]) -> None:
        self._read = read

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        state = self._read()
        queue, in_flight, circuit, limits = self._families()
        for bridge, depth in state.queue_depth.items():
            queue.add_metric([bridge], depth)
        for bridge, count in state.in_flight.items():
            in_flight.add_metric([bridge], count)
        for bridge, current in state.circuit.items():
            for name in CIRCUIT_STATES:
                circuit.add_metric([bridge, name], 1.0 if name == current else 0.0)
        for bridge, reachable in state.rate_limits_reachable.items():
            limits.add_metric([bridge], 1.0 if reachable else 0.0)
        return [queue, in_flight, circuit, limits]

    @staticmethod
    def _families() -> list[GaugeMetricFamily]:
        return [
            GaugeMetricFamily(
                "septet_queue_depth_messages",
                "Messages waiting in the bridge's in-memory queue.",
                labels=["bridge"],
            ),
            GaugeMetricFamily(
                "septet_inflight_requests",
                "Send requests to the bridge's provider awaiting a reply.",
                labels=["bridge"],
            ),
            GaugeMetricFamily(
                "septet_circuit_state",
                "1 for the bridge's current circuit-breaker state, 0 for the others.",
                labels=["bridge", "state"],
            ),
            GaugeMetricFamily(
                "septet_rate_limits_reachable",
                "1 while the bridge's rate limits answer; 0 while the cluster's shared"
                " limits (Redis) cannot be reached and nothing is sent through it.",
                labels=["bridge"],
            ),
        ]


class HistogramTally:
    """Observations of one labelled histogram child not yet added to it: a count per
    bucket and their sum, as prometheus_client's `observe` would have added them."""

    __slots__ = ("bounds", "buckets", "child", "sum")

    def __init__(self, child: Any) -> None:
        self.child = child
        # prometheus_client 0.21+: a child's bounds (ending in +Inf) and bucket values;
        # tests/engine/test_metrics.py checks a tally against observe().
        self.bounds: list[float] = child._upper_bounds
        self.buckets = [0] * len(self.bounds)
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        # observe() counts an amount in the first bucket whose bound is >= it.
        self.buckets[bisect_left(self.bounds, amount)] += 1
        self.sum += amount

    def flush(self) -> None:
        buckets = self.buckets
        if not any(buckets):
            return
        values = self.child._buckets
        for index, count in enumerate(buckets):
            if count:
                values[index].inc(count)
                buckets[index] = 0
        self.child._sum.inc(self.sum)
        self.sum = 0.0


class LoopTally:
    """What the event loop counted since the last collection, in plain numbers: counter
    children with the amount to add, and histogram tallies. `flush` adds them to the
    prometheus_client children; the registry flushes before every collection."""

    __slots__ = ("counts", "histograms")

    def __init__(self) -> None:
        self.counts: dict[Any, float] = {}  # counter child -> amount not yet added
        self.histograms: list[HistogramTally] = []

    def histogram(self, child: Any) -> HistogramTally:
        tally = HistogramTally(child)
        self.histograms.append(tally)
        return tally

    def flush(self) -> None:
        counts, self.counts = self.counts, {}
        for child, amount in counts.items():
            child.inc(amount)
        for histogram in self.histograms:
            histogram.flush()


class _TalliedRegistry(CollectorRegistry):
    """A registry that adds the event loop's tally to its metrics before each collection
    (generate_latest, get_sample_value), so a scrape sees every event counted so far."""

    def __init__(self, tally: LoopTally) -> None:
        super().__init__(auto_describe=True)
        self.tally = tally

    def collect(self) -> Iterable[Metric]:
        self.tally.flush()
        return super().collect()


class _BridgeSeries:
    """One bridge's label children, resolved once: `labels()` takes a lock and builds a
    key on every call, too slow for the per-message path. Every known label set gets its
    zero sample here, so rate() and the dashboard see series before the first event
    (the Prometheus "avoid missing metrics" practice). Histograms are counted through
    their `HistogramTally`."""

    __slots__ = (
        "bridge",
        "bucket_wait",
        "charges",
        "cost",
        "delivery_latency",
        "dlrs",
        "failures",
        "messages",
        "requests",
        "retries",
        "segments",
        "submit_latency",
    )

    def __init__(self, metrics: Metrics, bridge: str) -> None:
        self.bridge = bridge
        self.messages = {name: metrics.messages.labels(bridge, name) for name in OUTCOMES}
        self.segments = {name: metrics.segments.labels(bridge, name) for name in ENCODINGS}
        self.retries = {name: metrics.retries.labels(bridge, name) for name in REASONS}
        self.failures = {name: metrics.failures.labels(bridge, name) for name in REASONS}
        self.dlrs = {name: metrics.dlrs.labels(bridge, name) for name in DLR_STATES}
        self.cost: dict[str, Any] = {}  # currency -> child, source="estimate"
        self.charges: dict[str, Any] = {}  # currency -> child, source="provider"
        self.requests: dict[tuple[str, str], HistogramTally] = {}
        tally = metrics.tally
        self.submit_latency = tally.histogram(metrics.submit_latency_seconds.labels(bridge))
        self.delivery_latency = tally.histogram(metrics.delivery_latency_seconds.labels(bridge))
        self.bucket_wait = tally.histogram(metrics.bucket_wait_seconds.labels(bridge))

    def child(self, cache: dict[str, Any], metric: Any, label: str) -> Any:
        """The child of `metric` for (this bridge, `label`), from `cache` or made once."""
        found = cache.get(label)
        if found is None:
            found = cache[label] = metric.labels(self.bridge, label)
        return found


def observe_many(histogram: Histogram, amounts: Sequence[float]) -> None:
    """`histogram.observe(a)` for every amount, with one increment per bucket touched.

    A batch of 100 submits is 100 observations; prometheus_client's observe walks the
    bounds and takes a lock per call. This reads its labelled child's bounds, buckets and
    sum (prometheus_client 0.21+; tests/engine/test_metrics.py checks it against observe).
    """
    if not amounts:
        return
    bounds = histogram._upper_bounds
    buckets = histogram._buckets
    if len(amounts) == 1:
        # A request of one message, the common case unbatched: no tally to build.
        buckets[bisect_left(bounds, amounts[0])].inc(1)
        histogram._sum.inc(amounts[0])
        return
    # observe() counts an amount in the first bucket whose bound is >= it.
    for index, count in Tally(bisect_left(bounds, amount) for amount in amounts).items():
        buckets[index].inc(count)
    histogram._sum.inc(sum(amounts))


class Metrics:
    """The metrics of one daemon, on its own registry (several daemons share a test
    process; the global default registry is never used)."""

    def __init__(self, bridges: Sequence[str] = ()) -> None:
        self.tally = LoopTally()
        self.registry: CollectorRegistry = _TalliedRegistry(self.tally)
        registry = self.registry
        self.messages = Counter(
            "septet_messages",
            "Messages by bridge and what became of a send attempt.",
            ["bridge", "outcome"],
            registry=registry,
        )
        self.segments = Counter(
            "septet_segments",
            "SMS segments submitted to providers, by encoding (3GPP TS 23.038).",
            ["bridge", "encoding"],
            registry=registry,
        )
        self.cost = Counter(
            "septet_cost",
            "Cost of submitted messages, in the currency named by the label: septet's"
            " estimate (source=estimate) and the provider's stated charge (source=provider).",
            ["bridge", "currency", "source"],
            registry=registry,
        )
        self.retries = Counter(
            "septet_retries",
            "Messages scheduled for another attempt on the same bridge, by reason.",
            ["bridge", "reason"],
            registry=registry,
        )
        self.failures = Counter(
            "septet_failures",
            "Messages that failed for good on a bridge, by reason.",
            ["bridge", "reason"],
            registry=registry,
        )
        self.dlrs = Counter(
            "septet_dlrs",
            "Delivery reports matched to a message, by SMPP state.",
            ["bridge", "state"],
            registry=registry,
        )
        self.ingress_lines = Counter(
            "septet_ingress_lines",
            "Input lines (and SMPP submits) by result.",
            ["result"],
            registry=registry,
        )
        self.journal_operations = Counter(
            "septet_journal_operations",
            "Journal operations written by group commits.",
            registry=registry,
        )
        self.provider_request_seconds = Histogram(
            "septet_provider_request_seconds",
            "Duration of HTTP requests to providers (send and status calls).",
            ["bridge", "call", "status"],
            buckets=PROVIDER_REQUEST_BUCKETS,
            registry=registry,
        )
        self.submit_latency_seconds = Histogram(
            "septet_submit_latency_seconds",
            "From accepted (journaled) to submitted (provider took it), per message.",
            ["bridge"],
            buckets=SUBMIT_LATENCY_BUCKETS,
            registry=registry,
        )
        self.delivery_latency_seconds = Histogram(
            "septet_delivery_latency_seconds",
            "From the submit request to the final delivery report, per message.",
            ["bridge"],
            buckets=DELIVERY_LATENCY_BUCKETS,
            registry=registry,
        )
        self.bucket_wait_seconds = Histogram(
            "septet_bucket_wait_seconds",
            "Time a request waited for the bridge's token buckets.",
            ["bridge"],
            buckets=BUCKET_WAIT_BUCKETS,
            registry=registry,
        )
        self.journal_commit_seconds = Histogram(
            "septet_journal_commit_seconds",
            "Duration of one journal group commit.",
            buckets=JOURNAL_COMMIT_BUCKETS,
            registry=registry,
        )
        self.webhook_deliveries_total = Counter(
            "septet_webhook_deliveries",
            "Webhook delivery tries by outcome: delivered (2xx), retry (a failed try, tried"
            " again later), gave_up (no 2xx within retry_for_s, or its event no longer kept),"
            " gone (410: no more of the message's events to that URL), refused (the URL's"
            " host is not allowed, or resolved to a private address).",
            ["outcome"],
            registry=registry,
        )
        self.webhook_latency_seconds = Histogram(
            "septet_webhook_latency_seconds",
            "From an event's commit to its webhook's 2xx reply, retries included.",
            buckets=WEBHOOK_LATENCY_BUCKETS,
            registry=registry,
        )
        self.webhook_owed_gauge = Gauge(
            "septet_webhook_queue",
            "Webhook deliveries owed (in the journal, not yet delivered or given up).",
            registry=registry,
        )
        self._webhook_outcomes = {
            outcome: self.webhook_deliveries_total.labels(outcome) for outcome in WEBHOOK_OUTCOMES
        }
        self._lines = {result: self.ingress_lines.labels(result) for result in LINE_RESULTS}
        self._bridges: dict[str, _BridgeSeries] = {}
        self._live: LiveStateCollector | None = None
        for bridge in bridges:
            self._series(bridge)
        # The operator's metrics (issue 19), defined in their own region below.
        self.operations = Operations(registry, bridges)

    def _series(self, bridge: str) -> _BridgeSeries:
        series = self._bridges.get(bridge)
        if series is None:
            series = self._bridges[bridge] = _BridgeSeries(self, bridge)
        return series

    # ── scrape-time state ────────────────────────────────────────────────────────────

    def watch(self, read: Callable[[], LiveState]) -> None:
        """Read queue depth, requests in flight and circuit state from `read` at each
        scrape."""
        if self._live is not None:
            self.registry.unregister(self._live)
        self._live = LiveStateCollector(read)
        self.registry.register(self._live)

    def exposition(self) -> bytes:
        """The Prometheus text exposition of every metric (GET /metrics)."""
        return generate_latest(self.registry)

    # ── engine hooks (hot path: O(1) per batch, plus one observe per latency) ────────

    def submitted(self, bridge: str, messages: Sequence[Message], now: float) -> None:
        """A batch the provider took: count its segments and cost, and observe each
        message's accept -> submit latency."""
        series = self._bridges.get(bridge)  # _series, inline when known
        if series is None:
            series = self._series(bridge)
        latency = series.submit_latency
        bounds, buckets = latency.bounds, latency.buckets
        segments, costs, counts = series.segments, series.cost, self.tally.counts
        waited = 0.0
        for message in messages:
            amount = now - message.accepted_at
            if amount < 0.0:
                amount = 0.0
            buckets[bisect_left(bounds, amount)] += 1
            waited += amount
            child = segments.get(message.encoding)
            if child is None:
                child = series.child(segments, self.segments, message.encoding)
            counts[child] = counts.get(child, 0) + message.segments
            cost = message.cost
            if cost > 0:  # a counter only grows
                child = costs.get(message.currency)
                if child is None:
                    child = costs[message.currency] = self.cost.labels(
                        bridge, message.currency, "estimate"
                    )
                counts[child] = counts.get(child, 0.0) + cost
        latency.sum += waited

    def charged(self, bridge: str, charges: Iterable[Charge]) -> None:
        """The provider stated what it charged (at submit, or in its report): counted in
        `septet_cost_total{source="provider"}` by the currency it named."""
        series = self._series(bridge)
        totals: dict[str, float] = {}
        for charge in charges:
            amount = charge.amount
            # A counter only grows, and a free message adds nothing (NaN fails both tests).
            if 0.0 < amount < math.inf:
                totals[charge.currency] = totals.get(charge.currency, 0.0) + amount
        counts = self.tally.counts
        for currency, total in totals.items():
            child = series.charges.get(currency)
            if child is None:
                fits = len(series.charges) < MAX_PROVIDER_CURRENCIES
                if fits and CURRENCY_CODE.fullmatch(currency):
                    child = series.charges[currency] = self.cost.labels(
                        bridge, currency, "provider"
                    )
                else:  # not kept by its own name: the cache stays as bounded as the labels
                    child = self.cost.labels(bridge, OTHER, "provider")
            counts[child] = counts.get(child, 0.0) + total

    def outcome(self, bridge: str, outcome: str, count: int, reason: str | None = None) -> None:
        """`count` messages of `bridge` ended an attempt as `outcome` (OUTCOMES); a retry
        or a failure also counts under its `reason` (REASONS)."""
        series = self._bridges.get(bridge)  # _series and its child, inline when known
        if series is None:
            series = self._series(bridge)
        counts = self.tally.counts
        child = series.messages.get(outcome)
        if child is None:
            child = series.child(series.messages, self.messages, outcome)
        counts[child] = counts.get(child, 0) + count
        if reason is None:
            return
        label = reason if reason in REASONS else OTHER
        if outcome == "retry":
            child = series.child(series.retries, self.retries, label)
        elif outcome == "failed":
            child = series.child(series.failures, self.failures, label)
        else:
            return
        counts[child] = counts.get(child, 0) + count

    def request_done(self, bridge: str, call: str, seconds: float, status: str) -> None:
        """One provider request ended: `status` is the HTTP status or "transport"."""
        series = self._bridges.get(bridge)  # _series, inline when known
        if series is None:
            series = self._series(bridge)
        tally = series.requests.get((call, status))
        if tally is None:
            tally = series.requests[(call, status)] = self.tally.histogram(
                self.provider_request_seconds.labels(bridge, call, status_class(status))
            )
        tally.buckets[bisect_left(tally.bounds, seconds)] += 1  # tally.observe, inline
        tally.sum += seconds

    def status_request_hook(self, bridge: str) -> Callable[[float, str], None]:
        """`request_done` for `bridge`'s status polls, as `dlr.serve_poller` calls it."""

        def status_request_done(seconds: float, status: str) -> None:
            self.request_done(bridge, "status", seconds, status)

        return status_request_done

    def bucket_wait(self, bridge: str, seconds: float) -> None:
        self._series(bridge).bucket_wait.observe(seconds)

    def receipt(self, bridge: str, state: str, seconds: float | None) -> None:
        """A delivery report matched a message; `seconds` since submit when it is final."""
        series = self._series(bridge)
        label = state if state in DLR_STATES else OTHER
        child = series.child(series.dlrs, self.dlrs, label)
        counts = self.tally.counts
        counts[child] = counts.get(child, 0) + 1
        if seconds is not None:
            series.delivery_latency.observe(max(0.0, seconds))

    def ingress(self, result: str, count: int = 1) -> None:
        child = self._lines.get(result)
        if child is None:
            child = self._lines[result] = self.ingress_lines.labels(OTHER)
        counts = self.tally.counts
        counts[child] = counts.get(child, 0) + count

    def webhook_deliveries(self, outcome: str, count: int = 1) -> None:
        child = self._webhook_outcomes.get(outcome)
        if child is None:
            child = self._webhook_outcomes[outcome] = self.webhook_deliveries_total.labels(OTHER)
        child.inc(count)

    def webhook_latency(self, seconds: float) -> None:
        self.webhook_latency_seconds.observe(seconds)

    def webhook_owed(self, count: int) -> None:
        self.webhook_owed_gauge.set(count)

    def journal_commit(self, seconds: float, operations: int) -> None:
        """Called on the journal's writer thread after each group commit."""
        self.journal_commit_seconds.observe(seconds)
        self.journal_operations.inc(operations)


# ── operations (issue 19): process, build, journal, backlog, SMPP, callbacks, balances ──
#
# Kept apart from the message metrics above: none of these is touched per message. The
# gauges are read at scrape time from values other parts keep current (`Operations`):
# the journal's size is one stat() of its files, the backlog a cache that
# engine.observe.serve_backlog refreshes on an interval (never a count per scrape), the
# SMPP sessions the live connections' states.

# Messages not final yet, by the journal's phase (engine.journal.Journal.counts).
BACKLOG_STATES = ("accepted", "inflight", "submitted")
# Why the listener refused a provider's callback (engine.listener).
CALLBACK_REJECTIONS = (
    "unknown_bridge",  # 404: no bridge of that name takes callbacks
    "body_timeout",  # 408: the body did not arrive in time
    "unauthorized",  # 401: the driver refused its credentials
    "malformed",  # 400: the driver could not read it
    "not_recorded",  # 503: the journal could not take the receipts
)
# What became of an SMPP bind (engine.smpp.connection).
BIND_RESULTS = ("bound", "invalid_credentials", "blocked", "refused")
# SMPP session states (engine.smpp.session.State) a live connection can be in.
SMPP_SESSION_STATES = ("open", "bound_tx", "bound_rx", "bound_trx", "unbinding")


def build_version() -> str:
    """septet's installed version, or "unknown" when run from a tree never installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("septet")
    except PackageNotFoundError:
        return "unknown"


# The tables engine.retention deletes from.
PRUNED_TABLES: Final = ("messages", "outbox", "orphan_receipts", "account_days")


class Operations:
    """The operator's metrics of one daemon: see the region's comment."""

    def __init__(self, registry: CollectorRegistry, bridges: Sequence[str]) -> None:
        # RSS, CPU seconds, open file descriptors, start time (Linux /proc), under
        # septet_process_* so they follow the naming rule.
        ProcessCollector(namespace="septet", registry=registry)
        self.build_info = Gauge(
            "septet_build_info",
            "Always 1; the labels name the running build.",
            ["version", "python"],
            registry=registry,
        )
        self.build_info.labels(build_version(), platform.python_version()).set(1)
        # The node's name (engine.cluster) as one series, not a label on every metric:
        # a query joins it on `instance` (`* on (instance) group_left (node)`).
        self.node_info = Gauge(
            "septet_node_info",
            "Always 1; the label names this node of the cluster ([cluster] node).",
            ["node"],
            registry=registry,
        )
        self.claims_taken_over = Counter(
            "septet_claims_taken_over",
            "Claims of dead nodes this node took over, by the state recovery gave them.",
            ["state"],
            registry=registry,
        )
        self.callbacks_rejected = Counter(
            "septet_callbacks_rejected",
            "Provider callbacks the listener refused, by bridge and reason.",
            ["bridge", "reason"],
            registry=registry,
        )
        self.smpp_binds = Counter(
            "septet_smpp_binds",
            "SMPP bind requests, by result.",
            ["result"],
            registry=registry,
        )
        self.provider_balance = Gauge(
            "septet_provider_balance",
            "The account balance the provider last stated, in its currency.",
            ["bridge", "currency"],
            registry=registry,
        )
        self.provider_balance_checked = Gauge(
            "septet_provider_balance_checked_timestamp_seconds",
            "When the provider last stated the bridge's balance (Unix time).",
            ["bridge"],
            registry=registry,
        )
        self.journal_pruned = Counter(
            "septet_journal_pruned_rows",
            "Rows the journal's retention deleted ([journal] keep_days), by table.",
            ["table"],
            registry=registry,
        )
        for table in PRUNED_TABLES:
            self.journal_pruned.labels(table)
        self._bridges = frozenset(bridges)
        self._balance_currency: dict[str, str] = {}
        for bridge in bridges:
            for reason in CALLBACK_REJECTIONS:
                self.callbacks_rejected.labels(bridge, reason)
        for result in BIND_RESULTS:
            self.smpp_binds.labels(result)
        self.callbacks_rejected.labels(OTHER, "unknown_bridge")
        self.journal_paths: tuple[Path, ...] = ()
        self.journal_max_bytes: int | None = None
        self.backlog: dict[str, int] | None = None
        self.kept_events: int | None = None
        self.smpp_sessions: Callable[[], Iterable[str]] | None = None
        registry.register(_OperationsCollector(self))

    def callback_rejected(self, bridge: str, reason: str) -> None:
        """The listener refused a callback for `bridge` (a name from the URL: one not
        configured is counted as "other")."""
        label = bridge if bridge in self._bridges else OTHER
        self.callbacks_rejected.labels(
            label, reason if reason in CALLBACK_REJECTIONS else OTHER
        ).inc()

    def journal_pruned_rows(self, deleted: Mapping[str, int]) -> None:
        """A retention turn deleted these rows, by table (engine.retention)."""
        for table, rows in deleted.items():
            if rows:
                self.journal_pruned.labels(table if table in PRUNED_TABLES else OTHER).inc(rows)

    def smpp_bind(self, result: str) -> None:
        self.smpp_binds.labels(result if result in BIND_RESULTS else OTHER).inc()

    def balance(self, bridge: str, amount: float, currency: str | None, at: float) -> None:
        """The provider stated `bridge`'s balance; a currency it stops naming (or changes)
        drops the old series, so one bridge has one balance."""
        label = currency if currency and CURRENCY_CODE.fullmatch(currency) else OTHER
        previous = self._balance_currency.get(bridge)
        if previous is not None and previous != label:
            self.provider_balance.remove(bridge, previous)
        self._balance_currency[bridge] = label
        self.provider_balance.labels(bridge, label).set(amount)
        self.provider_balance_checked.labels(bridge).set(at)


def journal_size_bytes(paths: Iterable[Path]) -> int:
    """The journal's bytes on disk: the database file and its write-ahead log."""
    total = 0
    for path in paths:
        try:
            total += path.stat().st_size
        except OSError:  # no WAL file between checkpoints, or a file being replaced
            continue
    return total


class _OperationsCollector:
    """The scrape-time gauges of `Operations`."""

    def __init__(self, operations: Operations) -> None:
        self._operations = operations

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        ops = self._operations
        size, max_size, backlog, kept, sessions = self._families()
        families: list[Metric] = []
        if ops.journal_paths:
            size.add_metric([], journal_size_bytes(ops.journal_paths))
            families.append(size)
        if ops.journal_max_bytes is not None:
            max_size.add_metric([], ops.journal_max_bytes)
            families.append(max_size)
        if ops.backlog is not None:
            for state in BACKLOG_STATES:
                backlog.add_metric([state], ops.backlog.get(state, 0))
            families.append(backlog)
        if ops.kept_events is not None:
            kept.add_metric([], ops.kept_events)
            families.append(kept)
        if ops.smpp_sessions is not None:
            counts = Tally(ops.smpp_sessions())
            for state in SMPP_SESSION_STATES:
                sessions.add_metric([state], counts.get(state, 0))
            families.append(sessions)
        return families

    @staticmethod
    def _families() -> list[GaugeMetricFamily]:
        return [
            GaugeMetricFamily(
                "septet_journal_size_bytes",
                "The journal's size on disk: its database file and write-ahead log.",
            ),
            GaugeMetricFamily(
                "septet_journal_max_size_bytes",
                "The journal's configured cap ([journal] max_size_mb), where one is set.",
            ),
            GaugeMetricFamily(
                "septet_backlog_messages",
                "Messages not final yet, by phase: accepted (waiting to be sent, now or"
                " later), inflight (a request is carrying them), submitted (awaiting a"
                " report). Refreshed on an interval, not at each scrape.",
                labels=["state"],
            ),
            GaugeMetricFamily(
                "septet_outbox_events",
                "Events kept in the journal for NDJSON clients that went away, not yet"
                " fetched (septet send --events, or the client's next session)."
                " Refreshed on an interval, not at each scrape.",
            ),
            GaugeMetricFamily(
                "septet_smpp_sessions",
                "Open SMPP connections, by session state.",
                labels=["state"],
            ),
        ]
