"""bench.api: its config is a daemon's with the API on (and webhooks to a receiver when
asked), its bodies carry every message once (a campaign's with one text) and ask for
reports only when told, and tiny runs go through the daemon to the simulator, and with
--webhooks every event to the receiver."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from bench.api import (
    API_KEY,
    BATCH,
    WEBHOOK_SECRET,
    ReceiverCount,
    api_config,
    event_rates,
    request_bodies,
)
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
    assert settings.accounts["bench"].webhooks is None


def test_config_with_webhooks_sends_every_event_to_the_receiver(tmp_path: Path) -> None:
    url = "http://127.0.0.1:5003/events"
    document = api_config(tmp_path, "http://127.0.0.1:1234", 5002, 5001, url)
    settings = msgspec.toml.decode(render_toml(document).encode(), type=Settings)
    validate(settings)
    assert settings.accounts is not None
    webhooks = settings.accounts["bench"].webhooks
    assert webhooks is not None
    assert webhooks.default_url == url
    assert webhooks.allowed_hosts == ["127.0.0.1"]
    assert webhooks.secret == WEBHOOK_SECRET


def test_bodies_carry_every_message_once() -> None:
    single = request_bodies(250, "single")
    assert len(single) == 250
    assert {submission_decoder.decode(body).to for body in single} == {
        f"+91981{index:07d}" for index in range(250)
    }
    batches = [msgspec.json.decode(body)["messages"] for body in request_bodies(250, "batch")]
    assert [len(batch) for batch in batches] == [BATCH, BATCH, 50]
    assert len({line["to"] for batch in batches for line in batch}) == 250
    assert len({line["text"] for batch in batches for line in batch}) == 250
    campaign = [msgspec.json.decode(body)["messages"] for body in request_bodies(250, "campaign")]
    assert [len(batch) for batch in campaign] == [BATCH, BATCH, 50]
    assert len({line["to"] for batch in campaign for line in batch}) == 250
    assert len({line["text"] for batch in campaign for line in batch}) == 1


def test_messages_ask_for_reports_only_when_told() -> None:
    for mode in ("single", "batch", "campaign"):
        for reports in (False, True):
            for body in request_bodies(150, mode, reports=reports):
                top = msgspec.json.decode(body)
                for line in top.get("messages", [top]):
                    assert submission_decoder.decode(msgspec.json.encode(line)).dlr is reports


@pytest.mark.slow
def test_a_tiny_run_reaches_the_provider_without_errors(tmp_path: Path) -> None:
    out = tmp_path / "api.json"
    completed = subprocess.run(
        [
            sys.executable,
            # 2,000: a campaign's daemon CPU is read from /proc in clock ticks (10 ms), and
            # 200 messages in batches of 100 now take less than one.
            *("-m", "bench.api", "--quick", "-n", "2000"),
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
    assert [row["mode"] for row in rows] == ["single", "batch", "campaign"]
    for row in rows:
        assert row["messages"] == 2000
        assert row["errors"] == {}, row
        assert row["msg_per_s"] > 0
        assert row["cpu_us_per_msg"] > 0
        assert row["daemon_busy"] > 0
        assert row["reports"] is False


@pytest.mark.slow
def test_a_tiny_webhooks_run_delivers_every_event(tmp_path: Path) -> None:
    out = tmp_path / "api.json"
    completed = subprocess.run(
        [
            sys.executable,
            *("-m", "bench.api", "--quick", "-n", "200", "--mode", "campaign", "--webhooks"),
            *("--rate", "1000"),
            *("--concurrency", "4", "--out", str(out)),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-2000:]
    without, with_webhooks = msgspec.json.decode(out.read_bytes())["results"]
    assert (without["webhooks"], with_webhooks["webhooks"]) == (False, True)
    assert without["rate"] == with_webhooks["rate"] == 1000
    assert without["errors"] == with_webhooks["errors"] == {}, (without, with_webhooks)
    assert "events" not in without
    assert without["reports"] is with_webhooks["reports"] is True
    # accepted, submitted and dlr of every message (the simulator reports each one)
    assert with_webhooks["events"] == 600
    assert with_webhooks["webhook_requests"] >= 600
    # 0.2 s of sending is no longer than the report delay: no window to count a rate in.
    assert with_webhooks["events_per_s"] >= 0
    assert with_webhooks["drain_s"] >= 0
    assert with_webhooks["send_ratio"] > 0


def test_events_per_s_counts_what_arrived_while_sending() -> None:
    # 10 s of sending from t=1000 (the report delay first), 5,000 events a second arriving
    # throughout, then the last reports up to 0.3 s after the provider took the last send.
    tenths = [(tenth, 500) for tenth in range(10_000, 10_100)] + [(10_100, 300), (10_102, 1)]
    count = ReceiverCount(
        events=sum(n for _, n in tenths),
        requests=0,
        first_at=1000.0,
        last_at=1010.25,
        tenths=tenths,
    )
    rates = event_rates(count, started=1000.0, ended=1010.0)
    assert rates == {"events_per_s": 5000.0, "drain_s": 0.25}
