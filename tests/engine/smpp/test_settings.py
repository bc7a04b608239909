"""The `[smpp]` section: what each account's data_coding 0 and 1 mean, as a user writes it."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import ConfigError, accounts_of, load_settings
from engine.smpp.settings import SmppAccount


def write(tmp_path: Path, accounts: str) -> Path:
    path = tmp_path / "septet.toml"
    path.write_text(f'[journal]\npath = "{tmp_path / "septet.db"}"\n{accounts}')
    return path


def test_data_coding_0_and_1_default_to_gsm() -> None:
    account = SmppAccount(system_id="demo", password="demo")
    assert (account.data_coding_0, account.data_coding_1) == ("gsm", "gsm")
    assert [account.coding(value) for value in (0, 1, 3, 8)] == ["gsm", "gsm", "latin1", "ucs2"]


def test_an_account_says_what_data_coding_0_and_1_mean(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        '[[smpp.accounts]]\nsystem_id = "kannel"\npassword = "k"\ndata_coding_0 = "latin1"\n'
        '[[smpp.accounts]]\nsystem_id = "ia5"\npassword = "i"\ndata_coding_1 = "ascii"\n',
    )
    accounts = accounts_of(load_settings(config, environ={}))
    kannel, ia5 = (account.smpp for account in accounts)
    assert kannel is not None
    assert ia5 is not None
    assert [kannel.coding(value) for value in (0, 1)] == ["latin1", "gsm"]
    assert [ia5.coding(value) for value in (0, 1)] == ["gsm", "ascii"]


def test_an_unknown_alphabet_is_a_config_error(tmp_path: Path) -> None:
    config = write(
        tmp_path, '[[smpp.accounts]]\nsystem_id = "x"\npassword = "x"\ndata_coding_0 = "utf-8"\n'
    )
    with pytest.raises(ConfigError, match="data_coding_0"):
        load_settings(config, environ={})
