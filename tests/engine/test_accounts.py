"""The account registry (engine.accounts): lookups by API key, auth line, sendsms login and
SMPP bind, with the failed-bind lock-out per (system_id, peer)."""

from __future__ import annotations

import pytest

from engine.accounts import (
    Account,
    Accounts,
    AccountSettings,
    BindRefusal,
    SendsmsLogin,
    SmppLogin,
    from_smpp_accounts,
)
from engine.smpp.settings import SmppAccount


def registry(
    *, default: str | None = None, max_failed_binds: int = 5, failed_bind_window_s: float = 300.0
) -> Accounts:
    return Accounts(
        {
            "acme": AccountSettings(
                api_key="acme-key",
                smpp=SmppLogin(password="acme-pw", bind_types=["transmitter"]),
                sendsms=SendsmsLogin(password="web-pw"),
            ),
            "shop": AccountSettings(
                api_key="shop-key",
                smpp=SmppLogin(system_id="shop01", password="shop-pw"),
                sendsms=SendsmsLogin(username="kannel", password="k-pw"),
            ),
            "bare": AccountSettings(),
        },
        default=default,
        max_failed_binds=max_failed_binds,
        failed_bind_window_s=failed_bind_window_s,
    )


def test_by_api_key() -> None:
    accounts = registry()
    assert accounts.by_api_key("acme-key") is accounts.get("acme")
    assert accounts.by_api_key("shop-key") is accounts.get("shop")
    assert accounts.by_api_key("acme-ke") is None
    assert accounts.by_api_key("") is None


def test_by_api_key_answers_the_same_when_a_key_is_given_again() -> None:
    accounts = registry()
    for _ in range(3):  # a matched key is remembered as given: still its account, only it
        assert accounts.by_api_key("acme-key") is accounts.get("acme")
        assert accounts.by_api_key("shop-key") is accounts.get("shop")
        assert accounts.by_api_key("acme-key ") is None
        assert accounts.by_api_key("acme-keY") is None


def test_by_name_and_key_is_an_auth_line() -> None:
    accounts = registry()
    assert accounts.by_name_and_key("acme", "acme-key") is accounts.get("acme")
    assert accounts.by_name_and_key("acme", "shop-key") is None  # another account's key
    assert accounts.by_name_and_key("nobody", "acme-key") is None
    assert accounts.by_name_and_key("bare", "") is None  # an account without a key


def test_by_login_is_kannels_username_and_password() -> None:
    accounts = registry()
    assert accounts.by_login("acme", "web-pw") is accounts.get("acme")  # username = name
    assert accounts.by_login("kannel", "k-pw") is accounts.get("shop")
    assert accounts.by_login("shop", "k-pw") is None  # its username is "kannel"
    assert accounts.by_login("acme", "wrong") is None
    assert accounts.by_login("bare", "") is None


def test_by_smpp_authenticates_a_bind() -> None:
    accounts = registry()
    assert accounts.by_smpp("acme", "acme-pw", "10.0.0.1", 0.0, "transmitter") is accounts.get(
        "acme"
    )
    assert accounts.by_smpp("shop01", "shop-pw", "10.0.0.1", 0.0) is accounts.get("shop")
    assert accounts.by_smpp("acme", "acme-pw", "10.0.0.1", 0.0, "receiver") is (
        BindRefusal.BIND_TYPE
    )
    assert accounts.by_smpp("acme", "nope", "10.0.0.1", 0.0) is BindRefusal.WRONG_PASSWORD
    assert accounts.by_smpp("ghost", "x", "10.0.0.1", 0.0) is BindRefusal.UNKNOWN_SYSTEM_ID
    assert accounts.by_smpp("bare", "", "10.0.0.1", 0.0) is BindRefusal.UNKNOWN_SYSTEM_ID


def test_failed_binds_lock_out_that_account_from_that_peer_only() -> None:
    accounts = registry(max_failed_binds=2, failed_bind_window_s=60.0)
    for at in (0.0, 1.0):
        assert accounts.by_smpp("acme", "guess", "10.0.0.1", at) is BindRefusal.WRONG_PASSWORD
    # Even the right password is refused now, from this peer, for this account...
    assert accounts.by_smpp("acme", "acme-pw", "10.0.0.1", 2.0) is BindRefusal.BLOCKED
    # ...but another peer, and another account from the same peer, still bind.
    assert isinstance(accounts.by_smpp("acme", "acme-pw", "10.0.0.2", 2.0), Account)
    assert isinstance(accounts.by_smpp("shop01", "shop-pw", "10.0.0.1", 2.0), Account)
    # Once the oldest failure leaves the window, the right password binds and clears it.
    assert isinstance(accounts.by_smpp("acme", "acme-pw", "10.0.0.1", 60.5), Account)
    assert accounts.by_smpp("acme", "guess", "10.0.0.1", 61.0) is BindRefusal.WRONG_PASSWORD
    assert isinstance(accounts.by_smpp("acme", "acme-pw", "10.0.0.1", 61.0), Account)


def test_the_default_account() -> None:
    assert registry().default.name == "acme"
    assert registry(default="shop").default.name == "shop"
    with pytest.raises(ValueError, match="'ghost' is not configured"):
        registry(default="ghost")
    with pytest.raises(ValueError, match="no accounts"):
        Accounts({})


def test_the_old_smpp_accounts_become_accounts() -> None:
    old = [SmppAccount(system_id="esme", password="pw", throughput=5.0, burst=10.0)]
    (account,) = Accounts(from_smpp_accounts(old))
    assert account.name == "esme"
    assert (account.limit.local.rate, account.limit.local.burst) == (5.0, 10.0)
    assert account.smpp == SmppAccount(system_id="esme", password="pw")


def test_an_account_never_shows_its_secrets() -> None:
    account = registry().get("acme")
    assert account is not None
    shown = f"{account!r} {account.settings!r}"
    assert "acme-key" not in shown
    assert "acme-pw" not in shown
    assert "web-pw" not in shown
