"""Throughput and latency of one septet daemon process against provider simulators.

Each run starts `septet simulate` (all four providers, one process, pinned to core 0)
and `septet run --config` (pinned to core 1) on a TOML config written to a temp dir
(journal there too), then this process (also on core 0) feeds pre-encoded NDJSON over
the daemon's TCP socket and reads the events back on the same connection. It reports
messages per second and per minute (first byte sent → last `submitted` received), submit
latency (the `accepted` event's ts → the `submitted` event's ts), delivery-report latency
(`submitted` ts → first `dlr` ts), the daemon's CPU (utime + stime from /proc) per
message, its peak RSS (VmHWM), and every error. Messages never answered are "lost".

Scenarios (docs/design.md "Throughput model": throughput ≤ pool × batch ÷ latency):
  unbatched        1 recipient per line, distinct texts, 0 ms: no batching possible
  batched          lines of 100 recipients sharing a text, 0 ms: batches of 100
  latency          50 ms provider latency, distinct texts, pool N: vs the model
  latency-batched  50 ms, batches of 100, small pool: vs the model
  ratelimit        10 s against a requests/s limit (dsc) and a messages/s limit
                   (routemobile): achieved vs configured rate
  backlog          1,000,000 messages scheduled a day ahead: peak RSS while they wait
                   (only when asked for; --quick uses 20,000)

    python -m bench.pipeline [--quick] [--out FILE] [--scenario NAME ...] [-n N]
        [--latency-ms M] [--pool N] [--repeat R] [--bridges dsc,routemobile,...]

SMS Club's simulator limits (9 requests/s, 453 for the same phone+text within 2 min)
are switched off, so `--bridges` may include it; by default it is left out.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import math
import os
import re
import resource
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import msgspec

from bench.common import RESULTS_DIR, base_parser, format_table, median, percentile, write_results
from bench.loadgen import (
    ROUTE_PREFIXES,
    Goal,
    LoadShape,
    Tally,
    build_lines,
    chunk_lines,
    feed_and_collect,
)

NAME = "pipeline"
SIMULATOR_CORE = 0
DAEMON_CORE = 1
LOADGEN_CORE = 0
HOST = "127.0.0.1"
PROVIDERS = ("dsc", "routemobile", "bsg", "smsclub")
CREDENTIALS: dict[str, dict[str, str]] = {
    # docs/design.md: the simulators' public demo credentials.
    "dsc": {
        "api_key": "demo",
        "username": "demo",
        "password": "demo",
        "callback_username": "septet",
        "callback_password": "bench-callback",
    },
    "routemobile": {"username": "demo", "password": "demo"},
    "bsg": {"api_key": "test_demo"},
    "smsclub": {"token": "demo"},
}
# High enough that only the pipeline itself limits throughput.
UNLIMITED_BRIDGE: dict[str, Any] = {
    "requests_per_s": 1_000_000.0,
    "requests_burst": 1_000_000.0,
    "messages_per_s": 10_000_000.0,
    "messages_burst": 1_000_000.0,
    "queue_size": 50_000,
    "poll_interval_s": 0.5,
}
Until = Literal["accepted", "submitted", "dlr"]


class Scenario(msgspec.Struct, frozen=True, kw_only=True):
    """A named preset: the load's shape, the provider latency and the bridges' settings."""

    name: str
    description: str
    messages: int
    quick_messages: int
    shape: LoadShape
    latency_ms: float = 0.0
    pool: int = 100
    until: Until = "dlr"
    bridge_overrides: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)
    # ratelimit: bridge -> (configured messages/s, messages the full bucket lets go at once)
    rate_limits: dict[str, tuple[float, float]] = msgspec.field(default_factory=dict)
    settle_s: float = 0.0  # keep sampling after the goal (backlog: RSS once everything waits)


def _scenarios() -> dict[str, Scenario]:
    tomorrow = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        scenario.name: scenario
        for scenario in (
            Scenario(
                name="unbatched",
                description="1 recipient per line, distinct texts, 0 ms latency, no reports",
                messages=40_000,
                quick_messages=1_000,
                shape=LoadShape(
                    bridges=("dsc", "routemobile"), texts="distinct", request_dlr=False
                ),
                until="submitted",
            ),
            Scenario(
                name="unbatched-dlr",
                description="as unbatched, each message with its delivery report",
                messages=40_000,
                quick_messages=1_000,
                shape=LoadShape(bridges=("dsc", "routemobile"), texts="distinct"),
            ),
            Scenario(
                name="batched",
                description="lines of 100 recipients sharing one text, 0 ms latency, no reports",
                messages=200_000,
                quick_messages=4_000,
                shape=LoadShape(
                    bridges=("dsc", "routemobile", "bsg"),
                    recipients_per_line=100,
                    texts="same",
                    request_dlr=False,
                ),
                until="submitted",
            ),
            Scenario(
                name="latency",
                description="50 ms provider latency, distinct texts (batch 1), pool 50, no reports",
                messages=10_000,
                quick_messages=500,
                shape=LoadShape(bridges=("dsc",), texts="distinct", request_dlr=False),
                until="submitted",
                latency_ms=50.0,
                pool=50,
            ),
            Scenario(
                name="latency-batched",
                description="50 ms provider latency, batches of 100, pool 4, no reports",
                messages=80_000,
                quick_messages=4_000,
                shape=LoadShape(
                    bridges=("dsc",), recipients_per_line=100, texts="same", request_dlr=False
                ),
                until="submitted",
                latency_ms=50.0,
                pool=4,
            ),
            Scenario(
                name="ratelimit",
                description="10 s at dsc 200 requests/s (1 per request) and "
                "routemobile 2,000 messages/s",
                # dsc takes 1 line in 11, routemobile 10: 10 s of each at its rate.
                messages=22_000,
                quick_messages=4_400,
                shape=LoadShape(
                    bridges=("dsc", *("routemobile",) * 10), texts="same", wait_dlr=False
                ),
                until="submitted",
                bridge_overrides={
                    "dsc": {"max_recipients": 1, "requests_per_s": 200.0, "requests_burst": 1.0},
                    "routemobile": {"messages_per_s": 2_000.0, "messages_burst": 100.0},
                },
                rate_limits={"dsc": (200.0, 1.0), "routemobile": (2_000.0, 100.0)},
            ),
            Scenario(
                name="backlog",
                description="messages scheduled a day ahead, waiting in the journal",
                messages=1_000_000,
                quick_messages=20_000,
                shape=LoadShape(
                    bridges=("dsc",),
                    recipients_per_line=100,
                    texts="same",
                    schedule_at=tomorrow,
                    wait_dlr=False,
                    track=False,
                ),
                until="accepted",
                settle_s=3.0,
            ),
        )
    }


DEFAULT_SCENARIOS = (
    "unbatched",
    "unbatched-dlr",
    "batched",
    "latency",
    "latency-batched",
    "ratelimit",
)


# ── processes ──────────────────────────────────────────────────────────────────────


def _can_pin() -> bool:
    return hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > DAEMON_CORE


def _pin(core: int) -> Callable[[], None]:
    def pin() -> None:
        if _can_pin():
            os.sched_setaffinity(0, {core})

    return pin


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (fields 14 and 15 of /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU time spent by every process on the machine (the `cpu` line of /proc/stat).

    Compared with our three processes' own CPU it shows whether something else shared
    the cores during a run, which would make the figures worth less.
    """
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def wait_for_quiet(max_wait_s: float, *, busy_below: float = 0.15) -> float:
    """Wait (at most `max_wait_s`) for a second in which the machine is nearly idle.

    Other work on the two cores skews every figure here; returns the busy fraction of
    the last second looked at, which the caller reports.
    """
    cores = os.cpu_count() or 1
    deadline = time.monotonic() + max_wait_s
    while True:
        before = machine_busy_seconds()
        time.sleep(1.0)
        busy = (machine_busy_seconds() - before) / cores
        if busy < busy_below or time.monotonic() >= deadline:
            return busy


