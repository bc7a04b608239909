"""Settings: TOML decoded into frozen msgspec Structs that reject unknown keys, plus env overrides.

A config file is optional. Without one, `septet run` uses the embedded default: a SQLite
journal in the working directory, the four provider simulators in-process on a free port,
and routing by country code (`engine.routing.default_routes`).

Secrets never live in the file if you don't want them to: any credential value written
as `"env:NAME"` is read from the environment variable NAME at load time, and a missing
variable is an error naming it (never the value).

`[journal] max_size_mb` caps the journal file. Near the cap the journal refuses new
messages (each line gets a `rejected` event saying the journal is full) while keeping
room for the messages it already holds to be sent and reported; raise the cap (or free
the disk) and restart to accept again. Unset, the journal grows with the disk.

`[accounts.NAME]` (engine.accounts, docs/accounts.md): who may send, by which door, and
within which limits. A file with no accounts has the one account `demo` (SMPP login
demo/demo, no API key); the embedded default gives it the API key "demo", for the demo
only. The old `[[smpp.accounts]]` form is still read, one account per entry named by its
system_id, with a deprecation notice (`notices`); it may not be mixed with `[accounts]`.
"""

from __future__ import annotations

import importlib.util
import os
import re
import ssl
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

import msgspec

from bridges.base import BridgeSettings
from bridges.registry import (
    DRIVER_BASE_URLS,
    DRIVER_CREDENTIALS,
    DRIVER_DELIVERY,
    DRIVER_LIMITS,
    build_driver,
)
from engine.accounts import Accounts, AccountSettings, demo_accounts, from_smpp_accounts
from engine.admission import check_sender, describe_refusals
from engine.cluster import ClusterSettings, settings_problems
from engine.config_keys import describe_unknown, unknown_keys
from engine.journal import JournalBackend, JournalError, journal_backend
from engine.pricing import PriceConfig, PriceTable, default_price_tables, price_table
from engine.ratelimit import RequestLimiter
from engine.routing import DEFAULT_FALLBACK_ROUTE, Router, default_routes
from engine.smpp.server import SmppSettings
from engine.webhooks import hosts
from engine.webhooks.settings import WebhookSettings

PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
PositiveInt = Annotated[int, msgspec.Meta(gt=0)]

DRIVERS = ("dsc", "routemobile", "bsg", "smsclub")


class ConfigError(ValueError):
    """A config file that cannot be used: one sentence per problem, each naming the key
    (or the file) and what is wrong."""

    def __init__(self, *sentences: str) -> None:
        super().__init__("\n".join(sentences))
        self.sentences: tuple[str, ...] = sentences


class JournalSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    # "sqlite": one file, one process (the embedded default); "postgresql": a database
    # several nodes share (cluster mode, engine.journal.postgres; the extra
    # septet[postgresql]), reached by `dsn`.
    # Any other value is refused with a sentence (`journal_problems`).
    backend: str = "sqlite"
    # A libpq connection string or postgresql:// URL (or "env:NAME"); PostgreSQL only.
    dsn: str | None = None
    path: str = "septet.db"
    synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    # The most the journal file may grow to, in MiB (see the module docstring); None: no cap.
    max_size_mb: PositiveFloat | None = None
    # SQLite's page cache for the journal, in MiB: the most of the daemon's memory the
    # journal's pages may take (they fill it as the file grows past it, then it stays).
    cache_mb: PositiveInt = 32
    # Finished messages (and the outbox lines, orphan receipts and daily counters only they
    # needed) are deleted this many days after they ended (engine.retention); a fraction
    # is allowed (0.01 is 864 s). 0: kept forever.
    keep_days: Annotated[float, msgspec.Meta(ge=0)] = 7.0


class IngressSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    tcp: str | None = "127.0.0.1:7750"
    unix: str | None = "./septet.sock"
    max_line_bytes: PositiveInt = 64 * 1024
    max_text_chars: PositiveInt = 1600
    max_recipients_per_line: PositiveInt = 1000
    max_connections: PositiveInt = 1000
    default_region: str | None = None
    # A socket connection (TCP or Unix; never stdin) that completes no line for this
    # long is closed: an idle client, or a slowloris dribbling a line that never ends,
    # must not hold a connection slot forever. A blank line is a keep-alive: a client
    # that waits for reports longer than this sends one now and then. Its later events
    # are kept in the journal (`septet send --events`).
    idle_timeout_s: PositiveFloat = 600.0
    # The account of stdin and of socket connections without an auth line (engine.accounts);
    # unset: the first account configured.
    account: str | None = None
    # Socket connections must authenticate (`{"auth": ...}` first line); stdin never does.
    require_auth: bool = False


class HttpSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    listen: str | None = "127.0.0.1:9750"
    # The URL providers use to reach the listener (callbacks); defaults to http://<listen>.
    public_url: str | None = None
    # A connection must complete its request head within this many seconds of opening,
    # and an idle keep-alive connection is closed after as long (engine.http_server's
    # idle timer, which runs from the connection's start): a client sending its headers byte
    # by byte (slowloris) cannot hold the listener.
    idle_timeout_s: PositiveFloat = 30.0
    # A request body (a provider's callback) must arrive within this many seconds.
    body_timeout_s: PositiveFloat = 10.0
    # HOST:PORT of a listener of its own for /metrics, /healthz and /readyz; set, the
    # `listen` port (the one providers call back) no longer serves /metrics.
    metrics_listen: str | None = None
    # The admin API (/admin/..., engine.admin_api) on the metrics listener, or on `listen`
    # without one: unset, it answers loopback peers only; set (or "env:NAME"), it answers
    # any peer that sends `Authorization: Bearer <token>`, and no one else.
    admin_token: str | None = None


class ApiSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The applications' HTTP API (docs/http-api.md): `/v1/...` and Kannel's
    `/cgi-bin/sendsms`, on a listener of its own. Off unless `listen` is set (the embedded
    default serves it on 127.0.0.1:9751)."""

    listen: str | None = None
    # TLS: a PEM certificate chain and its private key; both or neither.
    cert: str | None = None
    key: str | None = None
    # The most messages one POST /v1/messages may carry, and the most bytes of its body.
    max_batch: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 1000
    max_body_bytes: PositiveInt = 4 * 1024 * 1024
    # A request must arrive whole within this many seconds; an idle keep-alive connection
    # is closed after as long (as `[http] idle_timeout_s`).
    idle_timeout_s: PositiveFloat = 30.0
    body_timeout_s: PositiveFloat = 10.0


class BridgeConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    driver: Literal["dsc", "routemobile", "bsg", "smsclub"]
    base_url: str = ""
    credentials: dict[str, str] = msgspec.field(default_factory=dict)
    default_sender: str | None = None
    options: dict[str, str] = msgspec.field(default_factory=dict)
    # Requests a second, sends and status polls together: at most ⌊requests_per_s⌋ in any
    # one-second window, `requests_burst` (1 to that many) of them back to back
    # (engine.ratelimit.RequestLimiter). Set it below the provider's own limit: the
    # window is held on the times requests are let go, not on when they arrive.
    requests_per_s: PositiveFloat = 100.0
    requests_burst: PositiveFloat | None = None  # unset: requests_per_s
    messages_per_s: PositiveFloat = 100_000.0
    messages_burst: PositiveFloat = 10_000.0
    pool: PositiveInt = 100
    linger_ms: Annotated[float, msgspec.Meta(ge=0)] = 2.0
    max_recipients: PositiveInt | None = None
    queue_size: PositiveInt = 20_000
    timeout_s: PositiveFloat = 30.0
    connect_timeout_s: PositiveFloat = 5.0
    # Status polling (engine.dlr.PollPolicy): a message is first asked about this long
    # after its submit, then after waits that double while it stays pending, up to
    # `poll_max_interval_s`. `poll_floor_s` is the least time between two polls of one
    # message; unset, the provider's own (BSG: 60 s, docs/providers.md anti-abuse), and a
    # poll interval below it is raised to it.
    poll_interval_s: PositiveFloat = 30.0
    poll_max_interval_s: PositiveFloat = 600.0
    poll_floor_s: Annotated[float, msgspec.Meta(ge=0)] | None = None
    attempts_per_bridge: PositiveInt = 3
    # How long the bridge's circuit stays open after it trips before one trial request
    # (engine.circuit): doubled after each failed trial, up to 300 s.
    circuit_open_s: Annotated[float, msgspec.Meta(gt=0, le=300)] = 10.0
    # Seconds between two asks of the provider's account balance, for the
    # septet_provider_balance gauge, where the provider has the call (BSG, SMS Club);
    # 0 never asks after the credentials check at start-up.
    balance_interval_s: Annotated[float, msgspec.Meta(ge=0)] = 300.0

    @property
    def request_burst(self) -> float:
        """`requests_burst`, or all of a second's requests when unset."""
        return self.requests_burst if self.requests_burst is not None else self.requests_per_s


class RetrySettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    base_s: PositiveFloat = 0.5
    factor: PositiveFloat = 2.0
    max_delay_s: PositiveFloat = 300.0
    jitter: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.2


class ReportSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Delivery reports: a submitted message with no final report after `timeout_s` (or
    past its validity end, whichever is sooner) ends as UNKNOWN (engine.lifecycle), found
    by a sweep every `sweep_s` (engine.recovery; tests with a deadline of seconds set it
    short)."""

    timeout_s: PositiveFloat = 72 * 3600.0
    sweep_s: PositiveFloat = 5.0


class EventSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The durable event feed (engine.feed, docs/events.md): events are kept `keep_s`
    seconds, then deleted by a background sweep (except those a webhook still owes)."""

    keep_s: PositiveFloat = 3 * 24 * 3600.0


class RoutingSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Routes by destination prefix. `prefixes` and `default` are laid over the embedded
    table (engine.routing.default_routes, kept for the bridges configured under the same
    names): a prefix written here replaces that prefix's route, the others stay. With
    `replace = true` only what is written here routes."""

    prefixes: dict[str, list[str]] = msgspec.field(default_factory=dict)
    default: list[str] | None = None
    replace: bool = False


class SimulatorSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """In-process provider simulators (the embedded default turns them on)."""

    enabled: bool = False
    latency_ms: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    fail_rate: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.0
    dlr_delay_s: Annotated[float, msgspec.Meta(ge=0)] = 0.2


class LogSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Logging (engine.log). Secrets are always redacted by place."""

    # Phone numbers and message texts appear in full in the logs (debug events of
    # provider requests and callbacks); off, a number shows as +25078****800 and a text
    # as its length and a short hash.
    personal_data: bool = False
    # One JSON object a line, or `console` text for people (`--log-format` overrides it).
    format: Literal["json", "console"] = "json"
    # The least level logged (`--log-level` overrides it).
    level: Literal["debug", "info", "warning", "error"] = "info"
    # Append the log to this file instead of stderr; SIGHUP reopens it (logrotate).
    file: str | None = None


class ShutdownSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """SIGTERM/SIGINT: how long the drain waits for requests in flight (and messages
    waiting on a rate limit) before it stops anyway. Under Docker's and systemd's usual
    10 s stop timeout; what is left stays in the journal and resumes at the next start."""

    drain_s: PositiveFloat = 8.0


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    journal: JournalSettings = JournalSettings()
    ingress: IngressSettings = IngressSettings()
    http: HttpSettings = HttpSettings()
    api: ApiSettings = ApiSettings()
    bridges: dict[str, BridgeConfig] = msgspec.field(default_factory=dict)
    routing: RoutingSettings = RoutingSettings()
    retry: RetrySettings = RetrySettings()
    reports: ReportSettings = ReportSettings()
    events: EventSettings = EventSettings()
    webhooks: WebhookSettings = WebhookSettings()
    simulators: SimulatorSettings = SimulatorSettings()
    smpp: SmppSettings = SmppSettings()
    log: LogSettings = LogSettings()
    shutdown: ShutdownSettings = ShutdownSettings()
    cluster: ClusterSettings = ClusterSettings()
    # Prices per bridge name (engine.pricing.PriceConfig). A bridge without a table costs
    # at septet's demo prices for its driver (engine.pricing), which `septet config check`
    # reports unless the simulators are on.
    pricing: dict[str, PriceConfig] = msgspec.field(default_factory=dict)
    # None: the demo account (or the deprecated [[smpp.accounts]], folded in at load).
    accounts: dict[str, AccountSettings] | None = None


def default_settings() -> Settings:
    """The embedded default: four bridges served by in-process simulators (docs/design.md)."""
    demo: dict[str, dict[str, str]] = {
        "dsc": {
            "api_key": "demo",
            "username": "demo",
            "password": "demo",
            "callback_username": "septet",
            "callback_password": "septet-callback",
        },
        "routemobile": {"username": "demo", "password": "demo"},
        "bsg": {"api_key": "test_demo"},
        "smsclub": {"token": "demo"},
    }
    senders = {"dsc": "SEPTET", "routemobile": "SEPTET", "bsg": "SEPTET", "smsclub": "SEPTET"}
    bridges = {
        name: BridgeConfig(
            driver=name,  # type: ignore[arg-type]
            credentials=demo[name],
            default_sender=senders[name],
            # SMS Club allows 9 requests/s per account, status calls included (docs/providers.md):
            # at most 8 in any second, spread evenly, leaves room for jitter on the way.
            requests_per_s=8.0 if name == "smsclub" else 1000.0,
            requests_burst=1.0 if name == "smsclub" else 1000.0,
            # BSG: at most one poll per message a minute (its floor); the others at once.
            poll_interval_s=60.0 if name == "bsg" else 1.0,
        )
        for name in DRIVERS
    }
    return Settings(
        bridges=bridges,
        simulators=SimulatorSettings(enabled=True),
        # The demo account's API key "demo" is for the embedded default's demo only.
        accounts=demo_accounts(api_key="demo"),
        api=ApiSettings(listen="127.0.0.1:9751"),
    )


def _resolve_env(value: str, where: str, environ: Mapping[str, str]) -> str:
    if value.startswith("env:"):
        name = value[4:]
        if name not in environ:
            raise ConfigError(f"{where} names environment variable {name}, which is not set")
        return environ[name]
    return value


