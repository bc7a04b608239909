"""bench.api: its config is a daemon's with the API on, its bodies carry every message once,
and a tiny run goes through the daemon to the simulator with no error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from bench.api import API_KEY, BATCH, api_config, request_bodies
from bench.pipeline import render_toml
from engine.config import Settings, validate
from engine.models import submission_decoder

REPO = Path(__file__).resolve().parents[2]


def test_config_serves_the_api_to_one_account(tmp_path: Path) -> None:
    document = api_config(tmp_path, "http://127.0.0.1:1234", 5002, 5001)
    settings = msgspec.toml.decode(render_toml(document).encode(), type=Settings)
    validate(settings)
    assert settings.api.listen == "127.0.0.1:5002"
    assert settings.accounts is not None
    assert settings.accounts["bench"].api_key == API_KEY


def test_bodies_carry_every_message_once() -> None:
    single = request_bodies(250, "single")
    assert len(single) == 250
    assert {submission_decoder.decode(body).to for body in single} == {
        f"+91981{index:07d}" for index in range(250)
    }
    batches = [msgspec.json.decode(body)["messages"] for body in request_bodies(250, "batch")]
    assert [len(batch) for batch in batches] == [BATCH, BATCH, 50]
    assert len({line["to"] for batch in batches for line in batch}) == 250


@pytest.mark.slow
def test_a_tiny_run_reaches_the_provider_without_errors(tmp_path: Path) -> None:
    out = tmp_path / "api.json"
    completed = subprocess.run(
        [
            sys.executable,
            *("-m", "bench.api", "--quick", "-n", "200"),
            *("--concurrency", "4", "--out", str(out)),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,  # a loaded machine (CI) starts two daemons and two simulators
        check=False,
    )
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-2000:]
    rows = msgspec.json.decode(out.read_bytes())["results"]
    assert [row["mode"] for row in rows] == ["single", "batch"]
    for row in rows:
        assert row["messages"] == 200
        assert row["errors"] == {}, row
        assert row["msg_per_s"] > 0
        assert row["cpu_us_per_msg"] > 0