def memory_kib(pid: int, field: Literal["VmRSS", "VmHWM"]) -> int:
    """A memory figure of /proc/<pid>/status in KiB (VmHWM is the peak resident set)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _read_line(process: subprocess.Popen[bytes], timeout_s: float) -> str:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout_s)
    if not ready:
        raise RuntimeError("the simulators did not start in time")
    return process.stdout.readline().decode()


def start_simulators(
    latency_ms: float, dlr_delay_s: float, routemobile_dlr_url: str
) -> tuple[subprocess.Popen[bytes], str]:
    command = [
        sys.executable,
        "-m",
        "engine",
        "simulate",
        *PROVIDERS,
        "--port",
        "0",
        "--latency-ms",
        str(latency_ms),
        "--dlr-delay",
        str(dlr_delay_s),
        "--seed",
        "1",
        "--routemobile-dlr-url",
        routemobile_dlr_url,
        # docs/providers.md "smsclub": 9 requests/s and a 2-minute duplicate window; off here.
        "--set",
        "smsclub_rate_limit=null",
        "--set",
        "smsclub_duplicate_window_s=0",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, preexec_fn=_pin(SIMULATOR_CORE))
    try:
        line = _read_line(process, 20.0)
        match = re.fullmatch(r"listening on (\S+)\n", line)
        if match is None:
            raise RuntimeError(f"the simulators did not start: {line!r}")
    except BaseException:
        stop_process(process)
        raise
    return process, match.group(1)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        # A JSON string of ASCII text is a valid TOML basic string.
        return msgspec.json.encode(value).decode("ascii")
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, Mapping):
        items = ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{" + items + "}"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_value(key)


def render_toml(document: Mapping[str, Any], prefix: str = "") -> str:
    """A TOML document: a mapping holding mappings becomes a [table], the rest inline."""
    lines: list[str] = []
    tables: list[tuple[str, Mapping[str, Any]]] = []
    for key, value in document.items():
        if isinstance(value, Mapping) and any(isinstance(v, Mapping) for v in value.values()):
            tables.append((f"{prefix}{_toml_key(key)}", value))
        else:
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    text = "\n".join(lines) + ("\n" if lines else "")
    for name, table in tables:
        text += f"\n[{name}]\n" + render_toml(table, f"{name}.")
    return text


def daemon_config(
    workdir: Path,
    *,
    sim_url: str,
    tcp_port: int,
    http_port: int,
    bridges: Sequence[str],
    pool: int,
    overrides: Mapping[str, Mapping[str, Any]],
) -> dict[str, Any]:
    """The daemon's settings (engine/config.py Settings) as a plain document."""
    bridge_tables: dict[str, Any] = {}
    for name in bridges:
        bridge_tables[name] = {
            "driver": name,
            "base_url": sim_url,
            "credentials": CREDENTIALS[name],
            "default_sender": "SEPTET",
            "pool": pool,
            **UNLIMITED_BRIDGE,
            **overrides.get(name, {}),
        }
        table = bridge_tables[name]
        # A request limiter's burst may not exceed its rate (engine.ratelimit): an override
        # that lowers the rate alone lowers the unlimited burst with it.
        table["requests_burst"] = min(table["requests_burst"], table["requests_per_s"])
    return {
        "journal": {"path": str(workdir / "journal.db")},
        "ingress": {
            "tcp": f"{HOST}:{tcp_port}",
            "unix": "",  # off: the bench feeds the TCP socket only
            "max_recipients_per_line": 1000,
        },
        "http": {"listen": f"{HOST}:{http_port}"},
        "smpp": {"listen": ""},  # off: the bench feeds NDJSON, and 2775 may be taken
        "simulators": {"enabled": False},
        "routing": {"prefixes": {ROUTE_PREFIXES[name]: [name] for name in bridges}},
        "bridges": bridge_tables,
    }