def resolve_secrets(settings: Settings, environ: Mapping[str, str] | None = None) -> Settings:
    """`settings` with every `env:NAME` value read; a ConfigError names every variable
    that is not set (one sentence each), never a value."""
    env = os.environ if environ is None else environ
    missing: list[str] = []

    def resolve(value: str, where: str) -> str:
        try:
            return _resolve_env(value, where, env)
        except ConfigError as error:
            missing.append(str(error))
            return value

    bridges = {}
    for name, bridge in settings.bridges.items():
        credentials = {
            key: resolve(value, f"bridges.{name}.credentials.{key}")
            for key, value in bridge.credentials.items()
        }
        bridges[name] = msgspec.structs.replace(bridge, credentials=credentials)
    accounts = {
        name: _resolve_account_secrets(name, account, resolve)
        for name, account in (settings.accounts or {}).items()
    }
    webhooks = settings.webhooks
    if webhooks.secret is not None:
        webhooks = msgspec.structs.replace(
            webhooks, secret=resolve(webhooks.secret, "webhooks.secret")
        )
    http = settings.http
    if http.admin_token is not None:
        http = msgspec.structs.replace(
            http, admin_token=resolve(http.admin_token, "http.admin_token")
        )
    cluster = settings.cluster
    if cluster.redis is not None:
        cluster = msgspec.structs.replace(cluster, redis=resolve(cluster.redis, "cluster.redis"))
    journal = settings.journal
    if journal.dsn is not None:
        journal = msgspec.structs.replace(journal, dsn=resolve(journal.dsn, "journal.dsn"))
    if missing:
        raise ConfigError(*missing)
    return msgspec.structs.replace(
        settings,
        bridges=bridges,
        accounts=accounts,
        webhooks=webhooks,
        http=http,
        cluster=cluster,
        journal=journal,
    )


def _resolve_account_secrets(
    name: str, account: AccountSettings, resolve: Callable[[str, str], str]
) -> AccountSettings:
    where = f"accounts.{name}"
    api_key = account.api_key
    if api_key is not None:
        api_key = resolve(api_key, f"{where}.api_key")
    smpp, sendsms = account.smpp, account.sendsms
    if smpp is not None:
        password = resolve(smpp.password, f"{where}.smpp.password")
        smpp = msgspec.structs.replace(smpp, password=password)
    if sendsms is not None:
        password = resolve(sendsms.password, f"{where}.sendsms.password")
        sendsms = msgspec.structs.replace(sendsms, password=password)
    webhooks = account.webhooks
    if webhooks is not None and webhooks.secret is not None:
        secret = resolve(webhooks.secret, f"{where}.webhooks.secret")
        webhooks = msgspec.structs.replace(webhooks, secret=secret)
    return msgspec.structs.replace(
        account, api_key=api_key, smpp=smpp, sendsms=sendsms, webhooks=webhooks
    )


def fold_accounts(settings: Settings) -> Settings:
    """`accounts` made whole: the deprecated [[smpp.accounts]] as accounts, or the demo
    account when none is configured (the module docstring)."""
    old = settings.smpp.accounts
    if old is not None:
        if settings.accounts is not None:
            raise ConfigError(
                "[accounts] and the old [[smpp.accounts]] cannot both be set: write each SMPP"
                " login as [accounts.NAME.smpp] (docs/accounts.md)"
            )
        seen: set[str] = set()
        for entry in old:
            if entry.system_id in seen:
                raise ConfigError(f"smpp.accounts names system_id {entry.system_id!r} twice")
            seen.add(entry.system_id)
        return msgspec.structs.replace(settings, accounts=from_smpp_accounts(old))
    if settings.accounts is None:
        return msgspec.structs.replace(settings, accounts=demo_accounts(api_key=None))
    return settings


def notices(settings: Settings) -> list[str]:
    """Sentences about a config that works but should change (deprecated forms)."""
    if settings.smpp.accounts is None:
        return []
    return [
        "[[smpp.accounts]] is deprecated: each entry is read as the account named by its"
        " system_id; write it as [accounts.NAME] with an [accounts.NAME.smpp] login"
        " (throughput becomes messages_per_s; docs/accounts.md)"
    ]


ACCOUNT_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


def accounts_of(settings: Settings) -> Accounts:
    """The account registry of settings (load_settings has validated them; settings made
    in code get the deprecated form folded in here)."""
    if settings.accounts is None:
        settings = fold_accounts(settings)
    return Accounts(
        settings.accounts or demo_accounts(api_key=None),
        default=settings.ingress.account,
        max_failed_binds=settings.smpp.max_failed_binds,
        failed_bind_window_s=settings.smpp.failed_bind_window_s,
        webhooks=settings.webhooks.account(),
    )


def account_problems(settings: Settings) -> Iterator[str]:
    """One sentence per problem of the accounts, each naming the account and the key."""
    accounts = settings.accounts or {}
    owners: dict[tuple[str, str], str] = {}  # (what, value) -> the account that has it
    for name, account in accounts.items():
        if not ACCOUNT_NAME.fullmatch(name):
            yield (
                f"accounts.{name!r} is not an account name (1 to 64 of A-Z, a-z, 0-9, _, . and -)"
            )
        yield from _account_problems(name, account)
        claims = [
            ("api_key", account.api_key, "an API key"),
            ("smpp.system_id", account.smpp and (account.smpp.system_id or name), "a system_id"),
            (
                "sendsms.username",
                account.sendsms and (account.sendsms.username or name),
                "a username",
            ),
        ]
        for field, value, what in claims:
            if not value:
                continue
            other = owners.setdefault((field, value), name)
            if other != name:
                shown = "" if field == "api_key" else f" {value!r}"
                yield (
                    f"accounts.{name}.{field}{shown} is also account {other!r}'s:"
                    f" each account needs {what} of its own"
                )
    default = settings.ingress.account
    if default is not None and default not in accounts:
        yield f"ingress.account names account {default!r}, which is not configured"


