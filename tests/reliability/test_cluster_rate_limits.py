"""Issue 20, point 4: a bridge's limits hold for the whole cluster. Three separate OS
processes, each with its own Redis client and shared gate (engine.cluster_limits) on one
real redis-server, ask for turns as fast as they can for 3 s on two bridges: one limited
to 200 requests/s, one to 2,000 messages/s (batches of 5 to 25). Counted on the Redis
server's clock: each total is within 2% of limit × 3 s (not three times it), and no
one-second window holds more than the limit. Then the same through three real daemons on
one PostgreSQL journal, against SMS Club's simulator and its 9 requests a second."""

from __future__ import annotations

import json
import re
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from bench.cluster_rates import run_rates
from bench.redis_server import RedisServer, free_port

PROCESSES = 3
# Every one-second window of the run is checked: three show the sharing as ten did (six
# runs of 3 s: requests exact, messages within 0.6% of the total, per process 335-344).
SECONDS = 3.0
REQUESTS_PER_S = 200.0
MESSAGES_PER_S = 2000.0


@pytest.mark.slow
def test_three_processes_together_keep_each_bridges_limit_in_every_second(
    redis_server: RedisServer,
) -> None:
    plan, held, per_process = run_rates(
        redis_server,
        processes=PROCESSES,
        seconds=SECONDS,
        requests_per_s=REQUESTS_PER_S,
        messages_per_s=MESSAGES_PER_S,
        concurrency=20,
    )
    figures = {h.bridge: h for h in held}
    assert set(figures) == {"requests", "messages"}
    for bridge, limit in (("requests", REQUESTS_PER_S), ("messages", MESSAGES_PER_S)):
        h = figures[bridge]
        assert h.limit == limit
        assert h.expected == round(limit * SECONDS)
        assert abs(h.total_error) <= 0.02, (bridge, h.total, h.per_second)
        assert h.busiest_window <= limit, (bridge, h.busiest_window, h.per_second)
    # Every process had its share: the limit was shared, not one process's alone.
    total = sum(per_process)
    assert len(per_process) == PROCESSES
    assert all(grants >= total / (2 * PROCESSES) for grants in per_process), per_process
    assert plan.seconds == SECONDS


# ── three real daemons on one PostgreSQL journal and one Redis ─────────────────────────

NODES = 3
MESSAGES_PER_NODE = 10
# SMS Club allows 9 requests a second and answers 429 beyond (its simulator too): each
# node is configured as the embedded default is, 8 a second spread evenly.
SMSCLUB_PER_S = 8.0


def node_config(node: int, directory: Path, dsn: str, redis_url: str, sim_url: str) -> str:
    ports = {name: free_port() for name in ("tcp", "http", "smpp")}
    (directory / f"ports-{node}.json").write_text(json.dumps(ports))
    return f"""
[journal]
backend = "postgresql"
dsn = "{dsn}"
path = "{directory / f"node-{node}.db"}"

[ingress]
tcp = "127.0.0.1:{ports["tcp"]}"
unix = "{directory / f"node-{node}.sock"}"

[http]
listen = "127.0.0.1:{ports["http"]}"

[smpp]
listen = "127.0.0.1:{ports["smpp"]}"

[cluster]
node = "n{node}"
redis = "{redis_url}"

[bridges.smsclub]
driver = "smsclub"
base_url = "{sim_url}"
credentials = {{ token = "demo" }}
default_sender = "SEPTET"
requests_per_s = {SMSCLUB_PER_S}
requests_burst = 1.0
poll_interval_s = 600.0
"""


def start_simulator() -> tuple[subprocess.Popen[str], str]:
    command = [sys.executable, "-m", "engine", "simulate", "smsclub", "--port", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], 20.0)
    line = process.stdout.readline() if ready else ""
    match = re.fullmatch(r"listening on (\S+)\n", line)
    if match is None:
        stop(process)
        pytest.fail(f"the SMS Club simulator did not start: {line!r}")
    return process, match.group(1)


def stop(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=2.0) as reply:  # noqa: S310 - our own 127.0.0.1 URL
        return json.loads(reply.read())


def wait_healthy(process: subprocess.Popen[Any], http_port: int, log: Path) -> None:
    for _ in range(600):  # bounded: 30 s
        if process.poll() is not None:
            pytest.fail(f"a node exited: {log.read_text()[-3000:]}")
        try:
            get_json(f"http://127.0.0.1:{http_port}/healthz")
            return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"a node did not answer /healthz in 30 s: {log.read_text()[-3000:]}")


def submit(tcp_port: int, node: int) -> None:
    lines = b"".join(
        json.dumps(
            {"id": f"n{node}-{k}", "to": f"+3805012{node}{k:04d}", "text": f"rate {node} {k}"}
        ).encode()
        + b"\n"
        for k in range(MESSAGES_PER_NODE)
    )
    with socket.create_connection(("127.0.0.1", tcp_port), timeout=10) as conn:
        conn.sendall(lines)
        conn.shutdown(socket.SHUT_WR)
        answers = b""
        while answers.count(b'"accepted"') < MESSAGES_PER_NODE:
            chunk = conn.recv(65536)
            if not chunk:
                break
            answers += chunk
    assert answers.count(b'"accepted"') == MESSAGES_PER_NODE, answers[-500:]


@pytest.mark.slow
def test_three_daemons_on_one_journal_never_pass_sms_clubs_nine_a_second(
    tmp_path: Path, postgres_dsn: str, redis_server: RedisServer
) -> None:
    """Three `septet run` processes on one PostgreSQL journal and one Redis send 30
    messages of different texts (a request each) to one SMS Club simulator, which
    refuses with 429 whatever passes 9 in a second. Each node is configured at 8/s: three
    local limits would send 24 a second; the shared one sends 8, and SMS Club refuses
    nothing."""
    simulator, sim_url = start_simulator()
    nodes: list[subprocess.Popen[Any]] = []
    try:
        ports = []
        for node in range(NODES):
            config = tmp_path / f"node-{node}.toml"
            config.write_text(node_config(node, tmp_path, postgres_dsn, redis_server.url, sim_url))
            log = tmp_path / f"node-{node}.log"
            with log.open("wb") as sink:
                command = [sys.executable, "-m", "engine", "run", "--config", str(config)]
                nodes.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=sink))
            ports.append(json.loads((tmp_path / f"ports-{node}.json").read_text()))
        for node, process in enumerate(nodes):
            wait_healthy(process, ports[node]["http"], tmp_path / f"node-{node}.log")
        started = time.monotonic()
        for node in range(NODES):
            submit(ports[node]["tcp"], node)
        total = NODES * MESSAGES_PER_NODE
        for _ in range(1200):  # bounded: 60 s
            counters = get_json(f"{sim_url}/_sim/counters")["smsclub"]
            if counters["accepted_total"] >= total:
                break
            time.sleep(0.05)
        elapsed = time.monotonic() - started
    finally:
        for process in nodes:
            stop(process)
        stop(simulator)
    assert counters["accepted_total"] == total, counters
    assert "429" not in counters["rejects"], counters["rejects"]
    # At 8 a second for the whole cluster, not 8 for each node: 30 requests take at least
    # (30 - 1) / 8 s whatever the nodes did (three local limits would take a third, and
    # pass SMS Club's 9 a second).
    assert elapsed >= (total - 1) / SMSCLUB_PER_S, elapsed
