"""`septet run` as a process: start-up failures are one sentence and exit 2, the start
line lists every listener and the resumed backlog, `--stdin` opens only what it needs,
the drain is bounded by `[shutdown] drain_s` and says what it waits for, SIGHUP reopens
the log file, `--version`."""

from __future__ import annotations

import importlib.metadata
import json
import signal
import socket
import subprocess
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

SEPTET = [sys.executable, "-m", "engine"]
# The dsc bridge against the in-process simulators, with every credential it needs.
DSC_BRIDGE = (
    "[simulators]\nenabled = true\n"
    '[bridges.dsc]\ndriver = "dsc"\ndefault_sender = "SEPTET"\n'
    'credentials = { api_key = "demo", username = "demo", password = "demo",'
    ' callback_username = "septet", callback_password = "callback-secret" }\n'
)


# A time no test reaches: messages scheduled for it stay accepted (the backlog).
LATER = "2099-01-01T00:00:00Z"


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "septet.toml"
    path.write_text(f'[journal]\npath = "{tmp_path / "septet.db"}"\n{text}')
    return path


def refused(tmp_path: Path, text: str) -> list[str]:
    """Run with a config that cannot start: exit 2, no traceback; its sentences."""
    config = write_config(tmp_path, text)
    finished = subprocess.run(
        [*SEPTET, "run", "--config", str(config)],
        capture_output=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    stderr = finished.stderr.decode()
    assert finished.returncode == 2, stderr
    assert "Traceback" not in stderr
    # Log lines may come first (what started before the failure); the sentences end it.
    lines = stderr.strip().splitlines()
    sentences = [line for line in lines if line.startswith("septet run: ")]
    assert lines[-len(sentences) :] == sentences
    return sentences


def read_log_until(stream: Iterable[bytes], event: str) -> dict[str, Any]:
    """JSON log lines from `stream`, up to the first `event` line (bounded by EOF)."""
    for raw in stream:
        try:
            line = json.loads(raw)
        except ValueError:
            continue
        if isinstance(line, dict) and line.get("event") == event:
            return line
    raise AssertionError(f"the daemon exited without logging {event}")


@contextmanager
def daemon(tmp_path: Path, config: Path, *extra: str) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        [*SEPTET, "run", "--config", str(config), *extra],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        assert process.stderr is not None
        process.stderr.close()


# ── start-up failures: one sentence, exit 2 ──────────────────────────────────────


@pytest.mark.parametrize("key", ["ingress.tcp", "http.listen", "smpp.listen"])
def test_an_address_in_use_is_one_sentence_and_exit_2(tmp_path: Path, key: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        addresses = {"ingress.tcp": "127.0.0.1:0", "http.listen": "127.0.0.1:0"}
        addresses |= {"smpp.listen": "127.0.0.1:0", key: address}
        lines = refused(
            tmp_path,
            f'[ingress]\ntcp = "{addresses["ingress.tcp"]}"\nunix = ""\n'
            f'[http]\nlisten = "{addresses["http.listen"]}"\n'
            f'[smpp]\nlisten = "{addresses["smpp.listen"]}"\n{DSC_BRIDGE}',
        )
    assert lines == [f"septet run: cannot listen on {key} {address}: Address already in use"]


def test_a_unix_socket_a_running_daemon_answers_on_is_in_use(tmp_path: Path) -> None:
    path = tmp_path / "live.sock"
    with socket.socket(socket.AF_UNIX) as live:
        live.bind(str(path))
        live.listen()
        lines = refused(
            tmp_path,
            f'[ingress]\ntcp = ""\nunix = "{path}"\n[http]\nlisten = ""\n[smpp]\nlisten = ""\n',
        )
        assert path.is_socket()  # not taken from the running one
    assert lines == [f"septet run: cannot listen on ingress.unix {path}: Address already in use"]


def test_malformed_addresses_and_missing_credentials_are_one_sentence_each(
    tmp_path: Path,
) -> None:
    lines = refused(
        tmp_path,
        '[ingress]\ntcp = "7750"\n[smpp]\nlisten = "127.0.0.1:http"\n'
        "[simulators]\nenabled = true\n"
        '[bridges.dsc]\ndriver = "dsc"\n'
        'credentials = { api_key = "k", username = "u", password = "p" }\n',
    )
    assert lines == [
        "septet run: ingress.tcp '7750' is not HOST:PORT (a port 0-65535)",
        "septet run: smpp.listen '127.0.0.1:http' is not HOST:PORT (a port 0-65535)",
        "septet run: bridge dsc (dsc) needs bridges.dsc.credentials.callback_username,"
        " bridges.dsc.credentials.callback_password",
    ]


def test_a_log_file_that_cannot_be_opened_is_one_sentence(tmp_path: Path) -> None:
    log = tmp_path / "no-such-directory" / "septet.log"
    lines = refused(tmp_path, f'[log]\nfile = "{log}"\n')
    assert lines == [f"septet run: cannot open the log file {log}: No such file or directory"]


# ── the start line, the drain, SIGHUP ────────────────────────────────────────────


def test_the_start_line_lists_every_listener_and_the_resumed_backlog_by_state(
    tmp_path: Path,
) -> None:
    sock = tmp_path / "septet.sock"
    config = write_config(
        tmp_path,
        f'[ingress]\ntcp = "127.0.0.1:0"\nunix = "{sock}"\n[http]\nlisten = "127.0.0.1:0"\n'
        f'[smpp]\nlisten = "127.0.0.1:0"\n{DSC_BRIDGE}',
    )
    held = [
        {"id": f"later-{n}", "to": f"+25078810010{n}", "text": "x", "schedule_at": LATER}
        for n in range(3)
    ]
    with daemon(tmp_path, config) as first:
        assert first.stderr is not None
        started = read_log_until(first.stderr, "started")
        listeners = started["listeners"]
        assert set(listeners) == {"http", "ndjson_tcp", "ndjson_unix", "smpp", "simulators"}
        assert listeners["ndjson_unix"] == str(sock)
        assert started["resumed"] == {"accepted": 0, "inflight": 0, "submitted": 0}
        host, port = listeners["ndjson_tcp"].rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as client:
            client.sendall(b"".join(json.dumps(line).encode() + b"\n" for line in held))
            answers = client.makefile("rb")
            assert [json.loads(answers.readline())["event"] for _ in held] == ["accepted"] * 3
        first.send_signal(signal.SIGTERM)
        assert first.wait(30) == 0
    assert not sock.exists()  # the socket file goes with the listener
    with daemon(tmp_path, config) as second:
        assert second.stderr is not None
        started = read_log_until(second.stderr, "started")
        assert started["resumed"] == {"accepted": 3, "inflight": 0, "submitted": 0}
        # Without [log] file, SIGHUP has nothing to reopen: a line, and the daemon goes on.
        second.send_signal(signal.SIGHUP)
        assert read_log_until(second.stderr, "hangup")["action"].startswith("none")
        assert second.poll() is None
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0


def test_stdin_opens_no_listener_the_config_does_not_name(tmp_path: Path) -> None:
    line = b'{"id":"a1","to":"+250788123456","text":"hi"}\n'
    embedded = subprocess.run(
        [*SEPTET, "run", "--stdin", "--exit-when-idle"],
        input=line,
        capture_output=True,
        timeout=60,
        check=True,
        cwd=tmp_path,
    )
    started = next(json.loads(raw) for raw in embedded.stderr.splitlines() if b'"started"' in raw)
    # The embedded default's simulators report by callback: the HTTP listener, on a free
    # loopback port; no NDJSON socket, no SMPP, no socket file left in the directory.
    assert set(started["listeners"]) == {"http", "ndjson_stdin", "simulators"}
    assert started["listeners"]["http"].startswith("127.0.0.1:")
    assert not (tmp_path / "septet.sock").exists()
    events = [json.loads(raw)["event"] for raw in embedded.stdout.splitlines()]
    assert events == ["accepted", "submitted", "dlr"]
    named = write_config(tmp_path, '[ingress]\ntcp = "127.0.0.1:0"\n' + DSC_BRIDGE)
    configured = subprocess.run(
        [*SEPTET, "run", "--stdin", "--exit-when-idle", "--config", str(named)],
        input=line,
        capture_output=True,
        timeout=60,
        check=True,
        cwd=tmp_path,
    )
    started = next(json.loads(raw) for raw in configured.stderr.splitlines() if b'"started"' in raw)
    assert set(started["listeners"]) == {"http", "ndjson_tcp", "ndjson_stdin", "simulators"}


def test_the_drain_says_what_it_waits_for_and_stops_at_drain_s(tmp_path: Path) -> None:
    # The simulators answer after 20 s: a request is in flight when SIGTERM comes.
    config = write_config(
        tmp_path,
        '[ingress]\ntcp = "127.0.0.1:0"\nunix = ""\n[http]\nlisten = "127.0.0.1:0"\n'
        '[smpp]\nlisten = ""\n[shutdown]\ndrain_s = 0.5\n'
        + DSC_BRIDGE.replace("enabled = true\n", "enabled = true\nlatency_ms = 20000\n"),
    )
    with daemon(tmp_path, config, "--log-level", "debug") as process:
        assert process.stderr is not None
        started = read_log_until(process.stderr, "started")
        host, port = started["listeners"]["ndjson_tcp"].rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as client:
            client.sendall(b'{"id":"slow","to":"+250788100200","text":"slow provider"}\n')
            read_log_until(process.stderr, "provider_request")
            process.send_signal(signal.SIGTERM)
            draining = read_log_until(process.stderr, "draining")
            timed_out = read_log_until(process.stderr, "drain_timed_out")
        assert process.wait(30) == 0
    assert draining["drain_s"] == 0.5
    assert draining["waiting_for"] == {"messages_in_hand": 1, "requests_in_flight": {"dsc": 1}}
    assert timed_out["after_s"] == 0.5
    assert timed_out["requests_in_flight"] == {"dsc": 1}


def test_sighup_reopens_the_log_file_and_the_daemon_goes_on(tmp_path: Path) -> None:
    log = tmp_path / "septet.log"
    config = write_config(
        tmp_path,
        '[ingress]\ntcp = ""\nunix = ""\n[http]\nlisten = "127.0.0.1:0"\n[smpp]\nlisten = ""\n'
        f'[log]\nfile = "{log}"\n',
    )
    with daemon(tmp_path, config) as process:
        assert process.stderr is not None
        with follow(log) as lines:
            assert read_log_until(lines, "started")["listeners"]
        rotated = log.rename(tmp_path / "septet.log.1")
        process.send_signal(signal.SIGHUP)
        with follow(log) as lines:
            read_log_until(lines, "log_reopened")
            assert process.poll() is None  # still running
            process.send_signal(signal.SIGTERM)
            assert process.wait(30) == 0
            read_log_until(lines, "stopped")
        assert process.stderr.read() == b""  # the log went to the file, not stderr
    assert b'"started"' in rotated.read_bytes()
    assert b'"log_reopened"' not in rotated.read_bytes()


@contextmanager
def follow(path: Path) -> Iterator[Iterator[bytes]]:
    """The lines of a file as they are written (bounded: about 30 s without a new line)."""

    def lines() -> Iterator[bytes]:
        waited = 0
        while not path.exists() and waited < 3000:
            waited += 1
            select_sleep(0.01)
        with path.open("rb") as file:
            idle = 0
            buffer = b""
            while idle < 3000:
                chunk = file.readline()
                if not chunk:
                    idle += 1
                    select_sleep(0.01)
                    continue
                idle = 0
                buffer += chunk
                if buffer.endswith(b"\n"):
                    yield buffer
                    buffer = b""

    yield lines()


def select_sleep(seconds: float) -> None:
    """A short pause while polling a file the daemon writes (a file has no readiness)."""
    import select

    select.select([], [], [], seconds)


def test_version() -> None:
    finished = subprocess.run(
        [*SEPTET, "--version"], capture_output=True, timeout=30, check=True, text=True
    )
    assert finished.stdout.strip() == f"septet {importlib.metadata.version('septet')}"


def test_log_format_and_level_come_from_the_file_and_the_flags_override_them(
    tmp_path: Path,
) -> None:
    config = write_config(
        tmp_path, '[http]\nlisten = "127.0.0.1:0"\n[log]\nformat = "console"\nlevel = "warning"\n'
    )
    line = b'{"id":"a1","to":"+250788123456","text":"hi"}\n'
    base = [*SEPTET, "run", "--stdin", "--exit-when-idle", "--config", str(config)]
    quiet = subprocess.run(
        base, input=line, capture_output=True, timeout=60, check=True, cwd=tmp_path
    )
    # No bridge is configured: the line is rejected, and that is a warning at most.
    assert b"started" not in quiet.stderr  # an info line, below the file's level
    flagged = subprocess.run(
        [*base, "--log-level", "info"],
        input=line,
        capture_output=True,
        timeout=60,
        check=True,
        cwd=tmp_path,
    )
    started = [raw for raw in flagged.stderr.splitlines() if b"started" in raw]
    assert len(started) == 1
    assert not started[0].startswith(b"{")  # console text, not JSON
    assert b"listeners=" in started[0]