def _account_problems(name: str, account: AccountSettings) -> Iterator[str]:
    where = f"accounts.{name}"
    if account.api_key is not None and not account.api_key:
        yield f"{where}.api_key is empty: remove it, or give the account a key"
    if account.burst is not None and account.messages_per_s == 0:
        yield f"{where}.burst needs messages_per_s (without it there is no limit)"
    for sender in account.allowed_senders:
        if not 1 <= len(sender) <= 18:
            yield f"{where}.allowed_senders: {sender!r} is not 1 to 18 characters, as a sender is"
    for door, login in (("smpp", account.smpp), ("sendsms", account.sendsms)):
        if login is not None and not login.password:
            yield f"{where}.{door}.password is empty"
    webhooks = account.webhooks
    if webhooks is not None and webhooks.default_url is not None:
        refusal = hosts.check_url(webhooks.default_url, webhooks)
        if refusal is not None:
            yield f"{where}.webhooks.default_url: {hosts.describe(refusal)}"


def validate(settings: Settings) -> None:
    if (settings.api.cert is None) != (settings.api.key is None):
        raise ConfigError("api.cert and api.key go together: set both for TLS, or neither")
    for name, bridge in settings.bridges.items():
        _check_default_sender(name, bridge)
        try:
            RequestLimiter(bridge.requests_per_s, bridge.request_burst)
        except ValueError as error:
            raise ConfigError(
                f"bridges.{name}: requests_burst {bridge.request_burst:g} with requests_per_s"
                f" {bridge.requests_per_s:g}: {error}"
            ) from None
    names = set(settings.bridges)
    for prefix, route in settings.routing.prefixes.items():
        if not prefix.isdigit():
            raise ConfigError(f"routing.prefixes key {prefix!r} is not a digit prefix")
        for bridge_name in route:
            if bridge_name not in names:
                raise ConfigError(f"routing.prefixes.{prefix} names unknown bridge {bridge_name!r}")
    for bridge_name in settings.routing.default or []:
        if bridge_name not in names:
            raise ConfigError(f"routing.default names unknown bridge {bridge_name!r}")
    default_url = settings.webhooks.default_url
    if default_url is not None:
        refusal = hosts.check_url(default_url, settings.webhooks)
        if refusal is not None:
            raise ConfigError(f"webhooks.default_url: {hosts.describe(refusal)}")


def _check_default_sender(name: str, bridge: BridgeConfig) -> None:
    """The bridge's default sender is what lines without `from` carry: it must fit the
    bridge's own limits (engine.admission), or no such line could ever be sent there."""
    try:
        limits = DRIVER_LIMITS[bridge.driver](bridge.options)
    except ValueError as error:
        raise ConfigError(f"bridges.{name}.options: {error}") from None
    sender = bridge.default_sender or None
    if sender is None:
        return
    refusal = check_sender(name, limits, sender, "default_sender")
    if refusal is not None:
        raise ConfigError(f"bridges.{name}.default_sender: {describe_refusals([refusal])}")


# ── loading and checking (septet run, septet config check) ────────────────────


class LoadedConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Settings that passed every check, the warnings that do not stop a start, and the
    dotted keys the file wrote (empty for the embedded default)."""

    settings: Settings
    warnings: tuple[str, ...] = ()
    written: frozenset[str] = frozenset()


def load_settings(path: str | Path | None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read a TOML file (or the embedded default when `path` is None)."""
    return load_config(path, environ).settings


def load_config(
    path: str | Path | None, environ: Mapping[str, str] | None = None, *, strict: bool = False
) -> LoadedConfig:
    """Read, check and resolve a settings file (the embedded default when `path` is None).

    Raises ConfigError with one sentence per problem that would stop a start: the file's
    syntax, every unknown key, values of the wrong type, every missing environment
    variable, and what `check_settings` finds; `strict` (`septet config check`) adds the
    journal's and the log's directories, which `septet run` finds by opening them."""
    if path is None:
        settings, written = default_settings(), frozenset[str]()
    else:
        settings, written = _read_file(Path(path))
    settings = resolve_secrets(fold_accounts(settings), environ)
    errors, warnings = check_settings(settings)
    if strict:
        errors.extend(path_problems(settings))
    if errors:
        raise ConfigError(*errors)
    return LoadedConfig(settings=settings, warnings=tuple(warnings), written=written)