def start_daemon(config_path: Path, log_path: Path) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "engine",
        "run",
        "--config",
        str(config_path),
        "--log-level",
        "warning",
    ]
    with log_path.open("wb") as log:
        return subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=log, preexec_fn=_pin(DAEMON_CORE)
        )


def _http_json(url: str, timeout_s: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout_s) as reply:  # noqa: S310 - our own 127.0.0.1 URL
        return msgspec.json.decode(reply.read())


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1.0):
        return True
    return False


def wait_healthy(
    process: subprocess.Popen[bytes], http_port: int, log_path: Path, *, also: Sequence[int] = ()
) -> None:
    """Until /healthz answers and every port in `also` accepts a connection: the daemon's
    HTTP listener starts before its front doors, so a load sent at once could be refused."""
    for _ in range(400):  # bounded: 20 s
        if process.poll() is not None:
            raise RuntimeError(f"the daemon exited: {log_path.read_text()[-2000:]}")
        try:
            _http_json(f"http://{HOST}:{http_port}/healthz", 1.0)
        except OSError:
            time.sleep(0.05)
            continue
        if all(_listening(port) for port in also):
            return
        time.sleep(0.05)
    raise RuntimeError("the daemon did not become healthy in 20 s")


def mean_batch(sim_url: str, bridges: Sequence[str]) -> dict[str, float]:
    """Recipients per send request, per provider, from the simulators' own counters."""
    from bridges.sim.core import ProviderState, SimulatorConfig
    from bridges.sim.runner import SIMULATORS

    counters = _http_json(f"{sim_url}/_sim/counters")
    batches: dict[str, float] = {}
    for name in bridges:
        routes = SIMULATORS[name](ProviderState(name, SimulatorConfig())).routes()
        send_paths = {route.path for route in routes if route.sends}
        requests = sum(
            count
            for label, by_status in counters[name]["requests"].items()
            if label.split(" ", 1)[-1] in send_paths
            for count in by_status.values()
        )
        accepted = counters[name]["accepted_total"]
        batches[name] = round(accepted / requests, 2) if requests else 0.0
    return batches


