"""Smoke test for bench.cluster_rates: a short run with two processes prints and writes
every part (the rates held, the cost of a turn, a backlog on a slow bridge)."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from bench.cluster_rates import busiest_window, main


def test_the_busiest_window_counts_units_in_any_half_open_second() -> None:
    second = 1_000_000
    points = [(0, 2), (500_000, 3), (second, 4), (second + 400_000, 1)]
    # [0.5 s, 1.5 s) holds 3 + 4 + 1; the grant at 0 has left it at 1 s.
    assert busiest_window(points) == 8
    assert busiest_window([(0, 5)]) == 5


@pytest.mark.slow
def test_a_short_run_prints_and_writes_both_parts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cluster_rates.json"
    arguments = ["--quick", "--processes", "2", "--calls", "50", "--repeats", "1"]
    assert main([*arguments, "--out", str(out)]) == 0
    rows = msgspec.json.decode(out.read_bytes())["results"]
    rates = {row["bridge"]: row for row in rows if row["part"] == "rates"}
    assert set(rates) == {"requests", "messages"}
    for row in rates.values():
        assert 0 < row["total"] <= row["expected"]
        assert row["busiest_window"] <= row["limit"]
        assert len(row["grants_per_process"]) == 2
    costs = {row["gate"]: row for row in rows if row["part"] == "cost"}
    assert set(costs) == {"local", "redis"}
    assert costs["redis"]["server_cpu_us"] > 0
    assert costs["local"]["server_cpu_us"] == 0
    [backlog] = [row for row in rows if row["part"] == "backlog"]
    assert backlog["grants"] > 0
    assert backlog["script_calls"] >= backlog["grants"]
    printed = capsys.readouterr().out
    assert "cost of one turn" in printed
    assert "busiest 1 s" in printed
    assert "backlog: 100 askers on a 8/s bridge" in printed
