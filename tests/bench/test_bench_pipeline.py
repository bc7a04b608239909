"""bench.pipeline: its config and load are what the daemon accepts, and --quick runs end to end."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

from bench.loadgen import Goal, LoadShape, Tally, build_lines, chunk_lines
from bench.pipeline import _aggregate, daemon_config, render_toml
from engine.config import Settings, validate
from engine.models import submission_decoder

REPO = Path(__file__).resolve().parents[2]


def test_rendered_config_is_a_valid_daemon_config(tmp_path: Path) -> None:
    document = daemon_config(
        tmp_path,
        sim_url="http://127.0.0.1:1234",
        tcp_port=5000,
        http_port=5001,
        bridges=["dsc", "routemobile"],
        pool=7,
        overrides={"dsc": {"requests_per_s": 200.0, "max_recipients": 1}},
    )
    settings = msgspec.toml.decode(render_toml(document).encode(), type=Settings)
    validate(settings)
    assert settings.journal.path == str(tmp_path / "journal.db")
    assert settings.ingress.tcp == "127.0.0.1:5000"
    assert settings.http.listen == "127.0.0.1:5001"
    assert not settings.smpp.listen
    assert settings.simulators.enabled is False
    assert settings.routing.prefixes == {"250": ["dsc"], "91": ["routemobile"]}
    assert settings.bridges["dsc"].requests_per_s == 200.0
    assert settings.bridges["dsc"].max_recipients == 1
    assert settings.bridges["routemobile"].pool == 7
    assert settings.bridges["dsc"].credentials["callback_username"] == "septet"


def test_lines_carry_every_recipient_once_routed_by_prefix() -> None:
    shape = LoadShape(bridges=("dsc", "bsg"), recipients_per_line=3, texts="same")
    lines = build_lines(shape, 10)
    submissions = [submission_decoder.decode(line) for line in lines]
    recipients = [to for s in submissions for to in (s.to if isinstance(s.to, list) else [s.to])]
    assert len(recipients) == 10
    assert len(set(recipients)) == 10
    assert [r[:4] for r in recipients[:3]] == ["+250"] * 3
    assert [r[:3] for r in recipients[3:6]] == ["+44"] * 3
    assert len({s.text for s in submissions}) == 1
    assert b"".join(chunk_lines(lines, chunk_bytes=100)) == b"".join(lines)


def test_distinct_ucs2_texts_and_schedule() -> None:
    shape = LoadShape(
        bridges=("smsclub",), texts="distinct", encoding="ucs2", schedule_at="2030-01-01T00:00:00Z"
    )
    submissions = [submission_decoder.decode(line) for line in build_lines(shape, 4)]
    assert len({s.text for s in submissions}) == 4
    assert all(not s.text.isascii() for s in submissions)
    assert all(s.schedule_at == dt.datetime(2030, 1, 1, tzinfo=dt.UTC) for s in submissions)


def test_goal_counts_failures_and_rejected_lines_as_answers() -> None:
    tally = Tally(track=True)
    tally.add(
        b'{"event":"accepted","id":null,"msg_id":"1","ts":"2026-01-01T00:00:00Z","bridge":"dsc"}\n'
        b'{"event":"rejected","id":null,"ts":"2026-01-01T00:00:00Z","error":"bad","line":2}\n'
        b'{"event":"submitted","id":null,"msg_id":"1","ts":"2026-01-01T00:00:00.5Z"}\n'
    )
    goal = Goal(messages=2, recipients_per_line=1, until="dlr")
    assert goal.submits_done(tally)
    assert not goal.done(tally)
    tally.add(b'{"event":"dlr","id":null,"msg_id":"1","ts":"2026-01-01T00:00:01Z"}\n')
    tally.add(b'{"event":"dlr","id":null,"msg_id":"1","ts":"2026-01-01T00:00:02Z"}\n')
    assert goal.done(tally)
    assert tally.dlr == 1  # a second report of the same message is not a second message
    assert tally.submitted_at["1"] - tally.accepted_at["1"] == pytest.approx(0.5)
    assert tally.bridge_of["1"] == "dsc"
    assert tally.errors == {"bad": 1}


@pytest.mark.slow
def test_quick_run_loses_nothing_and_writes_results(tmp_path: Path) -> None:
    out = tmp_path / "pipeline.json"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.pipeline",
            "--quick",
            "-n",
            "300",
            "--scenario",
            "unbatched-dlr",
            "--scenario",
            "latency",
            "--out",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "msg/s" in completed.stdout
    document = msgspec.json.decode(out.read_bytes())
    assert document["bench"] == "pipeline"
    assert document["quick"] is True
    results = document["results"]
    assert [r["scenario"] for r in results] == ["unbatched-dlr", "latency"]
    for result in results:
        assert result["complete"] is True
        assert result["messages"] == 300
        assert result["lost"] == 0
        assert result["accepted"] == 300
        assert result["submitted"] + result["failed"] == 300
        assert result["messages_per_s"] > 0
        assert result["cpu_us_per_message"] > 0
        assert result["peak_rss_mb"] > 0
        for key in ("p50", "p95", "p99"):
            assert result["submit_latency_ms"][key] >= 0
        assert Path(result["plot"]).is_file()
    with_reports = results[0]
    assert with_reports["dlr"] + with_reports["failed"] == 300
    for key in ("p50", "p95", "p99"):
        assert with_reports["dlr_latency_ms"][key] >= 0
    latency = results[1]
    # Submit-only: the lines asked for no delivery report, and none came.
    assert latency["dlr"] == 0
    assert latency["mean_batch"] == {"dsc": 1.0}
    assert latency["model_messages_per_s"] == pytest.approx(50 * 1 / 0.05)


def test_repeated_runs_report_medians_and_the_worst_losses() -> None:
    def run(per_s: float, p50: float | None, lost: int) -> dict[str, Any]:
        return {
            "scenario": "unbatched",
            "messages_per_s": per_s,
            "submit_latency_ms": {"p50": p50},
            "errors": {},
            "lost": lost,
            "failed": 0,
            "rejected": 0,
            "daemon_log_errors": 0,
            "complete": True,
            "plot": "first.png" if per_s == 3.0 else None,
        }

    merged = _aggregate([run(3.0, 10.0, 0), run(1.0, None, 2), run(2.0, 30.0, 0)])
    assert merged["messages_per_s"] == 2.0
    assert merged["submit_latency_ms"] == {"p50": 20.0}
    assert merged["lost"] == 2
    assert merged["scenario"] == "unbatched"
    assert merged["plot"] == "first.png"
    assert merged["runs"] == 3
    assert len(merged["per_run"]) == 3