# ── one run ────────────────────────────────────────────────────────────────────────


class Sample(msgspec.Struct, array_like=True):
    at: float
    daemon_cpu_s: float
    daemon_rss_kib: int
    sims_cpu_s: float
    machine_busy_s: float
    accepted: int
    submitted: int
    dlr: int


class _Progress:
    """A one-line progress bar, only on a terminal."""

    def __init__(self, label: str, goal: Goal, enabled: bool) -> None:
        self.label = label
        self.goal = goal
        self.enabled = enabled
        self.last = 0.0

    def __call__(self, tally: Tally) -> None:
        now = time.monotonic()
        if not self.enabled or now - self.last < 0.2:
            return
        self.last = now
        total = self.goal.messages
        done = {"accepted": tally.accepted, "submitted": tally.submitted, "dlr": tally.dlr}
        current = done[self.goal.until] + tally.failed
        filled = min(30, int(30 * current / total)) if total else 30
        sys.stdout.write(
            f"\r{self.label:>16} [{'#' * filled}{'.' * (30 - filled)}] "
            f"accepted {tally.accepted:,} submitted {tally.submitted:,} dlr {tally.dlr:,} "
            f"failed {tally.failed:,}"
        )
        sys.stdout.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stdout.write("\n")
            sys.stdout.flush()


async def _sample(
    samples: list[Sample], daemon_pid: int, sims_pid: int, tally: Tally, every_s: float
) -> None:
    while True:  # cancelled by the caller once the run is over
        samples.append(
            Sample(
                at=time.time(),
                daemon_cpu_s=cpu_seconds(daemon_pid),
                daemon_rss_kib=memory_kib(daemon_pid, "VmRSS"),
                sims_cpu_s=cpu_seconds(sims_pid),
                machine_busy_s=machine_busy_seconds(),
                accepted=tally.accepted,
                submitted=tally.submitted,
                dlr=tally.dlr,
            )
        )
        await asyncio.sleep(every_s)


def _deadline_s(scenario: Scenario, messages: int) -> float:
    base = 60.0 + messages / 500.0
    if scenario.rate_limits:
        base += 30.0
    return base


