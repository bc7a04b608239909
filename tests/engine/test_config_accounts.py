"""[accounts.NAME] as a user writes it: every field, every error sentence, the demo account,
and the deprecated [[smpp.accounts]] form."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.accounts import AccountSettings, SendsmsLogin, SmppLogin
from engine.config import ConfigError, accounts_of, load_config, load_settings
from engine.log import configure_logging
from engine.webhooks.settings import AccountWebhooks
from tests.engine.test_log import restore_logging  # noqa: F401 - the fixture, by name

FULL = """
[ingress]
account = "acme"
require_auth = true

[accounts.acme]
api_key = "env:ACME_KEY"
allowed_senders = ["ACME", "+250788000000"]
messages_per_s = 50
burst = 100
daily_quota = 10000

[accounts.acme.smpp]
system_id = "acme01"
password = "env:ACME_SMPP"
bind_types = ["transceiver"]
data_coding_0 = "latin1"
data_coding_1 = "ascii"

[accounts.acme.sendsms]
username = "acmeweb"
password = "env:ACME_SENDSMS"

[accounts.shop]
api_key = "shop-key"
"""
ENV = {"ACME_KEY": "k-acme", "ACME_SMPP": "smpp-pw", "ACME_SENDSMS": "web-pw"}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "septet.toml"
    path.write_text(f'[journal]\npath = "{tmp_path / "septet.db"}"\n{text}')
    return path


def sentences(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text), environ=environ or {})
    return caught.value.sentences


def test_every_field_is_read_and_secrets_come_from_the_environment(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, FULL), environ=ENV)
    assert settings.accounts == {
        "acme": AccountSettings(
            api_key="k-acme",
            allowed_senders=["ACME", "+250788000000"],
            messages_per_s=50.0,
            burst=100.0,
            daily_quota=10_000,
            smpp=SmppLogin(
                system_id="acme01",
                password="smpp-pw",
                bind_types=["transceiver"],
                data_coding_0="latin1",
                data_coding_1="ascii",
            ),
            sendsms=SendsmsLogin(username="acmeweb", password="web-pw"),
        ),
        "shop": AccountSettings(api_key="shop-key"),
    }
    assert (settings.ingress.account, settings.ingress.require_auth) == ("acme", True)
    accounts = accounts_of(settings)
    assert accounts.default.name == "acme"
    assert accounts.by_api_key("shop-key") is accounts.get("shop")
    assert accounts.by_login("acmeweb", "web-pw") is accounts.get("acme")


def test_the_defaults_of_an_account(tmp_path: Path) -> None:
    text = '[accounts.a]\n[accounts.a.smpp]\npassword = "p"\n[accounts.a.sendsms]\npassword = "q"\n'
    accounts = accounts_of(load_settings(write(tmp_path, text), environ={}))
    account = accounts.default
    assert account.settings == AccountSettings(
        smpp=SmppLogin(password="p"),
        sendsms=SendsmsLogin(password="q"),
    )
    assert account.smpp is not None
    assert (account.smpp.system_id, account.smpp.bind_types) == (
        "a",
        ["transmitter", "receiver", "transceiver"],
    )
    assert account.sendsms_username == "a"  # the account's name
    assert account.limit.unlimited
    assert account.sender_allowed("ANYONE")


def test_no_accounts_is_the_demo_account_and_the_embedded_default_has_its_key(
    tmp_path: Path,
) -> None:
    from_file = accounts_of(load_settings(write(tmp_path, ""), environ={}))
    assert [a.name for a in from_file] == ["demo"]
    assert from_file.by_api_key("demo") is None  # a config file's demo has no API key
    embedded = accounts_of(load_settings(None, environ={}))
    assert embedded.by_api_key("demo") is embedded.default
    assert embedded.by_smpp("demo", "demo", "127.0.0.1", 0.0) is embedded.default


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[accounts.a]\napi_key = "env:NOPE"\n',
            "accounts.a.api_key names environment variable NOPE, which is not set",
        ),
        (
            '[accounts.a.smpp]\npassword = "env:NOPE"\n',
            "accounts.a.smpp.password names environment variable NOPE, which is not set",
        ),
        (
            '[accounts.a.sendsms]\npassword = "env:NOPE"\n',
            "accounts.a.sendsms.password names environment variable NOPE, which is not set",
        ),
        (
            '[accounts.a]\napi_key = ""\n',
            "accounts.a.api_key is empty: remove it, or give the account a key",
        ),
        (
            "[accounts.a]\nburst = 5\n",
            "accounts.a.burst needs messages_per_s (without it there is no limit)",
        ),
        (
            '[accounts.a]\nallowed_senders = ["THISSENDERISTOOLONG"]\n',
            "accounts.a.allowed_senders: 'THISSENDERISTOOLONG' is not 1 to 18 characters,"
            " as a sender is",
        ),
        ('[accounts.a.smpp]\npassword = ""\n', "accounts.a.smpp.password is empty"),
        ('[accounts.a.sendsms]\npassword = ""\n', "accounts.a.sendsms.password is empty"),
        (
            '[accounts.a]\napi_key = "same"\n[accounts.b]\napi_key = "same"\n',
            "accounts.b.api_key is also account 'a''s: each account needs an API key of its own",
        ),
        (
            '[accounts.a.smpp]\npassword = "p"\n'
            '[accounts.b.smpp]\nsystem_id = "a"\npassword = "q"\n',
            "accounts.b.smpp.system_id 'a' is also account 'a''s:"
            " each account needs a system_id of its own",
        ),
        (
            '[accounts.a.sendsms]\nusername = "b"\npassword = "p"\n'
            '[accounts.b.sendsms]\npassword = "q"\n',
            "accounts.b.sendsms.username 'b' is also account 'a''s:"
            " each account needs a username of its own",
        ),
        (
            '[accounts."a b"]\n',
            "accounts.'a b' is not an account name (1 to 64 of A-Z, a-z, 0-9, _, . and -)",
        ),
        (
            '[ingress]\naccount = "ghost"\n[accounts.a]\n',
            "ingress.account names account 'ghost', which is not configured",
        ),
        (
            '[accounts.a]\n[[smpp.accounts]]\nsystem_id = "x"\npassword = "y"\n',
            "[accounts] and the old [[smpp.accounts]] cannot both be set: write each SMPP login"
            " as [accounts.NAME.smpp] (docs/accounts.md)",
        ),
        (
            '[[smpp.accounts]]\nsystem_id = "x"\npassword = "y"\n'
            '[[smpp.accounts]]\nsystem_id = "x"\npassword = "z"\n',
            "smpp.accounts names system_id 'x' twice",
        ),
        (
            "[accounts.a]\ndaily_quota = 0\n",
            "accounts.a.daily_quota: Expected `int` >= 1",
        ),
        (
            "[accounts.a]\nmessages_per_s = -1\n",
            "accounts.a.messages_per_s: Expected `float` >= 0.0",
        ),
        (
            '[accounts.a.smpp]\npassword = "p"\nbind_types = ["sender"]\n',
            "accounts.a.smpp.bind_types[0]: Invalid enum value 'sender'",
        ),
    ],
)
def test_each_mistake_is_one_sentence_naming_the_account_and_field(
    tmp_path: Path, text: str, expected: str
) -> None:
    found = sentences(tmp_path, text)
    assert any(sentence.endswith(expected) for sentence in found), found


def test_an_unknown_account_key_is_named(tmp_path: Path) -> None:
    (found,) = sentences(tmp_path, '[accounts.a]\napi_kee = "x"\n')
    assert "accounts.<name>.api_kee" in found or "accounts.a.api_kee" in found, found


def test_several_problems_are_all_told(tmp_path: Path) -> None:
    found = sentences(tmp_path, '[accounts.a]\napi_key = ""\nburst = 1\n')
    assert found == (
        "accounts.a.api_key is empty: remove it, or give the account a key",
        "accounts.a.burst needs messages_per_s (without it there is no limit)",
    )


def test_the_first_account_is_the_default_unless_ingress_names_one(tmp_path: Path) -> None:
    text = "[accounts.first]\n[accounts.second]\n"
    assert accounts_of(load_settings(write(tmp_path, text), environ={})).default.name == "first"
    named = '[ingress]\naccount = "second"\n' + text
    assert accounts_of(load_settings(write(tmp_path, named), environ={})).default.name == "second"


@pytest.mark.usefixtures("restore_logging")
def test_account_secrets_are_never_logged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import structlog

    settings = load_settings(write(tmp_path, FULL), environ=ENV)
    configure_logging("json", "info")
    account = settings.accounts["acme"] if settings.accounts else None
    assert account is not None
    structlog.get_logger("test").info("account", settings=account, api_key=account.api_key)
    logged = capsys.readouterr().err
    assert "acme01" in logged  # the settings were logged, their secrets not
    for secret in ENV.values():
        assert secret not in logged


def test_an_account_that_is_not_a_table_is_named(tmp_path: Path) -> None:
    (found,) = sentences(tmp_path, '[accounts]\nacme = "x"\n')
    assert found.endswith("accounts.acme: Expected `object`, got `str`"), found


def test_an_account_has_webhooks_of_its_own_or_those_of_the_webhooks_section(
    tmp_path: Path,
) -> None:
    text = (
        '[webhooks]\nsecret = "shared"\n'
        '[accounts.acme.webhooks]\ndefault_url = "https://hooks.acme.example/in"\n'
        'allowed_hosts = ["hooks.acme.example"]\nsecret = "env:ACME_HOOKS"\n'
        "[accounts.shop]\n"
    )
    settings = load_settings(write(tmp_path, text), environ={"ACME_HOOKS": "acme-secret"})
    accounts = accounts_of(settings)
    acme, shop = accounts.get("acme"), accounts.get("shop")
    assert acme is not None
    assert shop is not None
    assert acme.webhooks == AccountWebhooks(
        default_url="https://hooks.acme.example/in",
        allowed_hosts=["hooks.acme.example"],
        secret="acme-secret",
    )
    assert shop.webhooks == AccountWebhooks(secret="shared")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[accounts.a.webhooks]\nsecret = "env:NOPE"\n',
            "accounts.a.webhooks.secret names environment variable NOPE, which is not set",
        ),
        (
            '[accounts.a.webhooks]\ndefault_url = "http://127.0.0.1:9/x"\nsecret = "s"\n',
            "accounts.a.webhooks.default_url: ",
        ),
    ],
)
def test_an_accounts_webhook_mistakes_name_it(tmp_path: Path, text: str, expected: str) -> None:
    found = sentences(tmp_path, text)
    assert any(expected in sentence for sentence in found), found
