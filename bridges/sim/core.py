"""What every provider simulator shares: runtime config, counters, seeded chance, DLR jobs.

A simulator is the provider as docs/providers.md describes it. This module holds the parts
that are the same for all four: the `SimulatorConfig` a test or the CLI changes at
runtime, the `ProviderCounters` a test reads to prove nothing was lost or sent twice,
and the `ProviderState` (config + counters + clock + seeded `random.Random` + the heap
of delivery-report callbacks) each provider module works on. Time comes only from the
injected clock (epoch seconds), randomness only from the seeded generator.

Everything here runs once per request or per message at 10,000 requests a second on one
core (bench/simulators.py), so the hot helpers avoid per-call allocation: reports wait
in one heap drained by one task (never a timer or task per message), weighted draws
bisect cached cumulative weights, and responses reuse prebuilt header sets.
"""

from __future__ import annotations

import heapq
import itertools
import random
import time
from bisect import bisect
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Literal, NamedTuple, Protocol, get_args
from urllib.parse import unquote_to_bytes, urlencode

import anyio
import msgspec
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

Clock = Callable[[], float]
Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]

FaultKind = Literal[
    "5xx",
    "timeout_before",
    "timeout_after",
    "reset_before",
    "reset_after",
    "slow",
    "429",
    "garbage",
]
FAULT_KINDS: frozenset[str] = frozenset(get_args(FaultKind))

# Generic delivery outcomes (SMPP v3.4 appendix B message states); each provider renders
# them its own way (DSC D/U, BSG "delivered"..., SMS Club and Route Mobile by name).
DLR_OUTCOMES: frozenset[str] = frozenset(
    {"DELIVRD", "UNDELIV", "EXPIRED", "REJECTD", "DELETED", "UNKNOWN"}
)


class SimulatorConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Everything a simulator can be told; POST /_sim/config changes any subset at runtime.

    One flat namespace so a partial update is a plain JSON object. Provider-specific
    fields carry the provider's name as prefix and are ignored by the others.
    """

    # ── latency and faults (docs/providers.md, "What every simulator offers") ──
    latency_ms: float = 0.0
    jitter_ms: float = 0.0  # uniform extra delay in [0, jitter_ms]
    fail_rate: float = 0.0  # fraction of *send* requests hit by a fault
    faults: dict[str, float] = msgspec.field(default_factory=lambda: {"5xx": 1.0})
    slow_ms: float = 2000.0  # extra delay of the "slow" fault
    hang_s: float = 300.0  # a timeout fault hangs until the client leaves, at most this long
    retry_after_s: int = 1  # Retry-After of a 429 where the provider sends one
    seed: int | None = None
    # ── delivery reports ──
    dlr_delay_s: float = 0.5
    dlr_mix: dict[str, float] = msgspec.field(
        default_factory=lambda: {"DELIVRD": 0.9, "UNDELIV": 0.05, "EXPIRED": 0.03, "REJECTD": 0.02}
    )
    dlr_retries: int = 3  # extra attempts of a callback the receiver did not take
    dlr_retry_delay_s: float = 0.2
    dlr_timeout_s: float = 5.0
    # A recipient the simulated network answers with this code (every provider renders it
    # its own way: DSC a "failed" entry, Route Mobile `<code>|<cell>` or a bare code, BSG
    # a per-phone or request error, SMS Club an add_info reason). Makes every code reachable.
    recipient_codes: dict[str, str] = msgspec.field(default_factory=dict)
    # ── dsc ──
    dsc_api_key: str = "demo"
    dsc_username: str = "demo"
    dsc_password: str = "demo"  # noqa: S105 (docs/design.md's public demo credentials)
    dsc_testing_mode: bool = False
    dsc_daily_limit: int = 15
    dsc_cost_per_message: int = 75
    # ── routemobile ──
    routemobile_username: str = "demo"
    routemobile_password: str = "demo"  # noqa: S105
    routemobile_credit: int | None = None  # messages left; None = unlimited
    routemobile_numbering: Literal["seed", "routemobile"] = "seed"  # 1725/1732 vs 1025/1032
    routemobile_id_separator: Literal["|", ":"] = "|"  # `1701|cell|id` or `1701|cell:id`
    routemobile_dlr_url: str | None = None
    routemobile_duplicate_window_s: float = 0.0  # 1041 for the same cell+text; 0 = off
    routemobile_ip_whitelist: list[str] | None = None  # set: other IPs get 18
    routemobile_ip_blacklist: list[str] = msgspec.field(default_factory=list)  # 16
    # ── bsg ──
    bsg_api_key: str = "test_demo"
    bsg_wrapped_single: bool = False  # single reply flat (seed) or {"result": {...}} (SDKs)
    bsg_string_fields: bool = True  # "error":"0", "price":"0.02" (seed) or numbers
    bsg_blocked_code: Literal[2, 3] = 2  # the other of 2/3 means "not enough parameters"
    bsg_pending_status: str = "unknown"  # what a status poll shows before the report
    bsg_price: float = 0.02
    bsg_currency: str = "EUR"
    bsg_balance: float | None = None  # None = unlimited
    bsg_auth_block: bool = False  # 5 auth errors in 30 min block the client IP
    bsg_block_s: float = 1800.0
    bsg_max_validity_hours: int = 72  # error 28 above; newer documents take 87,840
    # Polls of one message closer together than this count as abuse (docs/providers.md "bsg"
    # Anti-abuse: "more than about once a minute"); 0 = not counted.
    bsg_poll_abuse_s: float = 60.0
    # ── smsclub ──
    smsclub_token: str = "demo"  # noqa: S105
    smsclub_rate_limit: int | None = 9  # requests per second; None = off
    smsclub_duplicate_window_s: float = 120.0  # 453 for the same phone+text; 0 = off
    smsclub_originators: list[str] = msgspec.field(default_factory=lambda: ["test1", "test2"])
    smsclub_money: str = "8111.1700"
    smsclub_currency: str = "UAH"


_config_encoder = msgspec.json.Encoder()


def validate_config(config: SimulatorConfig) -> SimulatorConfig:
    """Raise ValueError on values no simulator could honour."""
    unknown = set(config.faults) - FAULT_KINDS
    if unknown:
        raise ValueError(f"unknown fault kinds: {', '.join(sorted(unknown))}")
    unknown = set(config.dlr_mix) - DLR_OUTCOMES
    if unknown:
        raise ValueError(f"unknown delivery outcomes: {', '.join(sorted(unknown))}")
    if not 0.0 <= config.fail_rate <= 1.0:
        raise ValueError("fail_rate must be within [0, 1]")
    if config.fail_rate and not any(w > 0 for w in config.faults.values()):
        raise ValueError("fail_rate needs at least one fault kind with a positive weight")
    if not any(w > 0 for w in config.dlr_mix.values()):
        raise ValueError("dlr_mix needs at least one outcome with a positive weight")
    return config


def updated_config(config: SimulatorConfig, changes: Mapping[str, Any]) -> SimulatorConfig:
    """`config` with `changes` applied, validated as a whole (unknown keys are an error)."""
    merged = {**msgspec.to_builtins(config), **changes}
    try:
        new = msgspec.convert(merged, SimulatorConfig)
    except msgspec.ValidationError as error:
        raise ValueError(str(error)) from error
    return validate_config(new)


class ProviderCounters(msgspec.Struct, kw_only=True):
    """What one provider saw and did; GET /_sim/counters serves it as JSON."""

    requests: dict[str, dict[str, int]] = msgspec.field(default_factory=dict)
    accepted_total: int = 0
    accepted_by_recipient: dict[str, int] = msgspec.field(default_factory=dict)
    accepted_by_reference: dict[str, int] = msgspec.field(default_factory=dict)
    rejects: dict[str, int] = msgspec.field(default_factory=dict)
    faults: dict[str, int] = msgspec.field(default_factory=dict)
    dlr_sent: int = 0  # callback attempts made
    dlr_ok: int = 0  # reports the receiver took
    dlr_failed: int = 0  # reports given up after every retry
    dlr_retried: int = 0
    # Requests refused whole for what they held together, by rule: a repeated msisdn
    # (BSG 31), a repeated phone and text (SMS Club 453). A client that batches as the
    # provider wants never meets these.
    refused_whole: dict[str, int] = msgspec.field(default_factory=dict)
    # The validity each accepted message was given, in seconds, by the id the provider
    # answered with: BSG's `validity` hours (72 where the request gave none), SMS Club's
    # `lifetime` minutes (where the request gave one).
    validity_s_by_id: dict[str, int] = msgspec.field(default_factory=dict)
    # Status polls of one message sooner after the previous one than the provider allows
    # (BSG: `bsg_poll_abuse_s`), one per message per poll, whatever endpoint asked.
    poll_abuse: int = 0

    def count_request(self, label: str, status: str) -> None:
        by_status = self.requests.get(label)
        if by_status is None:
            by_status = self.requests[label] = {}
        by_status[status] = by_status.get(status, 0) + 1

    def count_accepted(self, recipient: str, reference: str | None = None) -> None:
        self.accepted_total += 1
        by_recipient = self.accepted_by_recipient
        by_recipient[recipient] = by_recipient.get(recipient, 0) + 1
        if reference is not None:
            by_reference = self.accepted_by_reference
            by_reference[reference] = by_reference.get(reference, 0) + 1

    def count_reject(self, code: str, times: int = 1) -> None:
        self.rejects[code] = self.rejects.get(code, 0) + times

    def count_fault(self, kind: str) -> None:
        self.faults[kind] = self.faults.get(kind, 0) + 1

    def count_refused_whole(self, rule: str) -> None:
        self.refused_whole[rule] = self.refused_whole.get(rule, 0) + 1


class CallbackJob(NamedTuple):
    """One delivery report to push: `method` to `url` (query already in it) when due."""

    due: float  # anyio.current_time() at which to send
    method: str
    url: str
    ok_statuses: frozenset[int]


_OK_200 = frozenset({200})


class ProviderState:
    """One provider's mutable world: config, counters, clock, chance, outgoing reports."""

    def __init__(self, name: str, config: SimulatorConfig, clock: Clock = time.time) -> None:
        self.name = name
        self.config = validate_config(config)
        self._cache_mixes()
        self.clock = clock
        self.random = random.Random(config.seed)
        self.counters = ProviderCounters()
        # Reports wait in one heap ordered by (due, sequence), drained by one task
        # (runner._send_callbacks): a timer or task per message would cost more than the
        # send request that accepted it. The sequence keeps equal due times in order.
        self._reports: list[tuple[float, int, CallbackJob]] = []
        self._report_sequence = itertools.count()
        self._report_waiter: anyio.Event | None = None  # set while the drainer sleeps

    def update(self, changes: Mapping[str, Any]) -> SimulatorConfig:
        self.config = updated_config(self.config, changes)
        self._cache_mixes()
        if "seed" in changes:
            self.random.seed(self.config.seed)
        return self.config

    def reset_counters(self) -> None:
        self.counters = ProviderCounters()

    def _cache_mixes(self) -> None:
        # Cumulative weights built once per config: outcomes are drawn per message.
        outcomes = self.config.dlr_mix
        self._outcomes = list(outcomes)
        self._outcome_weights = list(itertools.accumulate(outcomes.values()))
        self._outcome_total = self._outcome_weights[-1]
        self._outcome_last = len(self._outcomes) - 1
        faults = self.config.faults
        self._faults = list(faults)
        self._fault_weights = list(itertools.accumulate(faults.values()))
        self._fault_total = self._fault_weights[-1] if faults else 0.0
        self._fault_last = len(self._faults) - 1

    def pick_outcome(self) -> str:
        """A delivery outcome drawn from `dlr_mix` (deterministic when seeded).

        The same draw as `random.choices(outcomes, cum_weights=...)[0]`, without building
        a list per call.
        """
        point = self.random.random() * self._outcome_total
        return self._outcomes[bisect(self._outcome_weights, point, 0, self._outcome_last)]

    def pick_fault(self) -> str | None:
        """The fault to inflict on this send request, or None (`fail_rate` of the time)."""
        config = self.config
        if config.fail_rate <= 0.0 or self.random.random() >= config.fail_rate:
            return None
        point = self.random.random() * self._fault_total
        return self._faults[bisect(self._fault_weights, point, 0, self._fault_last)]

    def new_uuid(self) -> str:
        """A random (version 4) UUID from the seeded generator, as `str(uuid.UUID(...))`.

        Formatted directly: building a uuid.UUID object cost more than the rest of a
        Route Mobile entry. RFC 9562 section 5.4: version 4 in bits 48-51, variant 10 in
        bits 64-65.
        """
        bits = self.random.getrandbits(128)
        bits = (bits & _UUID_CLEAR) | _UUID_VERSION_4
        text = f"{bits:032x}"
        return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"

    # ── delivery reports ──

    def schedule_callback(
        self, method: str, url: str, ok_statuses: frozenset[int] = _OK_200
    ) -> None:
        """Queue one report, due `dlr_delay_s` from now (anyio's clock)."""
        due = anyio.current_time() + self.config.dlr_delay_s
        job = CallbackJob(due, method, url, ok_statuses)
        reports = self._reports
        heapq.heappush(reports, (due, next(self._report_sequence), job))
        waiter = self._report_waiter
        if waiter is not None and reports[0][2] is job:
            # The new report is the earliest: wake the drainer to sleep until it instead.
            waiter.set()

    @property
    def pending_reports(self) -> int:
        return len(self._reports)

    async def due_reports(self) -> list[CallbackJob]:
        """Wait until a report is due, then take every due report, earliest first."""
        reports = self._reports
        while not reports or reports[0][0] > anyio.current_time():
            self._report_waiter = waiter = anyio.Event()
            try:
                if reports:
                    with anyio.move_on_after(reports[0][0] - anyio.current_time()):
                        await waiter.wait()
                else:
                    await waiter.wait()
            finally:
                self._report_waiter = None
        now = anyio.current_time()
        due: list[CallbackJob] = []
        while reports and reports[0][0] <= now:
            due.append(heapq.heappop(reports)[2])
        return due


