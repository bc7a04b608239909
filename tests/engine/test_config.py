"""Config: TOML with unknown keys rejected by name, env secrets, the embedded default."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import ConfigError, load_settings


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
    assert str(caught.value) == sentence


def test_a_bridge_option_may_raise_a_limit_to_the_newer_documents_value(tmp_path: Path) -> None:
    path = tmp_path / "septet.toml"
    fifteen_digits = (
        '[bridges.uk]\ndriver = "bsg"\nbase_url = "http://127.0.0.1:1"\n'
        'default_sender = "447700900123456"\n'
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
    bridge = '[bridges.club]\ndriver = "smsclub"\nbase_url = "http://127.0.0.1:1"\n'
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
