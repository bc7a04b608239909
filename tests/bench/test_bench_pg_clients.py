"""Smoke test for bench.pg_clients: a tiny run measures every case for both libraries."""

from __future__ import annotations

import math
from pathlib import Path

import msgspec
import pytest

from bench.pg_clients import CASES, Sizes, main

TINY = Sizes(repeats=1, group_operations=2, single_operations=3)


@pytest.mark.slow
def test_a_tiny_run_measures_every_case_for_both_libraries(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "pg_clients.json"
    assert main(["--quick", "--out", str(out)], sizes=TINY) == 0
    document = msgspec.json.decode(out.read_bytes())
    rows = document["results"]
    clients = {row["client"] for row in rows}
    assert {client.split()[0] for client in clients} == {"psycopg", "asyncpg"}
    assert len(clients) == 4  # each library by rows and by arrays
    assert {(row["case"], row["client"]) for row in rows} == {
        (f"{operation} {group}", client) for operation, group in CASES for client in clients
    }
    for row in rows:
        assert row["samples"] == 1
        assert row["ms_per_operation"] > 0
        assert math.isfinite(row["client_cpu_us_per_message"])
        assert row["server"].startswith("PostgreSQL 15")
    assert "claim 100" in capsys.readouterr().out