def run_once(
    scenario: Scenario,
    messages: int,
    *,
    latency_ms: float,
    pool: int,
    bridges: Sequence[str],
    dlr_delay_s: float,
    wait_dlr: bool,
    progress: bool,
) -> tuple[dict[str, Any], list[Sample], Tally]:
    """Start fresh simulators and daemon, push `messages` through, return the figures."""
    shape = msgspec.structs.replace(scenario.shape, bridges=tuple(bridges))
    until: Until = scenario.until
    if until == "dlr" and not (wait_dlr and shape.wait_dlr and shape.request_dlr):
        until = "submitted"
    lines = build_lines(shape, messages)
    chunks = chunk_lines(lines)
    del lines
    goal = Goal(messages=messages, recipients_per_line=shape.recipients_per_line, until=until)
    tally = Tally(track=shape.track)
    samples: list[Sample] = []
    with tempfile.TemporaryDirectory(prefix="septet-bench-") as tmp:
        workdir = Path(tmp)
        tcp_port, http_port = _free_port(), _free_port()
        sims, sim_url = start_simulators(
            latency_ms, dlr_delay_s, f"http://{HOST}:{http_port}/dlr/routemobile"
        )
        daemon: subprocess.Popen[bytes] | None = None
        try:
            document = daemon_config(
                workdir,
                sim_url=sim_url,
                tcp_port=tcp_port,
                http_port=http_port,
                bridges=sorted(set(bridges)),
                pool=pool,
                overrides=scenario.bridge_overrides,
            )
            config_path = workdir / "septet.toml"
            config_path.write_text(render_toml(document))
            log_path = workdir / "daemon.log"
            daemon = start_daemon(config_path, log_path)
            wait_healthy(daemon, http_port, log_path, also=(tcp_port,))
            figures = asyncio.run(
                _drive(
                    scenario,
                    chunks,
                    tally,
                    goal,
                    samples,
                    daemon.pid,
                    sims.pid,
                    tcp_port=tcp_port,
                    deadline_s=_deadline_s(scenario, messages),
                    progress=_Progress(scenario.name, goal, progress),
                )
            )
            figures["mean_batch"] = mean_batch(sim_url, sorted(set(bridges)))
            daemon_log = log_path.read_text(errors="replace")
        finally:
            if daemon is not None:
                stop_process(daemon)
            stop_process(sims)
    errors_logged = sum(1 for line in daemon_log.splitlines() if '"level": "error"' in line)
    result = _figures(scenario, messages, shape, goal, tally, figures, latency_ms, pool)
    result["daemon_log_errors"] = errors_logged
    return result, samples, tally


async def _drive(
    scenario: Scenario,
    chunks: Sequence[bytes],
    tally: Tally,
    goal: Goal,
    samples: list[Sample],
    daemon_pid: int,
    sims_pid: int,
    *,
    tcp_port: int,
    deadline_s: float,
    progress: _Progress,
) -> dict[str, Any]:
    cpu_at_submitted: list[float] = []

    def on_progress(current: Tally) -> None:
        if current.all_submitted_at is not None and not cpu_at_submitted:
            cpu_at_submitted.append(cpu_seconds(daemon_pid))
        progress(current)

    sampler = asyncio.ensure_future(_sample(samples, daemon_pid, sims_pid, tally, 0.1))
    rss_before = memory_kib(daemon_pid, "VmRSS")
    daemon_cpu_before = cpu_seconds(daemon_pid)
    sims_cpu_before = cpu_seconds(sims_pid)
    own_before = resource.getrusage(resource.RUSAGE_SELF)
    machine_before = machine_busy_seconds()
    started_at = time.time()
    try:
        complete = await feed_and_collect(
            HOST,
            tcp_port,
            chunks,
            tally,
            goal,
            deadline_s=deadline_s,
            on_progress=on_progress,
        )
    finally:
        progress.close()
    ended_at = time.time()
    daemon_cpu = cpu_seconds(daemon_pid) - daemon_cpu_before
    sims_cpu = cpu_seconds(sims_pid) - sims_cpu_before
    own_after = resource.getrusage(resource.RUSAGE_SELF)
    machine_busy = machine_busy_seconds() - machine_before
    if scenario.settle_s:
        await asyncio.sleep(scenario.settle_s)
    sampler.cancel()
    peak_rss = memory_kib(daemon_pid, "VmHWM")
    loadgen_cpu = (own_after.ru_utime + own_after.ru_stime) - (
        own_before.ru_utime + own_before.ru_stime
    )
    return {
        "complete": complete,
        "started_at": started_at,
        "ended_at": ended_at,
        "daemon_cpu_s": daemon_cpu,
        "daemon_cpu_to_submitted_s": (
            cpu_at_submitted[0] - daemon_cpu_before if cpu_at_submitted else daemon_cpu
        ),
        "simulators_cpu_s": sims_cpu,
        "loadgen_cpu_s": loadgen_cpu,
        "other_cpu_s": max(0.0, machine_busy - daemon_cpu - sims_cpu - loadgen_cpu),
        "rss_before_kib": rss_before,
        "peak_rss_kib": peak_rss,
    }


# ── figures ────────────────────────────────────────────────────────────────────────


def _latencies_ms(start: Mapping[str, float], end: Mapping[str, float]) -> list[float]:
    return [(at - start[msg_id]) * 1000.0 for msg_id, at in end.items() if msg_id in start]


def _spread(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None}
    return {
        "p50": round(percentile(values, 0.50), 2),
        "p95": round(percentile(values, 0.95), 2),
        "p99": round(percentile(values, 0.99), 2),
    }


