"""The webhook settings: an account's part (embeddable per account) and the worker's. Pure."""

from __future__ import annotations

from typing import Annotated

import msgspec

PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
PositiveInt = Annotated[int, msgspec.Meta(gt=0)]
Fraction = Annotated[float, msgspec.Meta(ge=0, le=1)]


class AccountWebhooks(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One account's webhooks. `default_url`: where the events of its messages that name
    no `callback_url` go (none: only those that name one). `allowed_hosts`: when set, the
    only hosts a callback URL may name ("example.com", or "*.example.com" for its
    subdomains); a loopback, private or link-local address (or a name that resolves to
    one) is refused unless listed here exactly. `secret`: the HMAC key of the signature,
    usually "env:NAME"; a callback URL is refused while the account has none."""

    default_url: str | None = None
    allowed_hosts: list[str] = msgspec.field(default_factory=list)
    secret: str | None = None


class WebhookSettings(AccountWebhooks, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """`[webhooks]`: the default account's part (until accounts have their own) and the
    delivery worker's: at most `concurrency` POSTs at once on its own connection pool,
    each bounded by `connect_timeout_s` + `timeout_s`; a failed one is tried again after
    `base_s`, doubling up to `max_delay_s` (± `jitter` of it), until `retry_for_s` after
    the event, then given up."""

    concurrency: PositiveInt = 32
    timeout_s: PositiveFloat = 10.0
    connect_timeout_s: PositiveFloat = 5.0
    retry_for_s: PositiveFloat = 24 * 3600.0
    base_s: PositiveFloat = 1.0
    max_delay_s: PositiveFloat = 3600.0
    jitter: Fraction = 0.2

    def account(self) -> AccountWebhooks:
        """The account part alone (what `[accounts.NAME]` will hold)."""
        return AccountWebhooks(
            default_url=self.default_url, allowed_hosts=self.allowed_hosts, secret=self.secret
        )
