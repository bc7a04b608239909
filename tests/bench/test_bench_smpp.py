"""bench.smpp: its daemon config is valid, its PDUs are well formed, --quick runs end to end."""

from __future__ import annotations

import argparse
from pathlib import Path

import msgspec
import pytest

from bench.smpp import (
    RECIPIENT_FORMAT,
    TEMPLATE_RECIPIENT,
    _submit_template,
    _window_size,
    main,
)
from engine.smpp import pdu as p
from engine.smpp.codec import HEADER


def test_the_template_carries_its_recipient_where_the_client_writes_it() -> None:
    template, offset = _submit_template()
    assert len(RECIPIENT_FORMAT % 1234567) == len(TEMPLATE_RECIPIENT)
    template[offset : offset + len(TEMPLATE_RECIPIENT)] = RECIPIENT_FORMAT % 42
    length, command_id, _, _ = HEADER.unpack_from(template)
    assert length == len(template)
    assert command_id == p.SUBMIT_SM
    assert b"250780000042\x00" in template


def test_window_flag_parses_window_and_count() -> None:
    assert _window_size("64=1000") == (64, 1000)
    with pytest.raises(argparse.ArgumentTypeError):
        _window_size("64")
    with pytest.raises(argparse.ArgumentTypeError):
        _window_size("0=10")


@pytest.mark.slow
def test_quick_run_accepts_everything_and_reaches_the_provider(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "smpp.json"
    # The smoke test of the bench running end to end: a few messages per window do.
    windows = ["--window", "1=100", "--window", "64=1000"]
    assert main(["--quick", *windows, "--out", str(out)]) == 0
    document = msgspec.json.decode(out.read_bytes())
    assert document["bench"] == "smpp"
    assert document["quick"] is True
    rows = {row["window"]: row for row in document["results"]}
    assert sorted(rows) == [1, 64]
    for row in rows.values():
        assert row["accepted"] == row["messages"]
        assert row["reached_provider"] == row["messages"]
        assert row["per_s"] > 0
        assert row["provider_per_s"] > 0
        assert row["seconds_to_provider"] >= row["seconds_to_accept"] > 0
        assert row["daemon_cpu_us_per_submit"] > 0
        assert row["daemon_log_errors"] == 0
    assert "submit_sm, window 64" in capsys.readouterr().out