def _achieved_rates(
    scenario: Scenario, tally: Tally
) -> dict[str, dict[str, float | int | None]] | None:
    """Per limited bridge: messages/s after the bucket's initial burst, vs configured.

    A full token bucket lets `burst` go at once, then `rate` per second (GCRA, see
    engine/ratelimit.py), so the rate is (n - burst) ÷ (last submit - first submit).
    """
    if not scenario.rate_limits:
        return None
    rates: dict[str, dict[str, float | int | None]] = {}
    for bridge, (configured, burst) in scenario.rate_limits.items():
        times = sorted(
            at for msg_id, at in tally.submitted_at.items() if tally.bridge_of.get(msg_id) == bridge
        )
        span = times[-1] - times[0] if len(times) > 1 else 0.0
        achieved = (len(times) - burst) / span if span > 0 else None
        rates[bridge] = {
            "configured_per_s": configured,
            "achieved_per_s": round(achieved, 1) if achieved is not None else None,
            "error_pct": (
                round((achieved - configured) / configured * 100.0, 2)
                if achieved is not None
                else None
            ),
            "messages": len(times),
            "seconds": round(span, 2),
        }
    return rates


def _figures(
    scenario: Scenario,
    messages: int,
    shape: LoadShape,
    goal: Goal,
    tally: Tally,
    measured: Mapping[str, Any],
    latency_ms: float,
    pool: int,
) -> dict[str, Any]:
    rejected = tally.rejected_lines * shape.recipients_per_line
    if goal.until == "accepted":
        answered = tally.accepted + rejected
        done_at = tally.finished_at
        moved = tally.accepted
    else:
        answered = tally.submitted + tally.failed + rejected
        done_at = tally.all_submitted_at
        moved = tally.submitted
    wall_s = (done_at or measured["ended_at"]) - measured["started_at"]
    per_s = moved / wall_s if wall_s > 0 else 0.0
    daemon_cpu = measured["daemon_cpu_s"]
    result: dict[str, Any] = {
        "scenario": scenario.name,
        "description": scenario.description,
        "messages": messages,
        "recipients_per_line": shape.recipients_per_line,
        "texts": shape.texts,
        "encoding": shape.encoding,
        "bridges": sorted(set(shape.bridges)),
        "latency_ms": latency_ms,
        "pool": pool,
        "until": goal.until,
        "complete": measured["complete"],
        "pinned": _can_pin(),
        "accepted": tally.accepted,
        "submitted": tally.submitted,
        "dlr": tally.dlr,
        "failed": tally.failed,
        "rejected": rejected,
        "lost": max(0, messages - answered),
        "errors": tally.errors,
        "seconds": round(wall_s, 3),
        "messages_per_s": round(per_s, 1),
        "messages_per_min": round(per_s * 60.0),
        "submit_latency_ms": _spread(_latencies_ms(tally.accepted_at, tally.submitted_at)),
        "dlr_latency_ms": _spread(_latencies_ms(tally.submitted_at, tally.dlr_at)),
        "daemon_cpu_s": round(daemon_cpu, 3),
        "cpu_s_per_1000": round(daemon_cpu / messages * 1000.0, 4),
        "cpu_us_per_message": round(daemon_cpu / messages * 1e6, 1),
        "cpu_us_per_message_to_submitted": round(
            measured["daemon_cpu_to_submitted_s"] / messages * 1e6, 1
        ),
        "simulators_cpu_s": round(measured["simulators_cpu_s"], 3),
        "loadgen_cpu_s": round(measured["loadgen_cpu_s"], 3),
        # CPU other processes used meanwhile: well above zero means the run shared its
        # cores and its figures are pessimistic.
        "other_cpu_s": round(measured["other_cpu_s"], 3),
        "rss_before_mb": round(measured["rss_before_kib"] / 1024.0, 1),
        "peak_rss_mb": round(measured["peak_rss_kib"] / 1024.0, 1),
        "mean_batch": measured["mean_batch"],
    }
    if latency_ms > 0:
        # docs/design.md "Throughput model": at most `pool` requests in flight per bridge,
        # each carrying `batch` messages and taking `latency` seconds.
        model = sum(pool * batch / (latency_ms / 1000.0) for batch in result["mean_batch"].values())
        result["model_messages_per_s"] = round(model, 1)
        result["model_ratio"] = round(per_s / model, 3) if model else None
    rates = _achieved_rates(scenario, tally)
    if rates is not None:
        result["rates"] = rates
    return result