def for_stdin(loaded: LoadedConfig) -> Settings:
    """The settings of `septet run --stdin`: a pipe opens no socket the file does not name.

    The NDJSON TCP and Unix listeners, the HTTP API's, the metrics listener and the SMPP
    listener open only where the file sets them. The HTTP listener stays where the file
    sets `http.listen` or `http.public_url` (providers are told to call back there);
    otherwise it opens on a free loopback port if a bridge takes its reports by callback
    (the simulators' reports), and not at all if none does."""
    settings, written = loaded.settings, loaded.written

    def kept(key: str, value: str | None) -> str | None:
        return value if key in written else None

    ingress = msgspec.structs.replace(
        settings.ingress,
        tcp=kept("ingress.tcp", settings.ingress.tcp),
        unix=kept("ingress.unix", settings.ingress.unix),
    )
    smpp = msgspec.structs.replace(settings.smpp, listen=kept("smpp.listen", settings.smpp.listen))
    api = msgspec.structs.replace(settings.api, listen=kept("api.listen", settings.api.listen))
    http = msgspec.structs.replace(
        settings.http, metrics_listen=kept("http.metrics_listen", settings.http.metrics_listen)
    )
    if not written & {"http.listen", "http.public_url"}:
        callbacks = any(DRIVER_DELIVERY[b.driver] == "callback" for b in settings.bridges.values())
        http = msgspec.structs.replace(http, listen="127.0.0.1:0" if callbacks else None)
    return msgspec.structs.replace(settings, ingress=ingress, smpp=smpp, http=http, api=api)


def _read_file(file: Path) -> tuple[Settings, frozenset[str]]:
    try:
        raw = file.read_bytes()
    except OSError as error:
        raise ConfigError(f"cannot read config {file}: {error.strerror}") from None
    # A TOML file is UTF-8 (TOML 1.0.0, "Spec"). Decoded here rather than by msgspec,
    # whose report of a bad byte differs between releases (0.23 calls it invalid TOML).
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"config {file} is not UTF-8 text (byte {error.start} cannot be decoded)"
        ) from None
    try:
        table = msgspec.toml.decode(text)
    except msgspec.DecodeError as error:
        raise ConfigError(f"config {file} is not valid TOML: {error}") from None
    unknown = unknown_keys(table, Settings) if isinstance(table, dict) else []
    if unknown:
        raise ConfigError(*(f"config {file}: {describe_unknown(key)}" for key in unknown))
    try:
        settings = msgspec.convert(table, Settings)
    except msgspec.ValidationError as error:
        where = _named_table_error(table) if isinstance(table, dict) else None
        raise ConfigError(f"config {file}: {where or _readable(error)}") from None
    return settings, frozenset(_written_keys(table, ""))


def _named_table_error(table: Mapping[str, object]) -> str | None:
    """msgspec says `accounts[...]` for a value inside a table of named tables: the
    problem again with the name, found by converting each named table alone."""
    for key, kind in (
        ("accounts", AccountSettings),
        ("bridges", BridgeConfig),
        ("pricing", PriceConfig),
    ):
        named = table.get(key)
        if not isinstance(named, dict):
            continue
        for name, value in named.items():
            try:
                msgspec.convert(value, kind)
            except msgspec.ValidationError as error:
                problem, sep, where = str(error).rpartition(" - at `$")
                if not sep:
                    return f"{key}.{name}: {error}"
                return f"{key}.{name}{where.rstrip('`')}: {problem}"
    return None


def _readable(error: msgspec.ValidationError) -> str:
    """msgspec's "Expected `int`, got `str` - at `$.journal.cache_mb`" as
    "journal.cache_mb: Expected `int`, got `str`"."""
    text = str(error)
    problem, sep, where = text.rpartition(" - at `$")
    if not sep:
        return text
    return f"{where.rstrip('`').lstrip('.')}: {problem}"


def _written_keys(table: Mapping[str, object], prefix: str) -> Iterator[str]:
    for key, value in table.items():
        yield f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _written_keys(value, f"{prefix}{key}.")


def check_settings(settings: Settings) -> tuple[list[str], list[str]]:
    """(errors, warnings) of resolved settings, one sentence each. An error stops
    `septet run`; a warning is logged at start and fails `septet config check` (a demo
    price or a callback URL no provider can reach is not ready for production)."""
    errors: list[str] = []
    warnings: list[str] = []
    try:
        validate(settings)
    except ConfigError as error:
        errors.extend(error.sentences)
    else:  # the routes as the daemon builds them (empty or repeated names)
        try:
            Router(*routes_for(settings), settings.bridges.keys())
        except ValueError as error:
            errors.append(f"routing: {error}")
    errors.extend(_listen_problems(settings))
    errors.extend(_tls_problems(settings))
    errors.extend(account_problems(settings))
    errors.extend(settings_problems(settings.cluster))
    for name, bridge in settings.bridges.items():
        errors.extend(_bridge_problems(name, bridge, settings))
    errors.extend(_pricing_problems(settings))
    errors.extend(_redis_problems(settings.cluster.redis))
    errors.extend(journal_problems(settings.journal))
    warnings.extend(notices(settings))
    if not settings.simulators.enabled:
        warnings.extend(_production_warnings(settings))
    return list(dict.fromkeys(errors)), warnings


