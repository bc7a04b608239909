"""Smoke test for bench.journal: a tiny run prints its table and writes the results file."""

from __future__ import annotations

import math
from pathlib import Path

import msgspec
import pytest

from bench.journal import Sizes, main

TINY = Sizes(handoff_calls=50, single_messages=128, batched_messages=800, backlog=20_000)


def test_a_tiny_run_writes_every_case(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "journal.json"
    assert main(["--quick", "--out", str(out)], sizes=TINY) == 0
    document = msgspec.json.decode(out.read_bytes())
    assert document["bench"] == "journal"
    cases = {row["case"]: row for row in document["results"]}
    accepted = cases["accept, groups of 1, 64 concurrent callers"]
    assert accepted["messages"] == 128
    assert accepted["per_s"] > 0
    assert cases["accept, groups of 100, 8 concurrent callers"]["messages"] == 800
    writes = cases["claim + submitted + final, batches of 100, 8 at once"]
    assert writes["messages"] == 928  # everything accepted above went through
    due_cases = [row for case, row in cases.items() if case.startswith("due(")]
    assert len(due_cases) == 2
    assert all(math.isfinite(row["ms_per_call"]) for row in due_cases)
    assert "accept, groups of 100" in capsys.readouterr().out
