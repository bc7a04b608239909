"""bench.simulators --quick runs end to end and writes its JSON results."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quick_run_writes_one_result_per_provider(tmp_path: Path) -> None:
    out = tmp_path / "simulators.json"
    completed = subprocess.run(
        [sys.executable, "-m", "bench.simulators", "--quick", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert "req/s" in completed.stdout
    document = msgspec.json.decode(out.read_bytes())
    assert document["bench"] == "simulators"
    assert document["quick"] is True
    results = document["results"]
    assert [result["provider"] for result in results] == ["dsc", "routemobile", "bsg", "smsclub"]
    for result in results:
        assert result["generator"] in ("wrk", "builtin")
        assert result["requests"] > 0
        assert result["requests_per_s"] > 0
        # The target is judged per CPU-second of the simulator, which noise cannot fake.
        assert result["requests_per_cpu_s"] > 0
        assert result["non_2xx"] == 0
        # Every measured send was accepted (in-flight requests at the end may add a few).
        assert result["accepted"] >= result["requests"]
