"""The SSRF rules on callback URLs: a golden table of URLs and the sentence each refusal
reads, the address kinds (IPv4, IPv6, IPv4-mapped), and the delivery-time check on what a
name resolves to (the real resolver: "localhost" and literal addresses only)."""

from __future__ import annotations

import ipaddress

import pytest

from engine.webhooks import hosts
from engine.webhooks.settings import AccountWebhooks

OPEN = AccountWebhooks(secret="s3cret")
LISTED = AccountWebhooks(secret="s3cret", allowed_hosts=["app.example.com", "*.hooks.example.com"])
LOCAL = AccountWebhooks(secret="s3cret", allowed_hosts=["127.0.0.1", "localhost", "::1"])


@pytest.mark.parametrize(
    ("url", "account", "sentence"),
    [
        ("https://app.example.com/events", OPEN, None),
        ("http://app.example.com:8080/e?x=1", OPEN, None),
        ("https://93.184.215.14/hook", OPEN, None),
        ("https://[2606:2800:21f:cb07:6820:80da:af6b:8b2c]/hook", OPEN, None),
        ("ftp://app.example.com/x", OPEN, "callback_url must be an http or https URL"),
        ("app.example.com/x", OPEN, "callback_url must be an http or https URL"),
        ("https:///path", OPEN, "callback_url has no host"),
        ("http://host:port/x", OPEN, "callback_url has no host"),
        (
            "https://user:pw@app.example.com/x",
            OPEN,
            "callback_url must not carry a user name or password",
        ),
        (
            "http://127.0.0.1:8080/hook",
            OPEN,
            "callback_url host '127.0.0.1' is a loopback address; septet calls only public"
            " addresses unless the account's webhook allowed_hosts lists the host",
        ),
        (
            "http://localhost/hook",
            OPEN,
            "callback_url host 'localhost' is a loopback address; septet calls only public"
            " addresses unless the account's webhook allowed_hosts lists the host",
        ),
        ("http://api.localhost/hook", OPEN, "callback_url host 'api.localhost' is a loopback"),
        ("http://10.1.2.3/hook", OPEN, "callback_url host '10.1.2.3' is a private address"),
        ("http://192.168.0.10/", OPEN, "is a private address"),
        ("http://172.16.5.4/", OPEN, "is a private address"),
        ("http://169.254.169.254/latest/meta-data", OPEN, "is a link-local address"),
        ("http://0.0.0.0/", OPEN, "is a unspecified address"),
        ("http://224.0.0.1/", OPEN, "is a multicast address"),
        ("http://100.64.0.1/", OPEN, "is a non-public address"),
        ("http://[::1]/hook", OPEN, "callback_url host '::1' is a loopback address"),
        ("http://[fd00::1]/hook", OPEN, "is a private address"),
        ("http://[fe80::1]/hook", OPEN, "is a link-local address"),
        ("http://[::]/hook", OPEN, "is a unspecified address"),
        ("http://[ff02::1]/hook", OPEN, "is a multicast address"),
        ("http://[::ffff:127.0.0.1]/hook", OPEN, "callback_url host '::ffff:127.0.0.1'"),
        ("http://[::ffff:10.0.0.1]/hook", OPEN, "is a private address"),
        ("https://app.example.com/x", LISTED, None),
        ("https://a.hooks.example.com/x", LISTED, None),
        (
            "https://evil.example.net/x",
            LISTED,
            "callback_url host 'evil.example.net' is not in the account's webhook allowed_hosts",
        ),
        ("https://hooks.example.com/x", LISTED, "is not in the account's webhook allowed_hosts"),
        ("http://127.0.0.1:8080/hook", LOCAL, None),  # listed exactly: allowed
        ("http://localhost:8080/hook", LOCAL, None),
        ("http://[::1]:8080/hook", LOCAL, None),
        ("http://127.0.0.2/hook", LOCAL, "is not in the account's webhook allowed_hosts"),
        (
            "https://app.example.com/x",
            AccountWebhooks(),
            "callback_url needs a webhook secret for the account, and it has none",
        ),
    ],
)
def test_accept_time_rules(url: str, account: AccountWebhooks, sentence: str | None) -> None:
    refusal = hosts.check_url(url, account)
    if sentence is None:
        assert refusal is None
    else:
        assert refusal is not None
        assert sentence in hosts.describe(refusal)


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("8.8.8.8", None),
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("10.0.0.1", "private"),
        ("169.254.1.1", "link-local"),
        ("224.0.0.251", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("100.64.1.1", "non-public"),
        ("2001:4860:4860::8888", None),
        ("::1", "loopback"),
        ("fc00::5", "private"),
        ("fe80::5", "link-local"),
        ("ff05::2", "multicast"),
        ("::", "unspecified"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:192.168.1.1", "private"),
        ("::ffff:8.8.8.8", None),
    ],
)
def test_address_kinds(address: str, kind: str | None) -> None:
    assert hosts.address_kind(ipaddress.ip_address(address)) == kind


def test_a_public_name_resolving_to_a_private_address_is_refused_at_delivery() -> None:
    # DNS may change after the accept: what the name resolves to now is judged.
    private = [ipaddress.ip_address("10.9.8.7")]
    refusal = hosts.judge_addresses("app.example.com", private, OPEN)
    assert refusal is not None
    assert hosts.describe(refusal) == (
        "callback_url host 'app.example.com' (10.9.8.7) is a private address; septet calls"
        " only public addresses unless the account's webhook allowed_hosts lists the host"
    )
    mixed = [ipaddress.ip_address("93.184.215.14"), ipaddress.ip_address("::ffff:127.0.0.1")]
    assert hosts.judge_addresses("app.example.com", mixed, OPEN) is not None
    named = AccountWebhooks(secret="s", allowed_hosts=["app.example.com"])
    assert hosts.judge_addresses("app.example.com", private, named) is None
    unresolved = hosts.judge_addresses("nowhere.invalid", [], OPEN)
    assert unresolved is not None
    assert hosts.describe(unresolved) == (
        "callback_url host 'nowhere.invalid' does not resolve to an address"
    )


@pytest.mark.anyio
async def test_delivery_time_check_resolves_the_name() -> None:
    assert await hosts.check_resolved("http://127.0.0.1:9/hook", LOCAL) is None
    assert await hosts.check_resolved("http://localhost:9/hook", LOCAL) is None
    refusal = await hosts.check_resolved("http://127.0.0.1:9/hook", OPEN)
    assert refusal is not None
    assert refusal.rule is hosts.Rule.ADDRESS
    # A name the allow-list takes by wildcard but that resolves to loopback is refused.
    wildcard = AccountWebhooks(secret="s", allowed_hosts=["*.localhost"])
    refusal = await hosts.check_resolved("http://api.localhost:9/hook", wildcard)
    assert refusal is not None
    assert "loopback" in hosts.describe(refusal)


@pytest.mark.parametrize(
    ("url", "literal"),
    [
        ("http://127.0.0.1:8080/h", True),
        ("http://[::1]/h", True),
        ("https://93.184.215.14/", True),
        ("https://app.example.com/", False),
        ("http://localhost/", False),
        ("ftp://127.0.0.1/", False),
    ],
)
def test_urls_naming_an_address_need_no_dns(url: str, literal: bool) -> None:
    # The worker remembers the delivery-time check of these (engine.webhooks.worker).
    assert hosts.names_an_address(url) is literal
