"""Smoke test for bench.retention: a tiny run through a real daemon prunes what ended."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from bench.retention import main


@pytest.mark.slow
def test_a_tiny_run_prunes_the_messages_that_ended(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "retention.json"
    # A second of feed: enough for the bench to run end to end and pruning to show.
    argv = ["--messages", "1000", "--rate", "1000", "--keep-s", "1", "--sample-s", "0.5"]
    assert main([*argv, "--settle-s", "3", "--out", str(out)]) == 0
    (row,) = msgspec.json.decode(out.read_bytes())["results"]
    assert row["reported"] == 1000
    # Every message ended, and retention deleted rows of them (the bench asserts no speed).
    assert row["pruned_messages"] > 0
    assert row["messages_left_in_journal"] < 1000
    assert row["minutes"][0]["sent"] == 1000
    assert "journal MiB" in capsys.readouterr().out
