"""Smoke test for bench.smpp: a tiny run starts the engine child, prints its table and
writes the results file."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from bench.smpp import main


def test_a_tiny_run_writes_both_windows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "smpp.json"
    assert main(["--quick", "--out", str(out)], sizes={1: 20, 64: 300}) == 0
    document = msgspec.json.decode(out.read_bytes())
    assert document["bench"] == "smpp"
    rows = {row["window"]: row for row in document["results"]}
    assert rows[1]["accepted"] == 20
    assert rows[64]["accepted"] == 300
    assert rows[64]["throttled"] == 0
    assert rows[64]["per_s"] > 0
    assert "submit_sm, window 64" in capsys.readouterr().out