def journal_problems(journal: JournalSettings) -> list[str]:
    """`[journal] backend` and `dsn` agree, and the PostgreSQL client is installed when it
    is needed (the extra `septet[postgresql]`). Reaching the database is the start's
    business: it says in one sentence when it cannot."""
    try:
        backend = journal_backend(journal.backend)
    except JournalError as error:
        return [str(error)]
    if backend is JournalBackend.SQLITE:
        if journal.dsn is not None:
            return [
                'journal.dsn is set, but journal.backend is "sqlite": set backend ='
                ' "postgresql" to use the database, or remove dsn.'
            ]
        return []
    problems: list[str] = []
    if journal.dsn is None:
        problems.append(
            'journal.backend is "postgresql", but journal.dsn is not set: give the database'
            ' as "postgresql://user@host:5432/dbname" (or "env:NAME").'
        )
    if journal.max_size_mb is not None:
        problems.append(
            "journal.max_size_mb caps the SQLite file; with PostgreSQL the database's"
            " storage is the server's to manage: remove it."
        )
    if importlib.util.find_spec("psycopg") is None:
        problems.append(
            'journal.backend is "postgresql", but the PostgreSQL client is not installed:'
            " pip install 'septet[postgresql]'"
        )
    elif journal.dsn is not None:
        from engine.journal.postgres import describe_dsn

        try:
            describe_dsn(journal.dsn)
        except JournalError as error:
            problems.append(str(error))
    return problems


def _redis_problems(url: str | None) -> list[str]:
    """`[cluster] redis` is a URL redis-py takes, and redis-py is installed (the extra
    `septet[cluster]`; a single node needs none of it). Reaching it is the daemon's
    business: an unreachable Redis pauses the bridges, it does not stop the start."""
    if url is None:
        return []
    scheme = urlsplit(url).scheme
    if scheme not in ("redis", "rediss", "unix"):  # what redis-py's from_url takes
        return [
            f"cluster.redis must be a redis://, rediss:// or unix:// URL"
            f" (redis://127.0.0.1:6379/0), not one starting {scheme or url[:20]!r}"
        ]
    if importlib.util.find_spec("redis") is None:
        return [
            "cluster.redis is set, but the Redis client is not installed:"
            " pip install 'septet[cluster]'"
        ]
    return []


