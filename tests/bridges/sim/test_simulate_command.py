"""`septet simulate` as a user runs it: a real process, its `listening on` line, SIGTERM."""

from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from engine.commands import simulate

REPO = Path(__file__).resolve().parents[3]


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    simulate.add_arguments(parser)
    return parser.parse_args(argv)


def test_flags_build_the_config() -> None:
    args = parse(
        "dsc",
        "--latency-ms", "3",
        "--fail-rate", "0.1",
        "--faults", "5xx=2,reset_after",
        "--dlr-delay", "0.1",
        "--seed", "9",
        "--routemobile-dlr-url", "http://127.0.0.1:9750/dlr/routemobile",
        "--set", "smsclub_rate_limit=null",
        "--set", "bsg_pending_status=sent",
    )  # fmt: skip
    config = simulate.build_config(args)
    assert config.latency_ms == 3
    assert config.faults == {"5xx": 2.0, "reset_after": 1.0}
    assert (config.dlr_delay_s, config.seed) == (0.1, 9)
    assert config.routemobile_dlr_url == "http://127.0.0.1:9750/dlr/routemobile"
    assert config.smsclub_rate_limit is None
    assert config.bsg_pending_status == "sent"


def test_unknown_provider_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    args = parse("dsc", "sinch")
    assert simulate.run(args, argparse.ArgumentParser()) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert "unknown provider 'sinch'" in error


def test_bad_flag_value_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert simulate.run(parse("dsc", "--faults", "meteor"), argparse.ArgumentParser()) == 2
    assert "meteor" in capsys.readouterr().err


def test_serves_until_sigterm_then_exits_0() -> None:
    command = [sys.executable, "-m", "engine", "simulate", "dsc", "bsg", "--port", "0"]
    with subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            match = re.fullmatch(r"listening on (http://127\.0\.0\.1:\d+)\n", line)
            assert match, line
            reply = httpx.post(
                f"{match.group(1)}/rest/sms/create",
                headers={"X-API-KEY": "test_demo"},
                json={
                    "destination": "phone",
                    "msisdn": "380501234567",
                    "reference": "cli_1",
                    "originator": "ACME",
                    "body": "Hello",
                },
            )
            assert reply.json()["error"] == "0"
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=10) == 0
        finally:
            if process.poll() is None:
                process.kill()