_UUID_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID_VERSION_4 = (0x4000 << 64) | (0x8000 << 48)


class Route(NamedTuple):
    """One provider endpoint. `sends` marks the send requests faults apply to."""

    method: str  # "*" = any; the handler answers the provider's "method not allowed"
    path: str
    handler: Handler
    sends: bool = False


class ProviderSimulator(Protocol):
    """A provider module's simulator, bound to its state."""

    name: str
    state: ProviderState

    def routes(self) -> list[Route]: ...

    def server_error(self) -> web.Response:
        """The provider's own reply for an upstream failure (the "5xx" fault)."""
        ...

    def too_many_requests(self) -> web.Response:
        """The provider's own reply to too many requests (the "429" fault)."""
        ...

    def reset(self) -> None:
        """Forget every message (counters are reset by the state)."""
        ...


# The request key under which the dispatcher (runner.Dispatcher) leaves the values of a
# path's `{name}` segments.
PATH_PARAMETERS = web.RequestKey("path_parameters", dict[str, str])


def path_parameter(request: web.BaseRequest, name: str) -> str:
    """The value of the `{name}` segment of the route that matched `request`."""
    return request[PATH_PARAMETERS][name]


JSON = "application/json"
TEXT = "text/plain; charset=utf-8"
# web.Response copies the headers it is given, so one prebuilt set serves every reply.
_JSON_HEADERS = CIMultiDict({"Content-Type": JSON})
_TEXT_HEADERS = CIMultiDict({"Content-Type": TEXT})
_json_encoder = msgspec.json.Encoder()


