"""Accounts: who a message belongs to, however it came in, and what that account may do.

One `[accounts.NAME]` table per application (docs/accounts.md). Every front door names
the account of what it accepts:

    NDJSON socket   an auth line ({"auth": {"account": ..., "api_key": ...}}), else the
                    listeners' account (`[ingress] account`, or the only account)
    stdin           the default account (`Accounts.default`)
    SMPP            the bind's system_id and password (`Accounts.by_smpp`)
    HTTP API        the API key (`Accounts.by_api_key`)
    sendsms         Kannel's username and password (`Accounts.by_login`)

Secrets are compared with hmac.compare_digest and never logged (engine.log redacts
every configured one). An API key is found by the SHA-256 of the key given (a dict
lookup whose time says nothing about the key), then compared in constant time. A key that
matched is remembered as given (at most one per account), so a client's next request finds
its account without the hash; it is still compared in constant time.

The limits (allowed senders, messages per second, a daily quota) are enforced by the
one accept path, engine.ingress.accept; this module only holds them. Pure: no I/O.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Annotated

import msgspec

from engine.account_limits import AccountLimit
from engine.smpp.auth import BindGuard, bind_key
from engine.smpp.settings import BindType, SmppAccount
from engine.smpp.text import Alphabet
from engine.webhooks.settings import AccountWebhooks

NonNegativeFloat = Annotated[float, msgspec.Meta(ge=0)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
PositiveInt = Annotated[int, msgspec.Meta(gt=0)]

# The account of the embedded default and of a config file with no [accounts].
DEMO_ACCOUNT = "demo"


class SmppLogin(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """`[accounts.NAME.smpp]`: the account's SMPP login. `system_id` defaults to the
    account's name; `data_coding_0`/`_1` as engine.smpp.settings.SmppAccount says."""

    system_id: str | None = None
    password: str
    bind_types: list[BindType] = msgspec.field(
        default_factory=lambda: ["transmitter", "receiver", "transceiver"]
    )
    data_coding_0: Alphabet = "gsm"
    data_coding_1: Alphabet = "gsm"

    def __repr__(self) -> str:  # never the password (a logged struct is its repr)
        return f"SmppLogin(system_id={self.system_id!r}, bind_types={self.bind_types!r})"


