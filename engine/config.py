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
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from bridges.registry import DRIVER_LIMITS
from engine.admission import check_sender, describe_refusals
from engine.ratelimit import RequestLimiter
from engine.smpp.server import SmppSettings

PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
PositiveInt = Annotated[int, msgspec.Meta(gt=0)]

DRIVERS = ("dsc", "routemobile", "bsg", "smsclub")


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file and the problem."""


class JournalSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    path: str = "septet.db"
    synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    # The most the journal file may grow to, in MiB (see the module docstring); None: no cap.
    max_size_mb: PositiveFloat | None = None
    # SQLite's page cache for the journal, in MiB: the most of the daemon's memory the
    # journal's pages may take (they fill it as the file grows past it, then it stays).
    cache_mb: PositiveInt = 32


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


class HttpSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    listen: str | None = "127.0.0.1:9750"
    # The URL providers use to reach the listener (callbacks); defaults to http://<listen>.
    public_url: str | None = None
    # A connection must complete its request head within this many seconds of opening,
    # and an idle keep-alive connection is closed after as long (aiohttp's keep-alive
    # timer, which runs from the connection's start): a client sending its headers byte
    # by byte (slowloris) cannot hold the listener.
    idle_timeout_s: PositiveFloat = 30.0
    # A request body (a provider's callback) must arrive within this many seconds.
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
    requests_burst: PositiveFloat = 100.0
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
    # message; unset, the provider's own (BSG: 60 s, PROVIDERS.md anti-abuse), and a
    # poll interval below it is raised to it.
    poll_interval_s: PositiveFloat = 30.0
    poll_max_interval_s: PositiveFloat = 600.0
    poll_floor_s: Annotated[float, msgspec.Meta(ge=0)] | None = None
    attempts_per_bridge: PositiveInt = 3


class RetrySettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    base_s: PositiveFloat = 0.5
    factor: PositiveFloat = 2.0
    max_delay_s: PositiveFloat = 300.0
    jitter: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.2


class ReportSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Delivery reports: a submitted message with no final report after `timeout_s` (or
    past its validity end, whichever is sooner) ends as UNKNOWN (engine.lifecycle)."""

    timeout_s: PositiveFloat = 72 * 3600.0


class EventSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The durable event feed (engine.feed, docs/events.md): events are kept `keep_s`
    seconds, then deleted by a background sweep (except those a webhook still owes)."""

    keep_s: PositiveFloat = 3 * 24 * 3600.0


class RoutingSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    prefixes: dict[str, list[str]] = msgspec.field(default_factory=dict)
    default: list[str] | None = None


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


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    journal: JournalSettings = JournalSettings()
    ingress: IngressSettings = IngressSettings()
    http: HttpSettings = HttpSettings()
    bridges: dict[str, BridgeConfig] = msgspec.field(default_factory=dict)
    routing: RoutingSettings = RoutingSettings()
    retry: RetrySettings = RetrySettings()
    reports: ReportSettings = ReportSettings()
    events: EventSettings = EventSettings()
    simulators: SimulatorSettings = SimulatorSettings()
    smpp: SmppSettings = SmppSettings()
    log: LogSettings = LogSettings()


def default_settings() -> Settings:
    """The embedded default: four bridges served by in-process simulators (DESIGN.md)."""
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
            # SMS Club allows 9 requests/s per account, status calls included (PROVIDERS.md):
            # at most 8 in any second, spread evenly, leaves room for jitter on the way.
            requests_per_s=8.0 if name == "smsclub" else 1000.0,
            requests_burst=1.0 if name == "smsclub" else 1000.0,
            # BSG: at most one poll per message a minute (its floor); the others at once.
            poll_interval_s=60.0 if name == "bsg" else 1.0,
        )
        for name in DRIVERS
    }
    return Settings(bridges=bridges, simulators=SimulatorSettings(enabled=True))


def _resolve_env(value: str, where: str, environ: Mapping[str, str]) -> str:
    if value.startswith("env:"):
        name = value[4:]
        if name not in environ:
            raise ConfigError(f"{where} names environment variable {name}, which is not set")
        return environ[name]
    return value


def resolve_secrets(settings: Settings, environ: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    bridges = {}
    for name, bridge in settings.bridges.items():
        credentials = {
            key: _resolve_env(value, f"bridges.{name}.credentials.{key}", env)
            for key, value in bridge.credentials.items()
        }
        bridges[name] = msgspec.structs.replace(bridge, credentials=credentials)
    accounts = [
        msgspec.structs.replace(
            account,
            password=_resolve_env(
                account.password, f"smpp.accounts.{account.system_id}.password", env
            ),
        )
        for account in settings.smpp.accounts
    ]
    smpp = msgspec.structs.replace(settings.smpp, accounts=accounts)
    return msgspec.structs.replace(settings, bridges=bridges, smpp=smpp)


def validate(settings: Settings) -> None:
    for name, bridge in settings.bridges.items():
        if not settings.simulators.enabled and not bridge.base_url:
            raise ConfigError(f"bridges.{name}.base_url is empty and simulators are off")
        _check_default_sender(name, bridge)
        try:
            RequestLimiter(bridge.requests_per_s, bridge.requests_burst)
        except ValueError as error:
            raise ConfigError(
                f"bridges.{name}: requests_burst {bridge.requests_burst:g} with requests_per_s"
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


def load_settings(path: str | Path | None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read a TOML file (or the embedded default when `path` is None)."""
    if path is None:
        settings = default_settings()
    else:
        file = Path(path)
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
            settings = msgspec.toml.decode(text, type=Settings)
        except msgspec.ValidationError as error:
            raise ConfigError(f"config {file}: {error}") from None
        except msgspec.DecodeError as error:
            raise ConfigError(f"config {file} is not valid TOML: {error}") from None
    settings = resolve_secrets(settings, environ)
    validate(settings)
    return settings


def split_host_port(address: str, what: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"{what} {address!r} is not HOST:PORT")
    return host.strip("[]") or "127.0.0.1", int(port)