def _aggregate(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The median of each numeric figure over the runs; the runs themselves kept beside."""
    if len(runs) == 1:
        return {**runs[0], "runs": 1}

    def merge(values: Sequence[Any]) -> Any:
        present = [v for v in values if v is not None]
        if present and all(isinstance(v, dict) for v in present):
            keys = dict.fromkeys(k for v in present for k in v)
            return {k: merge([v.get(k) for v in present]) for k in keys}
        numbers = [v for v in present if isinstance(v, int | float) and not isinstance(v, bool)]
        if numbers and len(numbers) == len(present):
            return round(median(numbers), 3)
        return values[0] if all(v == values[0] for v in values) else list(values)

    merged = {key: merge([run.get(key) for run in runs]) for key in runs[0]}
    # Counts that must hold in every run are reported as the worst run, not the median.
    for key in ("lost", "failed", "rejected", "daemon_log_errors"):
        merged[key] = max(run[key] for run in runs)
    merged["complete"] = all(run["complete"] for run in runs)
    merged["plot"] = runs[0].get("plot")
    merged["runs"] = len(runs)
    merged["per_run"] = list(runs)
    return merged


# ── plot ───────────────────────────────────────────────────────────────────────────


def plot_run(path: Path, title: str, samples: Sequence[Sample], tally: Tally) -> Path | None:
    """Throughput, submit latency and daemon CPU/RSS over time, as a PNG (Agg backend)."""
    if len(samples) < 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    start = samples[0].at
    pairs = list(itertools.pairwise(samples))
    times = [b.at - start for _, b in pairs]
    accepted_rate = [(b.accepted - a.accepted) / (b.at - a.at) for a, b in pairs]
    submitted_rate = [(b.submitted - a.submitted) / (b.at - a.at) for a, b in pairs]
    cpu_percent = [(b.daemon_cpu_s - a.daemon_cpu_s) / (b.at - a.at) * 100.0 for a, b in pairs]
    rss_mb = [s.daemon_rss_kib / 1024.0 for s in samples[1:]]

    figure, (top, middle, bottom) = plt.subplots(3, 1, figsize=(9, 9), sharex=True)
    top.plot(times, accepted_rate, label="accepted/s", linewidth=1)
    top.plot(times, submitted_rate, label="submitted/s", linewidth=1)
    top.set_ylabel("messages/s")
    top.legend(loc="upper right")
    top.set_title(title)

    # Submit latency per half second of submit time: median and p99.
    bins: dict[int, list[float]] = {}
    for msg_id, at in tally.submitted_at.items():
        accepted_at = tally.accepted_at.get(msg_id)
        if accepted_at is not None:
            bins.setdefault(int((at - start) * 2), []).append((at - accepted_at) * 1000.0)
    if bins:
        keys = sorted(bins)
        middle.plot([k / 2 for k in keys], [percentile(bins[k], 0.5) for k in keys], label="p50")
        middle.plot([k / 2 for k in keys], [percentile(bins[k], 0.99) for k in keys], label="p99")
        middle.legend(loc="upper right")
    middle.set_ylabel("accept → submit, ms")

    bottom.plot(times, cpu_percent, label="daemon CPU %", color="tab:red", linewidth=1)
    bottom.set_ylabel("daemon CPU %")
    bottom.set_xlabel("seconds")
    memory = bottom.twinx()
    memory.plot(times, rss_mb, label="daemon RSS MB", color="tab:purple", linewidth=1)
    memory.set_ylabel("RSS MB")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


# ── main ───────────────────────────────────────────────────────────────────────────


def _table(results: Sequence[Mapping[str, Any]]) -> str:
    headers = [
        "scenario",
        "messages",
        "msg/s",
        "msg/min",
        "submit p50 ms",
        "p95",
        "p99",
        "dlr p50 ms",
        "cpu µs/msg",
        "peak RSS MB",
        "failed",
        "lost",
        "note",
    ]
    rows = []
    for r in results:
        note = ""
        if "model_ratio" in r:
            note = f"model {r['model_messages_per_s']:,.0f}/s, ratio {r['model_ratio']}"
        if "rates" in r:
            note = "; ".join(
                f"{b} {v['achieved_per_s']}/{v['configured_per_s']:.0f} ({v['error_pct']}%)"
                for b, v in r["rates"].items()
            )
        if r["scenario"] == "backlog":
            note = f"RSS before {r['rss_before_mb']} MB"
        rows.append(
            [
                r["scenario"],
                r["messages"],
                float(r["messages_per_s"]),
                float(r["messages_per_min"]),
                _or_nan(r["submit_latency_ms"]["p50"]),
                _or_nan(r["submit_latency_ms"]["p95"]),
                _or_nan(r["submit_latency_ms"]["p99"]),
                _or_nan(r["dlr_latency_ms"]["p50"]),
                float(r["cpu_us_per_message"]),
                float(r["peak_rss_mb"]),
                r["failed"],
                r["lost"],
                note,
            ]
        )
    return format_table(headers, rows)


def _or_nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(NAME, __doc__.splitlines()[0] if __doc__ else NAME)
    scenarios = _scenarios()
    parser.add_argument(
        "--scenario",
        action="append",
        choices=sorted(scenarios),
        help=f"run this preset (repeatable; default: {', '.join(DEFAULT_SCENARIOS)})",
    )
    parser.add_argument(
        "-n", "--messages", type=int, default=None, help="messages per run (default per preset)"
    )
    parser.add_argument("--latency-ms", type=float, default=None, help="simulator latency")
    parser.add_argument("--pool", type=int, default=None, help="requests in flight per bridge")
    parser.add_argument("--repeat", type=int, default=1, help="runs per scenario (median)")
    parser.add_argument(
        "--bridges", default=None, help="comma-separated bridges (default per preset)"
    )
    parser.add_argument(
        "--dlr-delay", type=float, default=0.0, help="simulator seconds before a DLR (default 0)"
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each run, wait up to SECONDS for the machine to be idle (default 0)",
    )
    parser.add_argument(
        "--no-wait-dlr", action="store_true", help="stop at the last submit, not the last DLR"
    )
    args = parser.parse_args(argv)
    if args.messages is not None and args.messages < 1:
        parser.error("--messages must be at least 1")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    bridges_flag: list[str] | None = None
    if args.bridges:
        bridges_flag = [b.strip() for b in args.bridges.split(",") if b.strip()]
        unknown = [b for b in bridges_flag if b not in PROVIDERS]
        if unknown:
            parser.error(f"unknown bridges: {', '.join(unknown)} (known: {', '.join(PROVIDERS)})")
    if _can_pin():
        os.sched_setaffinity(0, {LOADGEN_CORE})
    plots_dir = args.out.parent if args.out else RESULTS_DIR
    results: list[dict[str, Any]] = []
    for name in args.scenario or DEFAULT_SCENARIOS:
        scenario = scenarios[name]
        messages = args.messages or (scenario.quick_messages if args.quick else scenario.messages)
        runs: list[dict[str, Any]] = []
        for index in range(args.repeat):
            busy_before = wait_for_quiet(args.wait_quiet) if args.wait_quiet > 0 else None
            result, samples, tally = run_once(
                scenario,
                messages,
                latency_ms=scenario.latency_ms if args.latency_ms is None else args.latency_ms,
                pool=args.pool or scenario.pool,
                bridges=bridges_flag or scenario.shape.bridges,
                dlr_delay_s=args.dlr_delay,
                wait_dlr=not args.no_wait_dlr,
                progress=sys.stdout.isatty(),
            )
            result["machine_busy_before"] = busy_before
            result["plot"] = None
            if index == 0:
                plot = plot_run(
                    plots_dir / f"{NAME}_{name}.png",
                    f"septet pipeline: {name} ({messages:,} messages)",
                    samples,
                    tally,
                )
                result["plot"] = str(plot) if plot else None
            runs.append(result)
        results.append(_aggregate(runs))
        # Written after every scenario, so a long session keeps what it measured.
        path = write_results(NAME, results, quick=args.quick, out=args.out)
    print(format_table_title(args.quick))
    print(_table(results))
    print(f"results written to {path}")
    return 0 if all(r["lost"] == 0 and r["complete"] for r in results) else 1


def format_table_title(quick: bool) -> str:
    cores = "daemon on core 1, simulators and load on core 0" if _can_pin() else "unpinned"
    return f"septet pipeline ({'quick, ' if quick else ''}{cores})"


if __name__ == "__main__":
    sys.exit(main())