class SendsmsLogin(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """`[accounts.NAME.sendsms]`: Kannel's sendsms `username`/`password` for the account;
    `username` defaults to the account's name."""

    username: str | None = None
    password: str

    def __repr__(self) -> str:  # never the password
        return f"SendsmsLogin(username={self.username!r})"


class AccountSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """`[accounts.NAME]`. Unset limits are no limit.

    `messages_per_s` and `burst` meter messages (one per recipient) across every door
    of the account; `burst` defaults to max(1, messages_per_s). `daily_quota` counts the
    messages accepted per UTC day, durably (the journal). `allowed_senders`: the exact
    `from` values the account may use; empty allows any (a message without `from` takes
    its bridge's default sender, which is always allowed).
    """

    api_key: str | None = None
    allowed_senders: list[str] = msgspec.field(default_factory=list)
    messages_per_s: NonNegativeFloat = 0.0
    burst: PositiveFloat | None = None
    daily_quota: PositiveInt | None = None
    smpp: SmppLogin | None = None
    sendsms: SendsmsLogin | None = None
    # `[accounts.NAME.webhooks]`; unset, the account uses `[webhooks]`'s default_url,
    # allowed_hosts and secret.
    webhooks: AccountWebhooks | None = None
    # Keep the durable event feed of the account's messages (docs/events.md). Unset: kept
    # when the account has an api_key, the only way to read it (the HTTP API).
    feed: bool | None = None

    @property
    def keeps_feed(self) -> bool:
        return self.api_key is not None if self.feed is None else self.feed

    def __repr__(self) -> str:  # never the API key or a password
        return (
            f"AccountSettings(api_key={'[redacted]' if self.api_key else None},"
            f" allowed_senders={self.allowed_senders!r}, messages_per_s={self.messages_per_s!r},"
            f" burst={self.burst!r}, daily_quota={self.daily_quota!r}, smpp={self.smpp!r},"
            f" sendsms={self.sendsms!r}, webhooks={'set' if self.webhooks else None},"
            f" feed={self.feed!r})"
        )


def demo_accounts(*, api_key: str | None) -> dict[str, AccountSettings]:
    """The demo account: SMPP demo/demo as before accounts, and with `api_key` (the
    embedded default gives it "demo"; for the demo only) that key and the Kannel sendsms
    login demo/demo (docs/http-api.md)."""
    sendsms = None if api_key is None else SendsmsLogin(password="demo")  # noqa: S106
    return {
        DEMO_ACCOUNT: AccountSettings(
            api_key=api_key,
            smpp=SmppLogin(password="demo"),  # noqa: S106 - the documented demo login (docs/design.md)
            sendsms=sendsms,
        )
    }


def from_smpp_accounts(old: list[SmppAccount]) -> dict[str, AccountSettings]:
    """The deprecated `[smpp] accounts = [...]` form: one account per entry, named by its
    system_id, its throughput and burst as the account's messages_per_s and burst."""
    accounts: dict[str, AccountSettings] = {}
    for entry in old:
        accounts[entry.system_id] = AccountSettings(
            messages_per_s=entry.throughput,
            burst=entry.burst,
            smpp=SmppLogin(
                system_id=entry.system_id,
                password=entry.password,
                bind_types=list(entry.bind_types),
                data_coding_0=entry.data_coding_0,
                data_coding_1=entry.data_coding_1,
            ),
        )
    return accounts


def api_key_digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def secret_matches(given: str, expected: str) -> bool:
    """Constant time in the content of the strings (hmac.compare_digest)."""
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


@dataclass(eq=False)
class Account:
    """One configured account while septet runs: its settings, its messages/s limit (shared
    by every door, and with [cluster] redis by every node: engine.account_limits), its SMPP
    login as the SMPP server reads it (None: no SMPP) and its webhook settings (its own,
    else `[webhooks]`'s; engine.webhooks)."""

    name: str
    settings: AccountSettings
    fallback_webhooks: AccountWebhooks | None = field(default=None, repr=False)
    webhooks: AccountWebhooks | None = field(init=False)
    limit: AccountLimit = field(init=False)
    smpp: SmppAccount | None = field(init=False)
    allowed_senders: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        rate = self.settings.messages_per_s
        burst = self.settings.burst or max(1.0, rate)
        self.limit = AccountLimit(rate, burst)
        self.allowed_senders = frozenset(self.settings.allowed_senders)
        self.webhooks = self.settings.webhooks or self.fallback_webhooks
        login = self.settings.smpp
        self.smpp = (
            None
            if login is None
            else SmppAccount(
                system_id=login.system_id or self.name,
                password=login.password,
                bind_types=list(login.bind_types),
                data_coding_0=login.data_coding_0,
                data_coding_1=login.data_coding_1,
            )
        )

    @property
    def sendsms_username(self) -> str | None:
        login = self.settings.sendsms
        return None if login is None else login.username or self.name

    def sender_allowed(self, sender: str | None) -> bool:
        return sender is None or not self.allowed_senders or sender in self.allowed_senders

    def __repr__(self) -> str:  # never the secrets of its settings
        return f"Account({self.name!r})"


class BindRefusal(enum.Enum):
    """Why `Accounts.by_smpp` found no account; engine.smpp.connection maps it to a status."""

    BLOCKED = enum.auto()  # too many failed binds from this peer for this system_id
    UNKNOWN_SYSTEM_ID = enum.auto()
    WRONG_PASSWORD = enum.auto()
    BIND_TYPE = enum.auto()  # the account may not bind this way


class Accounts:
    """The registry: every account by name, API key, SMPP system_id and sendsms username,
    and the default one (stdin's, and the NDJSON listeners' without an auth line)."""

    def __init__(
        self,
        accounts: Mapping[str, AccountSettings],
        *,
        default: str | None = None,
        max_failed_binds: int = 5,
        failed_bind_window_s: float = 300.0,
        webhooks: AccountWebhooks | None = None,
    ) -> None:
        """`default` names the default account; None: the first account. ValueError when
        there is none, or `default` is not one of them (engine.config checks it first).
        `webhooks`: those of accounts without their own (`[webhooks]`)."""
        if not accounts:
            raise ValueError("there are no accounts")
        self._by_name = {
            name: Account(name, settings, webhooks) for name, settings in accounts.items()
        }
        name = default if default is not None else next(iter(self._by_name))
        if name not in self._by_name:
            raise ValueError(f"the default account {name!r} is not configured")
        self.default = self._by_name[name]
        self._by_key = {
            api_key_digest(a.settings.api_key): a
            for a in self._by_name.values()
            if a.settings.api_key
        }
        # API keys as given that matched their account's (by_api_key): one per account at most.
        self._by_matched_key: dict[str, Account] = {}
        self._by_system_id = {a.smpp.system_id: a for a in self._by_name.values() if a.smpp}
        self._by_username = {
            a.sendsms_username: a for a in self._by_name.values() if a.sendsms_username
        }
        self.guard = BindGuard(max_failed_binds, failed_bind_window_s)

    def __iter__(self) -> Iterator[Account]:
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    def get(self, name: str) -> Account | None:
        return self._by_name.get(name)

    def by_api_key(self, key: str) -> Account | None:
        """The account whose API key is `key`, or None."""
        account = self._by_matched_key.get(key)
        if account is None:
            account = self._by_key.get(api_key_digest(key))
        if account is None or account.settings.api_key is None:
            return None
        if not secret_matches(key, account.settings.api_key):
            return None
        self._by_matched_key[key] = account
        return account

    def by_name_and_key(self, name: str, key: str) -> Account | None:
        """The account `name` if `key` is its API key (an NDJSON auth line), else None."""
        account = self._by_name.get(name)
        expected = account.settings.api_key if account is not None else None
        # Still compare when there is no such account: a wrong name costs the same time.
        matched = secret_matches(key, expected if expected else key + "\x00")
        return account if matched and expected else None

    def by_login(self, username: str, password: str) -> Account | None:
        """The account whose sendsms login is `username`/`password` (Kannel), or None."""
        account = self._by_username.get(username)
        login = account.settings.sendsms if account is not None else None
        matched = secret_matches(password, login.password if login else password + "\x00")
        return account if matched and login is not None else None

    def by_smpp(
        self,
        system_id: str,
        password: str,
        peer: str,
        now: float,
        bind_type: BindType | None = None,
    ) -> Account | BindRefusal:
        """The account an SMPP bind authenticates as, or why not. Failed binds count per
        (system_id, peer): after `max_failed_binds` within the window the pair is BLOCKED
        until the oldest leaves it (engine.smpp.auth); a success clears the count."""
        account = self._by_system_id.get(system_id)
        key = bind_key(system_id, account is not None, peer)
        if self.guard.blocked(key, now):
            return BindRefusal.BLOCKED
        login = account.smpp if account is not None else None
        # Still compare for an unknown system_id: it costs the same time as a known one.
        matched = secret_matches(password, login.password if login else password + "\x00")
        if login is None:
            self.guard.failed(key, now)
            return BindRefusal.UNKNOWN_SYSTEM_ID
        if not matched:
            self.guard.failed(key, now)
            return BindRefusal.WRONG_PASSWORD
        assert account is not None
        if bind_type is not None and bind_type not in login.bind_types:
            return BindRefusal.BIND_TYPE
        self.guard.succeeded(key)
        return account