def _tls_problems(settings: Settings) -> list[str]:
    """`[api] cert`/`key` loaded as the listener will load them, so that a missing file, a
    key that is not the certificate's or a passphrase-protected key stops the check, not
    the start of a listener."""
    cert, key = settings.api.cert, settings.api.key
    if cert is None or key is None:
        return []
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        # No passphrase prompt on a terminal: a protected key fails here like a wrong one.
        context.load_cert_chain(cert, key, password=lambda: b"")
    except (OSError, ssl.SSLError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else error
        return [f"api.cert '{cert}' and api.key '{key}' cannot be used for TLS: {reason}"]
    return []


def takes_callbacks(settings: Settings) -> bool:
    """Whether providers are given a callback URL (the daemon's `callback_url`)."""
    return bool(settings.http.public_url or settings.http.listen)


def routes_for(
    settings: Settings,
) -> tuple[dict[str, tuple[str, ...]], tuple[str, ...] | None]:
    """(prefix routes, default route): `[routing]` laid over the embedded table, or alone
    with `replace = true` (engine.config.RoutingSettings)."""
    routing = settings.routing
    written = {prefix: tuple(route) for prefix, route in routing.prefixes.items()}
    default = tuple(routing.default) if routing.default else None
    if routing.replace:
        return written, default
    names = set(settings.bridges)

    def kept(route: Sequence[str]) -> tuple[str, ...]:
        return tuple(bridge for bridge in route if bridge in names)

    routes = {prefix: kept(route) for prefix, route in default_routes().items() if kept(route)}
    routes.update(written)
    return routes, default or kept(DEFAULT_FALLBACK_ROUTE) or None


def _listen_problems(settings: Settings) -> Iterator[str]:
    addresses = {
        "http.listen": settings.http.listen,
        "http.metrics_listen": settings.http.metrics_listen,
        "api.listen": settings.api.listen,
        "ingress.tcp": settings.ingress.tcp,
        "smpp.listen": settings.smpp.listen,
    }
    for what, address in addresses.items():
        if address:
            try:
                split_host_port(address, what)
            except ConfigError as error:
                yield str(error)
    public_url = settings.http.public_url
    if public_url:
        parts = urlsplit(public_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            yield f"http.public_url {public_url!r} is not an http:// or https:// URL"


def bridge_base_url(bridge: BridgeConfig, simulators: bool) -> str | None:
    """Where a bridge's requests go: its `base_url`, else the simulators when they run,
    else the provider's production URL (None: the provider's document names none)."""
    if bridge.base_url:
        return bridge.base_url
    return None if simulators else DRIVER_BASE_URLS[bridge.driver]


def _bridge_problems(name: str, bridge: BridgeConfig, settings: Settings) -> Iterator[str]:
    base_url = bridge_base_url(bridge, settings.simulators.enabled)
    if base_url is None and not settings.simulators.enabled:
        yield (
            f"bridges.{name}.base_url is not set and {bridge.driver}'s document names no"
            " production address: set it to the one the provider gave the account"
        )
    elif base_url is not None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            yield f"bridges.{name}.base_url {base_url!r} is not an http:// or https:// URL"
    required = DRIVER_CREDENTIALS[bridge.driver](takes_callbacks(settings))
    missing = [key for key in required if not bridge.credentials.get(key)]
    if missing:
        keys = ", ".join(f"bridges.{name}.credentials.{key}" for key in missing)
        yield f"bridge {name} ({bridge.driver}) needs {keys}"
        return
    try:  # the driver's own checks of its options (bsg's tariff, routemobile's currency)
        build_driver(bridge.driver, driver_settings(name, bridge, settings, base_url or ""))
    except ValueError as error:
        yield f"bridges.{name}.options: {error}"


def driver_settings(
    name: str,
    bridge: BridgeConfig,
    settings: Settings,
    base_url: str,
    public_url: str | None = None,
) -> BridgeSettings:
    """What the bridge's driver is built from; `public_url` is the listener's address as
    providers reach it (the daemon knows its bound port), else `[http] public_url`."""
    public_url = public_url or settings.http.public_url
    if public_url is None and settings.http.listen:
        public_url = f"http://{settings.http.listen}"
    callback_url = f"{public_url.rstrip('/')}/dlr/{name}" if public_url else None
    tables = price_tables_for(settings)
    return BridgeSettings(
        base_url=base_url,
        credentials=dict(bridge.credentials),
        callback_url=callback_url,
        default_sender=bridge.default_sender,
        options=bridge.options,
        price_currency=tables[name].currency,
    )


def price_tables_for(settings: Settings) -> dict[str, PriceTable]:
    """Each bridge's `[pricing.<bridge>]` table, else its driver's demo prices."""
    demo = default_price_tables()
    return {
        name: price_table(settings.pricing[name])
        if name in settings.pricing
        else demo[bridge.driver]
        for name, bridge in settings.bridges.items()
    }


def _pricing_problems(settings: Settings) -> Iterator[str]:
    for name, config in settings.pricing.items():
        if name not in settings.bridges:
            yield f"pricing.{name} prices a bridge that is not configured"
        try:
            price_table(config)
        except ValueError as error:
            yield f"pricing.{name}: {error}"


def path_problems(settings: Settings) -> Iterator[str]:
    """The journal's and the log's directories: missing or not writable (`config check`;
    `septet run` finds them when it opens the files, with the journal's own sentence)."""
    places = {"journal.path": settings.journal.path, "log.file": settings.log.file}
    for what, path in places.items():
        if not path:
            continue
        directory = Path(path).parent
        if not directory.is_dir():
            yield f"{what} {path!r}: the directory {str(directory)!r} does not exist"
        elif not os.access(directory, os.W_OK | os.X_OK):
            yield f"{what} {path!r}: the directory {str(directory)!r} is not writable"


def _production_warnings(settings: Settings) -> Iterator[str]:
    demo = default_price_tables()
    for name, bridge in settings.bridges.items():
        if name not in settings.pricing:
            yield (
                f"bridge {name} has no [pricing.{name}] table: its costs are septet's demo"
                f" prices in {demo[bridge.driver].currency}, not the provider's"
            )
    callbacks = [n for n, b in settings.bridges.items() if DRIVER_DELIVERY[b.driver] == "callback"]
    if callbacks and not settings.http.public_url:
        yield (
            f"http.public_url is not set: {', '.join(callbacks)} would be told to call back"
            f" {settings.http.listen or 'nowhere (no http.listen)'}, an address no provider"
            " can reach; set it to the URL providers reach septet's listener by"
        )


def split_host_port(address: str, what: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not port.isascii() or int(port) > 65535:
        raise ConfigError(f"{what} {address!r} is not HOST:PORT (a port 0-65535)")
    return host.strip("[]") or "127.0.0.1", int(port)


@contextmanager
def bind_errors(key: str, address: str | None) -> Iterator[None]:
    """A listener that cannot bind (address in use, not this host's, not permitted) is a
    ConfigError naming the key and address, so `septet run` says it in one sentence. A
    bind inside a task group arrives as a group of OSErrors: the first one speaks."""
    try:
        yield
    except OSError as error:
        raise ConfigError(f"cannot listen on {key} {address}: {_os_reason(error)}") from None
    except BaseExceptionGroup as group:
        matched, rest = group.split(OSError)
        if matched is None or rest is not None:
            raise
        first: BaseException = matched
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        assert isinstance(first, OSError)
        raise ConfigError(f"cannot listen on {key} {address}: {_os_reason(first)}") from None


def _os_reason(error: OSError) -> str:
    # The C library's sentence: asyncio's own wraps it in one naming the address again.
    return os.strerror(error.errno) if error.errno else str(error)
