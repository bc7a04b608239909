"""Smoke test for bench.backlog_count: a tiny run counts every message it journaled."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from bench.backlog_count import main


def test_a_tiny_run_counts_what_it_journaled(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "backlog_count.json"
    assert main(["--quick", "--messages", "3000", "--out", str(out)]) == 0
    (row,) = msgspec.json.decode(out.read_bytes())["results"]
    assert row["messages"] == 3000
    assert row["accepted_counted"] == 3000
    assert row["journal_mib"] > 0
    assert "count_ms_min" in capsys.readouterr().out
