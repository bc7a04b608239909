"""bench.kannel: Kannel's config and load fit the Route Mobile API, and --quick runs (or says
how to install Kannel)."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from bench import kannel
from bench.kannel import (
    KANNEL_MISSING,
    SUCCESS_REGEX,
    ApiLoad,
    KannelPorts,
    SendsmsLoad,
    add_ratios,
    aggregate,
    drive_septet,
    find_kannel,
    kannel_config,
    kannel_ready,
    progress_line,
    row_names,
    send_sendsms,
    sendsms_requests,
    septet_lines,
)
from bench.loadgen import Tally
from bench.pipeline import start_simulators, stop_process
from bridges.sim.runner import serve_simulators
from engine.models import submission_decoder

REPO = Path(__file__).resolve().parents[2]
PORTS = KannelPorts(admin=13000, smsbox=13001, smsc=13002, sendsms=13013)


def _groups(config: str) -> list[dict[str, str]]:
    """kannel.conf as a list of groups, each key → value with quotes taken off."""
    groups: list[dict[str, str]] = []
    for block in config.strip().split("\n\n"):
        group: dict[str, str] = {}
        for line in block.splitlines():
            key, value = (part.strip() for part in line.split("=", 1))
            group[key] = value[1:-1] if value.startswith('"') else value
        groups.append(group)
    return groups


def test_config_points_the_generic_http_smsc_at_route_mobile(tmp_path: Path) -> None:
    config = kannel_config(
        tmp_path, ports=PORTS, sim_url="http://127.0.0.1:9999", max_pending_submits=500
    )
    core, smsc, smsbox, user = _groups(config)
    assert core["group"] == "core"
    assert core["store-type"] == "file"
    assert core["store-location"] == str(tmp_path / "kannel.store")
    assert core["smsbox-port"] == "13001"
    assert int(core["log-level"]) >= 2
    assert smsc["smsc"] == "http"
    assert smsc["system-type"] == "generic"
    assert smsc["max-pending-submits"] == "500"
    url = urllib.parse.urlsplit(smsc["send-url"])
    assert url.netloc == "127.0.0.1:9999"
    assert url.path == "/bulksms/bulksms"
    query = dict(urllib.parse.parse_qsl(url.query))
    # Kannel fills %p with an MT message's receiver and %P with its sender.
    assert query == {
        "username": "demo",
        "password": "demo",
        "type": "0",
        "dlr": "0",
        "destination": "%p",
        "source": "%P",
        "message": "%b",
    }
    assert smsbox["bearerbox-port"] == "13001"
    assert smsbox["sendsms-port"] == "13013"
    assert user == {"group": "sendsms-user", "username": "bench", "password": "bench"}


def test_success_regex_takes_1701_entries_only() -> None:
    pattern = re.compile(SUCCESS_REGEX)
    assert pattern.search("1701|919800000001|4d1f0c9e-0a1b-4c2d-9e8f-0123456789ab")
    assert pattern.search("1701|919800000001:4d1f0c9e")
    assert not pattern.search("1706|919800000001")
    assert not pattern.search("1702")
    assert not pattern.search("1725|919800000001")


def test_find_kannel_prefers_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("bearerbox", "smsbox"):
        binary = tmp_path / name
        binary.write_text("#!/bin/sh\n")
        binary.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    found = find_kannel()
    assert found is not None
    assert found.bearerbox == str(tmp_path / "bearerbox")
    assert found.smsbox == str(tmp_path / "smsbox")


def test_missing_kannel_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(kannel, "find_kannel", lambda: None)
    assert kannel.main(["--quick", "--out", "unused.json"]) == 2
    assert KANNEL_MISSING in capsys.readouterr().err
    assert "apt-get install kannel" in KANNEL_MISSING


def test_ready_once_smsbox_is_connected_and_the_smsc_online() -> None:
    waiting = (
        "Status: running, uptime 0d 0h 0m 1s\n\nBox connections:\n\n\n"
        "SMSC connections:\n    routemobile[routemobile]    HTTP:generic:13002 (online 1s, "
        "rcvd: sms 0)\n"
    )
    ready = waiting.replace(
        "Box connections:\n\n",
        "Box connections:\n    smsbox:(none), IP 127.0.0.1 (0 queued), (on-line 0d 0h 0m 1s)\n",
    )
    assert not kannel_ready(waiting)
    assert kannel_ready(ready)
    assert not kannel_ready(ready.replace("(online 1s", "(connecting"))


def test_sendsms_requests_carry_one_distinct_recipient_each() -> None:
    requests = sendsms_requests(3, 13013)
    recipients = []
    texts = set()
    for request in requests:
        line, _, rest = request.decode().partition("\r\n")
        method, target, version = line.split(" ")
        assert (method, version) == ("GET", "HTTP/1.1")
        assert rest == "Host: 127.0.0.1:13013\r\n\r\n"
        url = urllib.parse.urlsplit(target)
        assert url.path == "/cgi-bin/sendsms"
        query = dict(urllib.parse.parse_qsl(url.query))
        assert query["username"] == "bench"
        assert query["password"] == "bench"
        assert query["from"] == "SEPTET"
        recipients.append(query["to"])
        texts.add(query["text"])
    assert recipients == ["+919800000000", "+919800000001", "+919800000002"]
    assert len(texts) == 3


def test_septet_lines_unbatched_and_batched() -> None:
    unbatched = [submission_decoder.decode(line) for line in septet_lines(5, batched=False)]
    assert [s.to for s in unbatched] == [f"+9198{i:08d}" for i in range(5)]
    assert len({s.text for s in unbatched}) == 5
    assert all(s.dlr is False for s in unbatched)

    batched = [submission_decoder.decode(line) for line in septet_lines(250, batched=True)]
    sizes = [len(s.to) if isinstance(s.to, list) else 1 for s in batched]
    assert sizes == [100, 100, 50]
    everyone = [to for s in batched for to in (s.to if isinstance(s.to, list) else [s.to])]
    assert len(set(everyone)) == 250
    assert len({s.text for s in batched}) == 1


class _FakeSendsms:
    """A keep-alive HTTP/1.1 server on 127.0.0.1 that answers like Kannel's sendsms.

    Replies come in two writes (head, then body) so the client must join them. A request
    whose `to` is in `refuse` gets 403; one in `drop` has its connection closed unanswered.
    """

    def __init__(self, refuse: set[str], drop: set[str]) -> None:
        self.refuse = refuse
        self.drop = drop
        self.seen: list[str] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                target = head.split(b" ", 2)[1].decode()
                to = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(target).query))["to"]
                self.seen.append(to)
                if to in self.drop:
                    return
                status, body = (
                    ("403 Forbidden", b"Denied")
                    if to in self.refuse
                    else ("202 Accepted", b"0: Accepted for delivery")
                )
                writer.write(
                    f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n"
                    "Connection: Keep-Alive\r\n\r\n".encode()
                )
                await writer.drain()
                writer.write(body)
                await writer.drain()
        except asyncio.IncompleteReadError:
            pass  # the client closed the connection: this fake server is done with it
        finally:
            writer.close()


@pytest.mark.anyio
async def test_sendsms_load_sends_each_request_once_and_counts_answers() -> None:
    fake = _FakeSendsms(refuse={"+919800000007"}, drop={"+919800000020"})
    server = await asyncio.start_server(fake.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        load = SendsmsLoad(sendsms_requests(60, port))
        await asyncio.wait_for(send_sendsms(port, load, concurrency=7), 10.0)
    finally:
        server.close()
        await server.wait_closed()
    assert sorted(fake.seen) == [f"+9198{i:08d}" for i in range(60)]
    assert load.accepted == 58
    assert load.refused == {403: 1}
    assert load.dropped == 1
    assert load.expected() == 58
    assert load.finished_at is not None


def test_an_api_load_counts_what_each_answer_says_of_its_message() -> None:
    load = ApiLoad([b"one", b"two", b"three"])
    load.answered(200, b'{"results":[{"index":0,"result":"accepted","msg_id":"1"}]}')
    load.answered(200, b'{"results":[{"index":0,"result":"rejected","kind":"invalid"}]}')
    load.answered(429, b'{"title":"Too Many Requests"}')
    assert load.accepted == 1
    assert load.refused == {200: 1, 429: 1}
    assert load.expected() == 1
    assert load.finished_at is not None


def test_the_api_row_sends_one_message_per_post_through_the_daemon() -> None:
    """The septet-api row end to end, without Kannel: a real daemon, its HTTP API and the
    Route Mobile simulator, driven by the bare client Kannel's rows use."""
    sims, sim_url = start_simulators(0.0, 0.0, "")
    try:
        setting = kannel.Setting(system="septet-api", pool=4)
        figures = kannel.run_septet_api(
            setting, 30, sim_url=sim_url, sim_pid=sims.pid, concurrency=5, deadline_s=60.0
        )
    finally:
        stop_process(sims)
    assert figures["complete"] is True
    assert figures["errors"] == {}
    assert figures["provider_accepted"] == 30
    assert figures["engine_cpu_s"] > 0


