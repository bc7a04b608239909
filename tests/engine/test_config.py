"""Config: TOML with unknown keys rejected by name, env secrets, the embedded default."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from engine.config import ConfigError, bridge_base_url, load_config, load_settings


def test_embedded_default_has_four_simulated_bridges() -> None:
    settings = load_settings(None, environ={})
    assert sorted(settings.bridges) == ["bsg", "dsc", "routemobile", "smsclub"]
    assert settings.simulators.enabled


def test_unknown_key_is_rejected_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "septet.toml"
    path.write_text('[journal]\npath = "x.db"\ncolour = "blue"\n')
    with pytest.raises(ConfigError, match="colour"):
        load_settings(path, environ={})


def test_secret_from_environment(tmp_path: Path) -> None:
    path = tmp_path / "septet.toml"
    path.write_text(
        '[bridges.b]\ndriver = "bsg"\nbase_url = "http://127.0.0.1:1"\n'
        'credentials = { api_key = "env:BSG_KEY" }\n'
    )
    settings = load_settings(path, environ={"BSG_KEY": "live_s3cret"})
    assert settings.bridges["b"].credentials["api_key"] == "live_s3cret"
    with pytest.raises(ConfigError, match="BSG_KEY") as caught:
        load_settings(path, environ={})
    assert "live_s3cret" not in str(caught.value)


def test_route_to_unknown_bridge_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "septet.toml"
    path.write_text(
        '[bridges.b]\ndriver = "bsg"\nbase_url = "http://127.0.0.1:1"\n'
        '[routing.prefixes]\n"44" = ["nope"]\n'
    )
    with pytest.raises(ConfigError, match="nope"):
        load_settings(path, environ={})


def test_invalid_toml_is_a_sentence(tmp_path: Path) -> None:
    path = tmp_path / "septet.toml"
    path.write_text("[journal\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(path, environ={})


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_settings(tmp_path / "absent.toml", environ={})


def test_config_that_is_not_utf8_is_a_sentence(tmp_path: Path) -> None:
    path = tmp_path / "septet.toml"
    path.write_bytes(b"\x80[journal]\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_settings(path, environ={})


def test_smpp_congestion_wait_is_read_and_may_not_be_negative(tmp_path: Path) -> None:
    assert load_settings(None).smpp.congestion_wait_s == 2.0
    path = tmp_path / "septet.toml"
    path.write_text("[smpp]\ncongestion_wait_s = 0.5\n")
    assert load_settings(path).smpp.congestion_wait_s == 0.5
    path.write_text("[smpp]\ncongestion_wait_s = -1\n")
    with pytest.raises(ConfigError, match="congestion_wait_s"):
        load_settings(path)


def test_journal_cache_is_read_and_must_be_positive(tmp_path: Path) -> None:
    assert load_settings(None).journal.cache_mb == 32
    path = tmp_path / "septet.toml"
    path.write_text("[journal]\ncache_mb = 4\n")
    assert load_settings(path).journal.cache_mb == 4
    path.write_text("[journal]\ncache_mb = 0\n")
    with pytest.raises(ConfigError, match="cache_mb"):
        load_settings(path)


def test_journal_backend_is_sqlite_and_another_is_one_sentence(tmp_path: Path) -> None:
    assert load_settings(None).journal.backend == "sqlite"
    path = tmp_path / "septet.toml"
    path.write_text('[journal]\nbackend = "sqlite"\n')
    assert load_settings(path).journal.backend == "sqlite"
    path.write_text('[journal]\nbackend = "postgres"\n')
    with pytest.raises(ConfigError) as refused:
        load_settings(path)
    assert str(refused.value) == (
        "journal.backend 'postgres' is not a journal backend of this septet; it has 'sqlite',"
        " 'postgresql'."
    )


@pytest.mark.parametrize(
    ("bridge", "sentence"),
    [
        (
            '[bridges.uk]\ndriver = "bsg"\ndefault_sender = "VERYLONGSENDER1"\n',
            "bridges.uk.default_sender: default_sender 'VERYLONGSENDER1' is 15 characters; "
            "uk takes at most 11 alphanumeric",
        ),
        (
            '[bridges.uk]\ndriver = "bsg"\ndefault_sender = "+447700900123"\n',
            "bridges.uk.default_sender: default_sender '+447700900123' starts with '+'; "
            "uk takes a numeric sender as digits only",
        ),
        (
            '[bridges.in]\ndriver = "routemobile"\ndefault_sender = "SEPTET-ALERTS"\n',
            "bridges.in.default_sender: default_sender 'SEPTET-ALERTS' is 13 characters; "
            "in takes at most 11 alphanumeric",
        ),
        (
            '[bridges.ua]\ndriver = "smsclub"\ndefault_sender = "380501234567"\n',
            "bridges.ua.default_sender: default_sender '380501234567' is 12 digits; "
            "ua takes at most 11 in a numeric sender",
        ),
    ],
)
def test_a_default_sender_that_breaks_its_bridges_limits_is_refused_at_start(
    tmp_path: Path, bridge: str, sentence: str
) -> None:
    path = tmp_path / "septet.toml"
    path.write_text(bridge + 'base_url = "http://127.0.0.1:1"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    # One sentence per problem: this one among them (the bridge also lacks credentials).
    assert sentence in caught.value.sentences


def test_a_bridge_option_may_raise_a_limit_to_the_newer_documents_value(tmp_path: Path) -> None:
    path = tmp_path / "septet.toml"
    fifteen_digits = (
        '[bridges.uk]\ndriver = "bsg"\nbase_url = "http://127.0.0.1:1"\n'
        'credentials = { api_key = "test_key" }\ndefault_sender = "447700900123456"\n'
    )
    path.write_text(fifteen_digits)
    with pytest.raises(ConfigError, match="is 15 digits; uk takes at most 14"):
        load_settings(path, environ={})
    path.write_text(fifteen_digits + 'options = { max_numeric_originator = "15" }\n')
    assert load_settings(path, environ={}).bridges["uk"].default_sender == "447700900123456"
    path.write_text(fifteen_digits + 'options = { max_numeric_originator = "16" }\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert str(caught.value) == (
        "bridges.uk.options: bsg option max_numeric_originator must be a whole number 14–15, "
        "not '16'"
    )


def test_a_request_burst_that_would_pass_the_per_second_limit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "septet.toml"
    bridge = (
        '[bridges.club]\ndriver = "smsclub"\nbase_url = "http://127.0.0.1:1"\n'
        'credentials = { token = "t" }\n'
    )
    path.write_text(f"{bridge}requests_per_s = 8.0\nrequests_burst = 16.0\n")
    with pytest.raises(ConfigError, match=r"bridges\.club: requests_burst 16 .* between 1 and 8"):
        load_settings(path, environ={})
    path.write_text(f"{bridge}requests_per_s = 8.0\nrequests_burst = 8.0\n")
    assert load_settings(path, environ={}).bridges["club"].requests_burst == 8.0


def test_polling_settings_are_read_and_the_floor_defaults_to_the_providers() -> None:
    bridges = load_settings(None, environ={}).bridges
    assert (bridges["bsg"].poll_interval_s, bridges["bsg"].poll_floor_s) == (60.0, None)
    assert bridges["smsclub"].poll_max_interval_s == 600.0
    assert (bridges["smsclub"].requests_per_s, bridges["smsclub"].requests_burst) == (8.0, 1.0)


def test_every_unknown_key_is_named_with_the_nearest_real_one(tmp_path: Path) -> None:
    path = tmp_path / "septet.toml"
    path.write_text(
        '[journal]\npth = "x.db"\n[bridges.b]\ndrivr = "bsg"\n[[smpp.accounts]]\nsystem_idd = "a"\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert caught.value.sentences == (
        f"config {path}: journal.pth is not a setting septet knows (did you mean journal.path?)",
        f"config {path}: bridges.b.drivr is not a setting septet knows"
        " (did you mean bridges.b.driver?)",
        f"config {path}: smpp.accounts[0].system_idd is not a setting septet knows"
        " (did you mean smpp.accounts[0].system_id?)",
    )


def test_every_problem_is_one_sentence_naming_its_key(tmp_path: Path) -> None:
    path = tmp_path / "septet.toml"
    path.write_text(
        '[http]\nlisten = "localhost"\n[ingress]\ntcp = "127.0.0.1:99999"\n'
        '[bridges.rw]\ndriver = "dsc"\ncredentials = { api_key = "env:DSC_KEY",'
        ' username = "env:DSC_USER", password = "p" }\n'
        '[bridges.in]\ndriver = "routemobile"\ncredentials = { username = "u", password = "p" }\n'
        '[pricing.nowhere]\ncurrency = "EUR"\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    # Environment variables first (every one), then the rest once they are read.
    assert caught.value.sentences == (
        "bridges.rw.credentials.api_key names environment variable DSC_KEY, which is not set",
        "bridges.rw.credentials.username names environment variable DSC_USER, which is not set",
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={"DSC_KEY": "k", "DSC_USER": "u"})
    assert caught.value.sentences == (
        "http.listen 'localhost' is not HOST:PORT (a port 0-65535)",
        "ingress.tcp '127.0.0.1:99999' is not HOST:PORT (a port 0-65535)",
        "bridge rw (dsc) needs bridges.rw.credentials.callback_username,"
        " bridges.rw.credentials.callback_password",
        "bridges.in.base_url is not set and routemobile's document names no production"
        " address: set it to the one the provider gave the account",
        "pricing.nowhere prices a bridge that is not configured",
    )


def test_a_bridge_without_base_url_goes_to_the_production_address_its_document_names(
    tmp_path: Path,
) -> None:
    path = tmp_path / "septet.toml"
    path.write_text(
        '[bridges.eu]\ndriver = "bsg"\ncredentials = { api_key = "live_k" }\n'
        '[pricing.eu]\ncurrency = "EUR"\ndefault = 0.05\n'
    )
    loaded = load_config(path, environ={})
    bridge = loaded.settings.bridges["eu"]
    assert bridge_base_url(bridge, simulators=False) == "https://api.bsg.world"
    assert bridge_base_url(bridge, simulators=True) is None  # the simulators, when on
    # Polled: no callback, so no public_url is needed; the price table is there.
    assert loaded.warnings == ()


def test_pricing_is_read_and_a_bridge_without_prices_is_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "septet.toml"
    path.write_text(
        '[http]\npublic_url = "https://sms.example.com"\n'
        '[bridges.rw]\ndriver = "dsc"\ncredentials = { api_key = "k", username = "u",'
        ' password = "p", callback_username = "cu", callback_password = "cp" }\n'
        '[bridges.eu]\ndriver = "bsg"\ncredentials = { api_key = "live_k" }\n'
        '[pricing.rw]\ncurrency = "RWF"\nper = "message"\nprefixes = { "250" = 20 }\n'
    )
    loaded = load_config(path, environ={})
    assert loaded.settings.pricing["rw"].per == "message"
    assert loaded.warnings == (
        "bridge eu has no [pricing.eu] table: its costs are septet's demo prices in EUR,"
        " not the provider's",
    )
    path.write_text(path.read_text() + '[pricing.eu]\ncurrency = "eur"\n')
    with pytest.raises(ConfigError, match=r"pricing\.eu\.currency: Expected `str` matching"):
        load_config(path, environ={})


def test_webhook_secret_comes_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "septet.toml"
    path.write_text(
        '[webhooks]\ndefault_url = "https://hooks.example.com/sms"\nsecret = "env:HOOK_KEY"\n'
        'allowed_hosts = ["hooks.example.com"]\nretry_for_s = 3600.0\n[events]\nkeep_s = 86400.0\n'
    )
    settings = load_settings(path, environ={"HOOK_KEY": "whsec_1"})
    assert settings.webhooks.secret == "whsec_1"
    assert settings.webhooks.account().default_url == "https://hooks.example.com/sms"
    assert settings.events.keep_s == 86400.0
    with pytest.raises(ConfigError, match=re.escape("webhooks.secret names environment variable")):
        load_settings(path, environ={})


@pytest.mark.parametrize(
    ("url", "sentence"),
    [
        (
            "http://10.0.0.5/hook",
            "webhooks.default_url: callback_url host '10.0.0.5' is a private address",
        ),
        ("ftp://hooks.example.com/", "callback_url must be an http or https URL"),
    ],
)
def test_a_default_url_septet_may_not_call_stops_the_start(
    tmp_path: Path, url: str, sentence: str
) -> None:
    path = tmp_path / "septet.toml"
    path.write_text(f'[webhooks]\ndefault_url = "{url}"\nsecret = "s"\n')
    with pytest.raises(ConfigError, match=re.escape(sentence)):
        load_settings(path, environ={})


def test_cluster_redis_is_read_from_the_environment_and_unset_by_default(tmp_path: Path) -> None:
    assert load_settings(None, environ={}).cluster.redis is None
    path = tmp_path / "septet.toml"
    path.write_text('[cluster]\nredis = "env:SEPTET_REDIS"\n')
    url = "redis://:pw@10.0.0.5:6380/1"
    assert load_settings(path, environ={"SEPTET_REDIS": url}).cluster.redis == url
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert caught.value.sentences == (
        "cluster.redis names environment variable SEPTET_REDIS, which is not set",
    )


def test_a_cluster_redis_that_is_no_redis_url_is_one_sentence(tmp_path: Path) -> None:
    path = tmp_path / "septet.toml"
    path.write_text('[cluster]\nredis = "http://127.0.0.1:6379"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert caught.value.sentences == (
        "cluster.redis must be a redis://, rediss:// or unix:// URL (redis://127.0.0.1:6379/0),"
        " not one starting 'http'",
    )


def test_the_journal_dsn_is_read_from_the_environment(tmp_path: Path) -> None:
    assert load_settings(None, environ={}).journal.backend == "sqlite"
    path = tmp_path / "septet.toml"
    path.write_text('[journal]\nbackend = "postgresql"\ndsn = "env:SEPTET_DSN"\n')
    dsn = "postgresql://septet:pw@10.0.0.5:5432/sms"
    settings = load_settings(path, environ={"SEPTET_DSN": dsn})
    assert (settings.journal.backend, settings.journal.dsn) == ("postgresql", dsn)
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert caught.value.sentences == (
        "journal.dsn names environment variable SEPTET_DSN, which is not set",
    )


@pytest.mark.parametrize(
    ("journal", "sentence"),
    [
        (
            'backend = "postgresql"',
            'journal.backend is "postgresql", but journal.dsn is not set: give the database'
            ' as "postgresql://user@host:5432/dbname" (or "env:NAME").',
        ),
        (
            'dsn = "postgresql://127.0.0.1/sms"',
            'journal.dsn is set, but journal.backend is "sqlite": set backend = "postgresql"'
            " to use the database, or remove dsn.",
        ),
        (
            'backend = "postgresql"\ndsn = "host=127.0.0.1 port"',
            "The journal's dsn is not a PostgreSQL connection string",
        ),
        (
            'backend = "postgresql"\ndsn = "postgresql://127.0.0.1/sms"\nmax_size_mb = 100',
            "journal.max_size_mb caps the SQLite file; with PostgreSQL the database's storage"
            " is the server's to manage: remove it.",
        ),
    ],
)
def test_a_journal_backend_and_dsn_that_do_not_agree_are_one_sentence(
    tmp_path: Path, journal: str, sentence: str
) -> None:
    path = tmp_path / "septet.toml"
    path.write_text(f"[journal]\n{journal}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert len(caught.value.sentences) == 1
    assert caught.value.sentences[0].startswith(sentence)
    assert "\n" not in caught.value.sentences[0]
