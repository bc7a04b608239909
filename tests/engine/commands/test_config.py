"""`septet config example|check` as processes: the example loads as it is, and the check
names every problem in one sentence (exit 2) or prints each provider's callback URL
(exit 0), binding nothing."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from engine.config import load_config

SEPTET = [sys.executable, "-m", "engine"]
# The environment variables the example names, with values.
EXAMPLE_ENV = {
    "DSC_API_KEY": "dsc-key",
    "DSC_USERNAME": "acme",
    "DSC_PASSWORD": "dsc-password",
    "DSC_CALLBACK_PASSWORD": "dsc-callback-password",
    "RM_USERNAME": "acme",
    "RM_PASSWORD": "rm-password",
    "RM_CALLBACK_TOKEN": "rm-callback-token-123",
    "BSG_API_KEY": "live_bsgkey",
    "SMSCLUB_TOKEN": "smsclub-token",
    "SMPP_ACME_PASSWORD": "smpp-password",
}


def septet(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in EXAMPLE_ENV} | (env or {})
    return subprocess.run(
        [*SEPTET, *args], capture_output=True, text=True, timeout=60, check=False, env=environ
    )


def write_example(tmp_path: Path) -> Path:
    example = septet("config", "example")
    assert example.returncode == 0, example.stderr
    path = tmp_path / "septet.toml"
    # Its journal in the test's directory; everything else exactly as printed.
    path.write_text(example.stdout.replace('path = "septet.db"', f'path = "{tmp_path}/s.db"'))
    return path


def test_the_example_loads_as_it_is_and_checks_ready_with_every_callback_url(
    tmp_path: Path,
) -> None:
    path = write_example(tmp_path)
    loaded = load_config(path, environ=EXAMPLE_ENV, strict=True)
    assert sorted(loaded.settings.bridges) == ["bsg", "dsc", "routemobile", "smsclub"]
    assert sorted(loaded.settings.pricing) == ["bsg", "dsc", "routemobile", "smsclub"]
    assert loaded.warnings == ()
    checked = septet("config", "check", str(path), env=EXAMPLE_ENV)
    assert checked.returncode == 0, checked.stderr
    assert checked.stderr == ""
    out = checked.stdout
    assert f"{path}: ready" in out
    # dsc: the production address from its document; the callback URL septet sends.
    assert "dsc (dsc) sends to https://bulksms.digitalservicescenter.rw" in out
    assert "callback to https://sms.example.com/dlr/dsc (septet sends it" in out
    # Route Mobile: the URL to register on the account, with its token.
    assert (
        "register https://sms.example.com/dlr/routemobile?token=rm-callback-token-123"
        " on the provider's account" in out
    )
    assert "bsg (bsg) sends to https://api.bsg.world" in out
    assert out.count("polled; no callback URL") == 2  # bsg, smsclub
    assert "SMPP: 127.0.0.1:2775" in out


def test_the_example_without_its_environment_names_every_variable(tmp_path: Path) -> None:
    checked = septet("config", "check", str(write_example(tmp_path)))
    assert checked.returncode == 2
    assert checked.stdout == ""
    lines = checked.stderr.splitlines()
    assert len(lines) == len(EXAMPLE_ENV)
    for name in EXAMPLE_ENV:
        assert sum(f"environment variable {name}, which is not set" in line for line in lines) == 1
    assert "Traceback" not in checked.stderr


def test_every_problem_is_one_sentence_and_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "septet.toml"
    path.write_text(
        f'[journal]\npath = "{tmp_path}/missing/septet.db"\n'
        '[http]\nlisten = "0.0.0.0"\n'
        '[bridges.rw]\ndriver = "dsc"\ncredentials = { api_key = "k" }\n'
        '[bridges.ua]\ndriver = "smsclub"\ncredentials = { token = "t" }\n'
        '[routing]\nprefixes = { "380" = ["ua", "nowhere"] }\n'
    )
    checked = septet("config", "check", str(path))
    assert checked.returncode == 2
    assert checked.stderr.splitlines() == [
        "septet config check: routing.prefixes.380 names unknown bridge 'nowhere'",
        "septet config check: http.listen '0.0.0.0' is not HOST:PORT (a port 0-65535)",
        "septet config check: bridge rw (dsc) needs bridges.rw.credentials.username,"
        " bridges.rw.credentials.password, bridges.rw.credentials.callback_username,"
        " bridges.rw.credentials.callback_password",
        "septet config check: bridges.ua.base_url is not set and smsclub's document names no"
        " production address: set it to the one the provider gave the account",
        f"septet config check: journal.path '{tmp_path}/missing/septet.db': the directory"
        f" '{tmp_path}/missing' does not exist",
    ]


def test_api_tls_files_are_loaded_by_the_check(tmp_path: Path) -> None:
    (tmp_path / "cert.pem").write_text("not a certificate")
    base = f'[journal]\npath = "{tmp_path}/s.db"\n[api]\nlisten = "127.0.0.1:0"\n'
    path = tmp_path / "septet.toml"
    for cert, reason in [
        (tmp_path / "missing.pem", "No such file or directory"),
        (tmp_path / "cert.pem", "[SSL]"),
    ]:
        path.write_text(base + f'cert = "{cert}"\nkey = "{cert}"\n')
        checked = septet("config", "check", str(path))
        assert checked.returncode == 2
        [line] = [x for x in checked.stderr.splitlines() if "api.cert" in x]
        assert line.startswith(f"septet config check: api.cert '{cert}' and api.key '{cert}'")
        assert reason in line
        assert "Traceback" not in checked.stderr


def test_unknown_keys_are_named_and_warnings_fail_the_check(tmp_path: Path) -> None:
    path = tmp_path / "septet.toml"
    path.write_text('[bridges.eu]\ndriver = "bsg"\nbase_ur = "https://x"\n[loging]\nlevel = 1\n')
    checked = septet("config", "check", str(path))
    assert checked.returncode == 2
    assert checked.stderr.splitlines() == [
        f"septet config check: config {path}: bridges.eu.base_ur is not a setting septet knows"
        " (did you mean bridges.eu.base_url?)",
        f"septet config check: config {path}: loging is not a setting septet knows"
        " (did you mean log?)",
    ]
    path.write_text(
        f'[journal]\npath = "{tmp_path}/s.db"\n'
        '[bridges.rw]\ndriver = "dsc"\ncredentials = { api_key = "k", username = "u",'
        ' password = "p", callback_username = "cu", callback_password = "cp" }\n'
    )
    checked = septet("config", "check", str(path))
    assert checked.returncode == 2
    assert checked.stderr.splitlines() == [
        "septet config check: bridge rw has no [pricing.rw] table: its costs are septet's demo"
        " prices in RWF, not the provider's",
        "septet config check: http.public_url is not set: rw would be told to call back"
        " 127.0.0.1:9750, an address no provider can reach; set it to the URL providers reach"
        " septet's listener by",
    ]


def test_the_check_binds_no_port(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        path = tmp_path / "septet.toml"
        path.write_text(
            f'[journal]\npath = "{tmp_path}/s.db"\n[http]\nlisten = "{address}"\n'
            f'[ingress]\ntcp = "{address}"\nunix = "{tmp_path}/s.sock"\n'
        )
        checked = septet("config", "check", str(path))
    assert checked.returncode == 0, checked.stderr
    assert f"NDJSON over TCP: {address}" in checked.stdout
    assert not (tmp_path / "s.db").exists()
    assert not (tmp_path / "s.sock").exists()