@pytest.mark.anyio
async def test_a_septet_load_refused_its_connection_ends_the_run_at_once() -> None:
    """The row "50 ms septet pool 500" once waited out its 90 s deadline with no word why:
    the daemon answers /healthz before its NDJSON port listens (measured up to 44 ms under
    load), the load's connection was refused, and the run went on polling the simulator
    for messages never sent. The refusal now ends the run with its error (a restart)."""
    async with anyio.create_task_group() as tg:
        handle = await tg.start(
            lambda task_status: serve_simulators(["routemobile"], task_status=task_status)
        )
        with socket.socket() as not_listening:
            not_listening.bind(("127.0.0.1", 0))  # bound, never listening: connects are refused
            port = not_listening.getsockname()[1]
            setting = kannel.Setting(system="septet", pool=500)
            lines = septet_lines(20, batched=False)
            pid = os.getpid()  # the run reads CPU clocks of the "daemon" and the simulator
            with anyio.fail_after(10), pytest.raises(ConnectionRefusedError):
                await drive_septet(port, lines, setting, handle.url, pid, pid, Tally(track=False))
        tg.cancel_scope.cancel()


def test_only_runs_named_rows_and_names_them_when_one_is_unknown(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert "septet pool 500" in row_names()
    assert "kannel max-pending-submits 100" in row_names()
    with pytest.raises(SystemExit) as exited:
        kannel.main(["--quick", "--only", "septet pool 5000"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "--only 'septet pool 5000' is not a row; the rows: kannel max-pending-" in err


def test_progress_lines_say_why_a_run_started_again_and_where_one_stopped() -> None:
    done = {
        "latency_ms": 50.0,
        "system": "septet",
        "setting": "pool 500",
        "messages_per_s": 4245.4,
        "cpu_us_per_message": 150.0,
        "other_cpu_s": 0.01,
        "restarts": {"ConnectionRefusedError: [Errno 111] Connect call failed": 1},
    }
    assert progress_line(done) == (
        "50 ms septet pool 500: 4,245 msg/s, 150 µs/msg (other processes 0.01 CPU s);"
        " started again after {'ConnectionRefusedError: [Errno 111] Connect call failed': 1}"
    )
    stuck = {
        "latency_ms": 50.0,
        "system": "septet",
        "setting": "pool 500",
        "errors": {"deadline passed": 1},
        "stuck": "load: 1999 submitted + 0 failed of 2000 accepted",
        "kept": "/tmp/kept/septet-pool-500-20261206T140000",
    }
    assert progress_line(stuck) == (
        "50 ms septet pool 500: incomplete {'deadline passed': 1};"
        " stuck: load: 1999 submitted + 0 failed of 2000 accepted;"
        " kept: /tmp/kept/septet-pool-500-20261206T140000"
    )


def _row(system: str, latency: float, setting: str, **figures: Any) -> dict[str, Any]:
    return {
        "latency_ms": latency,
        "system": system,
        "setting": setting,
        "max_pending_submits": figures.pop("pending", None),
        "pool": figures.pop("pool", None),
        "recipients_per_line": figures.pop("per_line", 1),
        **figures,
    }


def test_septet_rows_are_compared_with_their_kannel_counterpart() -> None:
    rows = [
        _row("kannel", 0.0, "k100", pending=100, messages_per_s=8000.0, cpu_us_per_message=200.0),
        _row("kannel", 0.0, "k500", pending=500, messages_per_s=6000.0, cpu_us_per_message=250.0),
        _row("septet", 0.0, "p100", pool=100, messages_per_s=8000.0, cpu_us_per_message=100.0),
        _row("septet", 0.0, "p500", pool=500, messages_per_s=3000.0, cpu_us_per_message=100.0),
        _row(
            "septet",
            0.0,
            "batched",
            pool=100,
            per_line=100,
            messages_per_s=40000.0,
            cpu_us_per_message=20.0,
        ),
        _row("septet", 50.0, "alone", pool=100, messages_per_s=1.0, cpu_us_per_message=1.0),
    ]
    add_ratios(rows)
    by_setting = {row["setting"]: row for row in rows}
    assert by_setting["p100"]["compared_with"] == "kannel k100"
    assert by_setting["p100"]["rate_ratio"] == 1.0
    assert by_setting["p100"]["cpu_ratio"] == 0.5
    assert by_setting["p500"]["compared_with"] == "kannel k500"
    assert by_setting["p500"]["rate_ratio"] == 0.5
    # Batched meets Kannel at its best at that latency.
    assert by_setting["batched"]["compared_with"] == "kannel k100"
    assert by_setting["batched"]["rate_ratio"] == 5.0
    assert "compared_with" not in by_setting["alone"]  # no Kannel run at 50 ms
    assert "rate_ratio" not in by_setting["k100"]


def test_repeats_give_medians_and_keep_every_error() -> None:
    def run(per_s: float, complete: bool, errors: dict[str, int]) -> dict[str, Any]:
        figures = {"messages_per_s": per_s, "cpu_us_per_message": per_s / 10} if complete else {}
        return {
            "system": "kannel",
            "complete": complete,
            "provider_accepted": 100 if complete else 90,
            "errors": errors,
            **figures,
        }

    merged = aggregate(
        [
            run(300.0, True, {}),
            run(100.0, True, {"x": 1}),
            run(200.0, True, {"x": 2}),
            run(0.0, False, {"deadline passed": 1}),
        ]
    )
    assert merged["messages_per_s"] == 200.0
    assert merged["cpu_us_per_message"] == 20.0
    assert merged["complete"] is False
    assert merged["provider_accepted"] == 90
    assert merged["errors"] == {"x": 3, "deadline passed": 1}
    assert merged["runs"] == 4
    assert len(merged["per_run"]) == 4


@pytest.mark.slow
def test_quick_run_or_install_hint(tmp_path: Path) -> None:
    out = tmp_path / "kannel.json"
    completed = subprocess.run(
        [sys.executable, "-m", "bench.kannel", "--quick", "-n", "300", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    if find_kannel() is None:
        assert completed.returncode == 2
        assert KANNEL_MISSING in completed.stderr
        assert not out.exists()
        return
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "msg/s" in completed.stdout
    document = msgspec.json.decode(out.read_bytes())
    assert document["bench"] == "kannel"
    assert document["quick"] is True
    rows = document["results"]
    assert [(r["latency_ms"], r["system"]) for r in rows] == [
        (latency, system)
        for latency in (0.0, 50.0)
        for system in ("kannel", "kannel", "septet", "septet", "septet", "septet-api")
    ]
    for row in rows:
        assert row["complete"] is True, row
        # Each failure shows its row: a flake here once said only "assert ...".
        assert row["errors"] == {}, row
        assert row["messages"] == 300, row
        assert row["provider_accepted"] >= 300, row
        assert row["messages_per_s"] > 0, row
        # 300 messages of the batched row cost septet one or two 10 ms clock ticks of CPU,
        # so its CPU figures may read 0; that of every other row is several ticks.
        batched = "batches" in row["setting"]
        assert row["cpu_us_per_message"] >= 0 if batched else row["cpu_us_per_message"] > 0, row
        if row["system"] in ("septet", "septet-api"):
            assert row["compared_with"].startswith("kannel max-pending-submits"), row
            assert row["rate_ratio"] > 0, row
            assert row["cpu_ratio"] >= 0 if batched else row["cpu_ratio"] > 0, row