def json_response(document: object, status: int = 200) -> web.Response:
    return web.Response(body=_json_encoder.encode(document), status=status, headers=_JSON_HEADERS)


def text_response(text: str, status: int = 200) -> web.Response:
    return web.Response(body=text.encode(), status=status, headers=_TEXT_HEADERS)


MAX_BODY_BYTES = 1024**2  # aiohttp's default client_max_size, which request.read() enforces


async def read_body(request: web.BaseRequest) -> bytes:
    """The request body, taken straight from the buffer when all of it has arrived.

    A simulated send is small and usually arrives with its headers; request.read()
    would still go through the event loop twice (one readany per chunk, then one more
    for end of stream) to find that out.
    """
    content = request.content
    if not content.is_eof():
        return await request.read()
    body = content.read_nowait()
    if len(body) > MAX_BODY_BYTES:
        raise web.HTTPRequestEntityTooLarge(MAX_BODY_BYTES, len(body))
    return body


def parse_form(body: bytes | str, *, first_wins: bool = False) -> dict[str, str]:
    """A form-urlencoded body or query string as a dict.

    The last value of a repeated name wins, as PHP's $_POST reads it, or with
    `first_wins` the first, as a Java servlet's getParameter (and aiohttp's
    request.query.get) reads it. The same result as dict(urllib.parse.parse_qsl(...)),
    but only unquotes what needs it, and through unquote_to_bytes: on the simulators'
    hot path parse_qsl (and unquote_plus, which splits the text into ASCII runs first)
    was the top Python cost.
    """
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    fields: dict[str, str] = {}
    for pair in text.split("&"):
        if not pair:
            continue
        name, _, value = pair.partition("=")
        if "%" in name or "+" in name:
            name = _unquote_plus(name)
        if first_wins and name in fields:
            continue
        if "%" in value or "+" in value:
            value = _unquote_plus(value)
        fields[name] = value
    return fields


def _unquote_plus(text: str) -> str:
    """`+` is a space, `%XX` a byte, the bytes UTF-8; an invalid escape stays as written."""
    return unquote_to_bytes(text.replace("+", " ")).decode("utf-8", "replace")


class ReportUrl:
    """A receiver's URL with the query parameters all of one request's reports share.

    Built once per request; `build` appends one report's own parameters. A parameter the
    receiver wrote under a name the provider sets is replaced (a template such as
    `dnis=$dnis$`, seed 000), the others stay as the receiver wrote them (its own
    credentials). Parsing and re-serialising the URL per report cost more than the send.
    """

    def __init__(self, url: URL, shared: Mapping[str, str], per_report: Iterable[str]) -> None:
        replaced = {*shared, *per_report}
        kept = [(name, value) for name, value in url.query.items() if name not in replaced]
        base = url.with_fragment(None).with_query([*kept, *shared.items()])
        self.prefix = f"{base}&" if base.raw_query_string else f"{base}?"

    def build(self, parameters: Mapping[str, str]) -> str:
        return self.prefix + urlencode(parameters)


def utc_timestamp(epoch: float) -> str:
    """`yyyy-mm-dd hh:mm:ss` in UTC, the form Route Mobile and BSG write times in."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch))


def config_json(config: SimulatorConfig) -> bytes:
    return _config_encoder.encode(config)
