"""bench.http_clients runs end to end in --quick mode and writes a results document."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from bench.http_clients import CLIENTS, SCENARIOS

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quick_run_writes_one_row_per_client_and_scenario(tmp_path: Path) -> None:
    out = tmp_path / "http_clients.json"
    # A subprocess: the bench pins its own process to a core, which must not be pytest's.
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.http_clients",
            "--quick",
            "--seconds",
            "0.1",
            "--repeats",
            "1",
            "--out",
            str(out),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert "req/s" in completed.stdout

    document = msgspec.json.decode(out.read_bytes())
    assert document["bench"] == "http_clients"
    assert document["quick"] is True
    rows = document["results"]
    assert {(row["client"], row["scenario"]) for row in rows} == {
        (client, scenario.name) for client in CLIENTS for scenario in SCENARIOS
    }
    for row in rows:
        assert row["requests"] > 0
        assert row["errors"] == 0
        assert row["requests_per_s"] > 0
        assert row["cpu_us_per_request"] > 0
        assert len(row["repeats"]) == 1
