"""septet side by side with Kannel: the same messages to the same Route Mobile simulator.

Kannel (Debian's `kannel` package: bearerbox + smsbox) sends through its generic HTTP
SMSC, whose send-url template fits Route Mobile's GET API (docs/providers.md "routemobile");
septet sends through its routemobile bridge. Per simulator latency (0 and 50 ms) one
simulator process serves every run in turn (counters reset in between), and each run
pushes the same N messages:

  kannel   N sendsms GETs, 200 in flight, one recipient each, distinct texts;
           max-pending-submits 100 and 500, log level 2 (warnings only)
  septet   N recipients over the NDJSON socket: distinct texts one per line (pool 100
           and 500), or one text in lines of 100 recipients (batched, pool 100)
  septet-api  N POSTs to septet's HTTP API (/v1/messages), one message each, as many in
           flight as Kannel's sendsms load (pool 100; the same bare HTTP client),
           asking for no delivery report ("dlr": false) as Kannel's send-url and
           septet's NDJSON lines don't

A run lasts from the first byte sent until the simulator has accepted N messages, so
both systems are measured to the provider. The engine's CPU (Kannel: bearerbox +
smsbox; septet: the daemon) is utime + stime from /proc, per message. The simulator
and this load generator run on core 0, the engine on core 1. Ratios are septet ÷
Kannel: unbatched pool P (NDJSON or HTTP API) against max-pending-submits P, batched
against Kannel's faster setting at that latency.

    python -m bench.kannel [--quick] [--out FILE] [-n N] [--latency-ms M ...]
        [--repeat R] [--concurrency C] [--wait-quiet SECONDS] [--only ROW ...]
        [--keep-failed DIR]

`--only "septet pool 500"` runs that row alone (repeat it with --repeat to chase a rare
failure); `--keep-failed DIR` keeps a septet run that passed its deadline (bench.stuck).

Nothing is installed here: without bearerbox and smsbox the bench says how to install
them and exits 2. (Past 600 lines: Kannel's set-up, its sendsms load generator and the
comparison are one bench; the load generator could move to its own module.)
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Coroutine, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TypeVar, cast

import aiohttp
import msgspec
import uvloop

from bench import stuck
from bench.common import base_parser, format_table, median, write_results
from bench.loadgen import NUMBER_FORMATS, Goal, Tally, chunk_lines, feed_and_collect
from bench.pipeline import (
    cpu_seconds,
    daemon_config,
    machine_busy_seconds,
    render_toml,
    start_daemon,
    start_simulators,
    stop_process,
    wait_for_quiet,
    wait_healthy,
)
from engine.config import load_config

NAME = "kannel"
HOST = "127.0.0.1"
LOAD_CORE = 0  # with the simulator (bench.pipeline starts it there)
ENGINE_CORE = 1
KANNEL_MISSING = "Kannel is not installed: apt-get install kannel (Debian/Ubuntu)"
# Debian installs the boxes in /usr/sbin, which is not on every user's PATH.
KANNEL_DIRS = ("/usr/sbin", "/usr/local/sbin")
KANNEL_LOG_LEVEL = 2  # Kannel's levels: 0 debug, 1 info, 2 warning, 3 error, 4 panic
SENDSMS_USER = "bench"
SENDSMS_PASSWORD = "bench"  # noqa: S105 - a throwaway account on 127.0.0.1
SENDER = "SEPTET"  # alphanumeric, at most 11: Route Mobile's `source` rule (docs/providers.md)
TEXT = "Your septet bench code is {}. Thank you for testing."
NUMBER_FORMAT = NUMBER_FORMATS["routemobile"]
BATCH = 100  # docs/providers.md: Route Mobile's recipient cap per request, "use 100"
KANNEL_PENDING = (100, 500)
SEPTET_POOLS = (100, 500)
BATCHED_POOL = 100
API_POOL = 100
LATENCIES_MS = (0.0, 50.0)
# Batched septet takes 100,000 in about 4 s; at 30,000 a run lasted about a second and its
# rate scattered widely (17,000-31,000 msg/s at 50 ms in one run of 3).
MESSAGES = 100_000
QUICK_MESSAGES = 2_000
# Kannel's generic HTTP SMSC fills send-url like an sms-service URL but with the roles
# of an MT message: %p is the receiver, %P the sender, %b the text URL-encoded (checked
# against Kannel 1.4.5: the reverse puts the sender in `destination`). type=0 is GSM
# text and dlr=0 asks for no report (docs/providers.md "routemobile"); septet sends dlr=0 too.
SEND_URL = (
    "{sim_url}/bulksms/bulksms?username=demo&password=demo&type=0&dlr=0"
    "&destination=%p&source=%P&message=%b"
)
# Route Mobile answers HTTP 200 whatever happened; success is `1701|<cell>|<id>` per
# destination (docs/providers.md). Kannel matches this POSIX regex against the body; a
# bracket keeps `|` literal without a backslash for kannel.conf's string rules.
SUCCESS_REGEX = "^1701[|]"
_T = TypeVar("_T")


# ── Kannel: binaries, config, processes ───────────────────────────────────────────


class KannelBinaries(msgspec.Struct, frozen=True):
    bearerbox: str
    smsbox: str


def find_kannel() -> KannelBinaries | None:
    """bearerbox and smsbox on PATH or in the sbin directories, or None."""
    search = os.pathsep.join([os.environ.get("PATH", ""), *KANNEL_DIRS])
    bearerbox = shutil.which("bearerbox", path=search)
    smsbox = shutil.which("smsbox", path=search)
    if bearerbox is None or smsbox is None:
        return None
    return KannelBinaries(bearerbox=bearerbox, smsbox=smsbox)


class KannelPorts(msgspec.Struct, frozen=True, kw_only=True):
    admin: int
    smsbox: int  # bearerbox ↔ smsbox
    smsc: int  # the HTTP SMSC's own listener (MO and reports; unused here)
    sendsms: int


def kannel_config(
    workdir: Path, *, ports: KannelPorts, sim_url: str, max_pending_submits: int
) -> str:
    """kannel.conf: core (file store), the generic HTTP SMSC, smsbox, one sendsms user."""
    groups: list[dict[str, str | int]] = [
        {
            "group": "core",
            "admin-port": ports.admin,
            "admin-password": "bench",
            "admin-allow-ip": HOST,
            "smsbox-port": ports.smsbox,
            "box-allow-ip": HOST,
            "log-level": KANNEL_LOG_LEVEL,
            "log-file": str(workdir / "bearerbox.log"),
            # Kannel's own durability: every message is kept in the store until sent.
            "store-type": "file",
            "store-location": str(workdir / "kannel.store"),
        },
        {
            "group": "smsc",
            "smsc": "http",
            "smsc-id": "routemobile",
            "system-type": "generic",
            "port": ports.smsc,
            "connect-allow-ip": HOST,
            "send-url": SEND_URL.format(sim_url=sim_url),
            "status-success-regex": SUCCESS_REGEX,
            "max-pending-submits": max_pending_submits,
        },
        {
            "group": "smsbox",
            "bearerbox-host": HOST,
            "bearerbox-port": ports.smsbox,
            "sendsms-port": ports.sendsms,
            "log-level": KANNEL_LOG_LEVEL,
            "log-file": str(workdir / "smsbox.log"),
        },
        {
            "group": "sendsms-user",
            "username": SENDSMS_USER,
            "password": SENDSMS_PASSWORD,
        },
    ]
    return "\n".join(
        "".join(f"{key} = {_kannel_value(value)}\n" for key, value in group.items())
        for group in groups
    )


def _kannel_value(value: str | int) -> str:
    if isinstance(value, int):
        return str(value)
    if '"' in value or "\\" in value:
        raise ValueError(f"no kannel.conf form for {value!r}")
    return f'"{value}"'


def _pin(core: int) -> Callable[[], None]:
    def pin() -> None:
        if can_pin():
            os.sched_setaffinity(0, {core})

    return pin


def can_pin() -> bool:
    return hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > ENGINE_CORE


def free_port() -> int:
    """A free port below the ephemeral range (32768+ on Linux).

    A port the kernel picked with bind(0) comes from the range outgoing connections use,
    and with thousands of those per run one is sometimes taken before Kannel binds it.
    """
    for _ in range(100):  # bounded
        port = random.randrange(20_000, 32_768)
        with socket.socket() as probe:
            try:
                probe.bind((HOST, port))
            except OSError:
                continue
            return port
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        fallback: int = probe.getsockname()[1]
        return fallback


def _start_box(binary: str, config_path: Path, log_path: Path) -> subprocess.Popen[bytes]:
    # -v sets the console log level; the config's log-level only covers the log file.
    command = [binary, "-v", str(KANNEL_LOG_LEVEL), str(config_path)]
    with log_path.open("ab") as log:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_pin(ENGINE_CORE),
        )


def kannel_status(ports: KannelPorts) -> str:
    url = f"http://{HOST}:{ports.admin}/status.txt?password=bench"
    with urllib.request.urlopen(url, timeout=2.0) as reply:
        text: str = reply.read().decode("utf-8", "replace")
        return text


def kannel_ready(status: str) -> bool:
    """smsbox has connected to bearerbox and the SMSC is online (admin status.txt)."""
    boxes = status.split("Box connections:", 1)[-1].split("SMSC connections:", 1)[0]
    return "smsbox:" in boxes and "(online" in status


def wait_kannel_ready_bearerbox(
    bearerbox: subprocess.Popen[bytes], ports: KannelPorts, log_path: Path
) -> None:
    """bearerbox answers on its admin port (smsbox connects to it next)."""
    for _ in range(200):  # bounded: about 20 s
        if bearerbox.poll() is not None:
            raise RuntimeError(f"bearerbox exited: {log_path.read_text(errors='replace')[-2000:]}")
        try:
            kannel_status(ports)
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("bearerbox did not answer on its admin port in 20 s")


def wait_kannel_ready(
    processes: Sequence[subprocess.Popen[bytes]], ports: KannelPorts, log_path: Path
) -> None:
    for _ in range(200):  # bounded: about 20 s
        if any(process.poll() is not None for process in processes):
            raise RuntimeError(f"Kannel exited: {log_path.read_text(errors='replace')[-2000:]}")
        try:
            if kannel_ready(kannel_status(ports)):
                with socket.create_connection((HOST, ports.sendsms), timeout=1.0):
                    return
        except OSError:
            pass  # not listening yet: poll again until the deadline
        time.sleep(0.1)
    raise RuntimeError("Kannel did not become ready in 20 s")


# ── the load: sendsms requests, NDJSON lines ──────────────────────────────────────


def recipient(index: int) -> str:
    return NUMBER_FORMAT.format(index)


def sendsms_requests(count: int, port: int) -> list[bytes]:
    """`count` keep-alive GETs of Kannel's sendsms, one recipient and one text each."""
    head = f"/cgi-bin/sendsms?username={SENDSMS_USER}&password={SENDSMS_PASSWORD}&from={SENDER}"
    tail = f" HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n"
    quote = urllib.parse.quote_plus
    return [
        f"GET {head}&to={quote(recipient(i))}&text={quote(TEXT.format(i))}{tail}".encode()
        for i in range(count)
    ]


class _Line(msgspec.Struct):
    to: str | list[str]
    text: str
    dlr: bool = False  # as Kannel's send-url: no delivery report asked for


_line_encoder = msgspec.json.Encoder()


def septet_lines(count: int, *, batched: bool) -> list[bytes]:
    """NDJSON for `count` recipients: distinct texts one per line, or one text per 100."""
    if not batched:
        return [
            _line_encoder.encode(_Line(to=recipient(i), text=TEXT.format(i))) + b"\n"
            for i in range(count)
        ]
    return [
        _line_encoder.encode(
            _Line(
                to=[recipient(i) for i in range(start, min(count, start + BATCH))],
                text=TEXT.format(4242),
            )
        )
        + b"\n"
        for start in range(0, count, BATCH)
    ]


class SendsmsLoad:
    """The requests still to send, shared by every connection, and what came back."""

    def __init__(self, requests: Sequence[bytes]) -> None:
        self.requests = requests
        self.next_index = 0
        self.accepted = 0  # Kannel's 202 "0: Accepted for delivery"
        self.refused: dict[int, int] = {}  # any other status
        self.dropped = 0  # connection lost with a request in flight: outcome unknown
        self.finished_at: float | None = None

    def take(self) -> bytes | None:
        if self.next_index >= len(self.requests):
            return None
        request = self.requests[self.next_index]
        self.next_index += 1
        return request

    def answered(self, status: int, body: bytes) -> None:
        if self.took(status, body):
            self.accepted += 1
        else:
            self.refused[status] = self.refused.get(status, 0) + 1
        if self.accepted + sum(self.refused.values()) + self.dropped >= len(self.requests):
            self.finished_at = time.time()

    def took(self, status: int, body: bytes) -> bool:
        """Whether the engine took the request's message: Kannel's 202."""
        del body
        return status == 202

    def expected(self) -> int:
        """Messages the provider should see: every request not refused outright."""
        return len(self.requests) - sum(self.refused.values()) - self.dropped


class ApiLoad(SendsmsLoad):
    """POSTs of one message each to septet's /v1/messages: taken when the answer says the
    message was accepted (a refused line is answered 200 too, with its reason)."""

    def took(self, status: int, body: bytes) -> bool:
        return status == 200 and b'"result":"accepted"' in body


def api_requests(bodies: Sequence[bytes], port: int, api_key: str) -> list[bytes]:
    """Each JSON body as a keep-alive POST to septet's /v1/messages."""
    head = (
        f"POST /v1/messages HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
        f"Authorization: Bearer {api_key}\r\nContent-Type: application/json\r\n"
    ).encode()
    return [head + b"Content-Length: %d\r\n\r\n" % len(body) + body for body in bodies]


_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)


class _SendsmsConnection(asyncio.Protocol):
    """One keep-alive connection: a request, its whole reply, the next request.

    A bare protocol instead of an HTTP client library keeps the load generator's CPU
    small: it shares core 0 with the simulator, and an expensive client there would
    cap Kannel below its own limit.
    """

    def __init__(self, load: SendsmsLoad, closed: asyncio.Future[None]) -> None:
        self.load = load
        self.closed = closed
        self.buffer = b""
        self.in_flight = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = cast(asyncio.Transport, transport)
        self._send_next()

    def _send_next(self) -> None:
        assert self.transport is not None
        request = self.load.take()
        if request is None:
            self.in_flight = False
            self.transport.close()
            return
        self.in_flight = True
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data
        while self.in_flight:
            head_end = buffer.find(b"\r\n\r\n")
            if head_end < 0:
                break
            match = _CONTENT_LENGTH.search(buffer, 0, head_end + 2)
            end = head_end + 4 + (int(match.group(1)) if match else 0)
            if len(buffer) < end:
                break
            self.load.answered(int(buffer[9:12]), buffer[head_end + 4 : end])  # "HTTP/1.1 202"
            buffer = buffer[end:]
            self._send_next()
        self.buffer = buffer

    def connection_lost(self, exc: Exception | None) -> None:
        if self.in_flight:
            self.in_flight = False
            self.load.dropped += 1
        if not self.closed.done():
            self.closed.set_result(None)


async def send_sendsms(port: int, load: SendsmsLoad, concurrency: int) -> None:
    """Every request of `load` over `concurrency` connections, reconnecting when one drops."""
    loop = asyncio.get_running_loop()

    async def connection() -> None:
        while load.next_index < len(load.requests):
            closed: asyncio.Future[None] = loop.create_future()
            await loop.create_connection(partial(_SendsmsConnection, load, closed), HOST, port)
            await closed

    await asyncio.gather(*(connection() for _ in range(concurrency)))


class _Counted(msgspec.Struct):
    accepted_total: int


_counters_decoder = msgspec.json.Decoder(dict[str, _Counted])


async def wait_for_provider(
    session: aiohttp.ClientSession,
    sim_url: str,
    expected: Callable[[], int],
    started_at: float,
    load: asyncio.Future[Any] | None = None,
) -> tuple[float, int]:
    """Poll the simulator until it has accepted `expected()` messages: (when, how many).

    The poll interval shrinks as the goal nears (half the time left at the rate so far,
    5–200 ms), so the end is seen to within a few ms without polling hard all along.
    A `load` task that fails (say its connection was refused) raises its error here at
    once: what it never sent, the provider will never count.
    """
    url = f"{sim_url}/_sim/counters?provider=routemobile"
    while True:  # bounded by the caller's timeout
        if load is not None and load.done() and not load.cancelled():
            load.result()  # raises the load's error; a load that ended well waits on
        async with session.get(url) as reply:
            counted = _counters_decoder.decode(await reply.read())["routemobile"].accepted_total
        now = time.time()
        goal = expected()
        if counted >= goal:
            return now, counted
        rate = counted / (now - started_at) if counted and now > started_at else 0.0
        left_s = (goal - counted) / rate if rate else 0.2
        await asyncio.sleep(min(0.2, max(0.005, left_s / 2)))


def _reset_counters(sim_url: str) -> None:
    url = f"{sim_url}/_sim/reset?provider=routemobile"
    request = urllib.request.Request(url, method="POST")  # noqa: S310 - our 127.0.0.1 URL
    with urllib.request.urlopen(request, timeout=5.0):  # noqa: S310 - the same URL
        pass  # the reset is the request itself; urlopen raises on an HTTP error


# ── one run of each system ────────────────────────────────────────────────────────


class Setting(msgspec.Struct, frozen=True, kw_only=True):
    """One engine set-up: Kannel with a max-pending-submits, or septet with a pool."""

    system: str  # "kannel" | "septet" (NDJSON) | "septet-api" (POST /v1/messages)
    max_pending_submits: int | None = None
    pool: int | None = None
    batched: bool = False

    @property
    def label(self) -> str:
        if self.system == "kannel":
            return f"max-pending-submits {self.max_pending_submits}"
        if self.system == "septet-api":
            return f"pool {self.pool}, HTTP API, 1 per request"
        return f"pool {self.pool}" + (f", batches of {BATCH}" if self.batched else "")


def settings() -> list[Setting]:
    kannel = [Setting(system="kannel", max_pending_submits=n) for n in KANNEL_PENDING]
    septet = [Setting(system="septet", pool=n) for n in SEPTET_POOLS]
    batched = Setting(system="septet", pool=BATCHED_POOL, batched=True)
    # septet's HTTP API with Kannel's sendsms load: one message per request, as many in flight.
    api = Setting(system="septet-api", pool=API_POOL)
    return [*kannel, *septet, batched, api]


def row_name(setting: Setting) -> str:
    """A row as --only names it: "septet pool 500", "kannel max-pending-submits 100"."""
    return f"{setting.system} {setting.label}"


def row_names() -> list[str]:
    return [row_name(setting) for setting in settings()]


class _Clocks:
    """CPU and wall clocks read together at the start and at the end of a run."""

    def __init__(self, engine_pids: Sequence[int], sim_pid: int) -> None:
        self.engine_pids = engine_pids
        self.sim_pid = sim_pid
        self.at = time.time()
        self.engine = self._engine()
        self.sim = cpu_seconds(sim_pid)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        self.own = usage.ru_utime + usage.ru_stime
        self.machine = machine_busy_seconds()

    def _engine(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.engine_pids)

    def figures(self, end: _Clocks, reached_at: float | None) -> dict[str, float]:
        engine = end.engine - self.engine
        sim = end.sim - self.sim
        own = end.own - self.own
        seconds = (reached_at or end.at) - self.at
        return {
            "seconds": seconds,
            "engine_cpu_s": engine,
            "simulator_cpu_s": sim,
            "loadgen_cpu_s": own,
            # Core 0's load: near 1.0 means the load side, not the engine, set the pace.
            "core0_busy": (sim + own) / seconds if seconds > 0 else 0.0,
            # CPU other processes used meanwhile: well above 0 makes the run pessimistic.
            "other_cpu_s": max(0.0, end.machine - self.machine - engine - sim - own),
        }


def _run_loop(coroutine: Coroutine[Any, Any, _T]) -> _T:
    """Run on uvloop: the load generator's own cost stays small on the shared core 0."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coroutine)


def _deadline_s(messages: int, latency_ms: float) -> float:
    return 30.0 + messages / 200.0 + latency_ms


async def _drive_kannel(
    port: int, load: SendsmsLoad, concurrency: int, sim_url: str, pids: Sequence[int], sim_pid: int
) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        start = _Clocks(pids, sim_pid)
        sending = asyncio.ensure_future(send_sendsms(port, load, concurrency))
        try:
            reached_at, counted = await wait_for_provider(
                session, sim_url, load.expected, start.at, sending
            )
            end = _Clocks(pids, sim_pid)
            await sending
        finally:
            sending.cancel()
    figures: dict[str, Any] = start.figures(end, reached_at)
    figures["provider_accepted"] = counted
    figures["sendsms_seconds"] = (load.finished_at or end.at) - start.at
    errors = {f"sendsms HTTP {status}": n for status, n in load.refused.items()}
    if load.dropped:
        errors["sendsms connection lost"] = load.dropped
    figures["errors"] = errors
    return figures


def start_kannel(
    binaries: KannelBinaries, config_path: Path, ports: KannelPorts, log_path: Path
) -> list[subprocess.Popen[bytes]]:
    """bearerbox, then smsbox once bearerbox answers; both stopped again if either fails."""
    boxes = [_start_box(binaries.bearerbox, config_path, log_path)]
    try:
        wait_kannel_ready_bearerbox(boxes[0], ports, log_path)
        boxes.append(_start_box(binaries.smsbox, config_path, log_path))
        wait_kannel_ready(boxes, ports, log_path)
    except BaseException:
        stop_kannel(boxes)
        raise
    return boxes


def stop_kannel(boxes: Sequence[subprocess.Popen[bytes]]) -> None:
    # smsbox first, so bearerbox does not wait for a box that is going anyway.
    for box in reversed(boxes):
        stop_process(box)


def run_kannel(
    binaries: KannelBinaries,
    setting: Setting,
    messages: int,
    *,
    sim_url: str,
    sim_pid: int,
    concurrency: int,
    deadline_s: float,
) -> dict[str, Any]:
    assert setting.max_pending_submits is not None
    with tempfile.TemporaryDirectory(prefix="septet-kannel-") as tmp:
        workdir = Path(tmp)
        ports = KannelPorts(
            admin=free_port(), smsbox=free_port(), smsc=free_port(), sendsms=free_port()
        )
        config_path = workdir / "kannel.conf"
        config_path.write_text(
            kannel_config(
                workdir,
                ports=ports,
                sim_url=sim_url,
                max_pending_submits=setting.max_pending_submits,
            )
        )
        load = SendsmsLoad(sendsms_requests(messages, ports.sendsms))
        boxes = start_kannel(binaries, config_path, ports, workdir / "console.log")
        pids = [box.pid for box in boxes]
        try:
            figures = _run_loop(
                asyncio.wait_for(
                    _drive_kannel(ports.sendsms, load, concurrency, sim_url, pids, sim_pid),
                    deadline_s,
                )
            )
            figures["complete"] = True
        except TimeoutError:
            figures = {"complete": False, "errors": {"deadline passed": 1}}
        finally:
            stop_kannel(boxes)
    return figures


async def drive_septet(
    tcp_port: int,
    lines: Sequence[bytes],
    setting: Setting,
    sim_url: str,
    daemon_pid: int,
    sim_pid: int,
    tally: Tally,
) -> dict[str, Any]:
    messages = len(lines) * (BATCH if setting.batched else 1)
    chunks = chunk_lines(lines)
    per_line = BATCH if setting.batched else 1
    goal = Goal(messages=messages, recipients_per_line=per_line, until="submitted")

    def expected() -> int:
        return messages - tally.failed - tally.rejected_lines * per_line

    async with aiohttp.ClientSession() as session:
        start = _Clocks([daemon_pid], sim_pid)
        feeding = asyncio.ensure_future(
            feed_and_collect(HOST, tcp_port, chunks, tally, goal, deadline_s=3600.0)
        )
        try:
            reached_at, counted = await wait_for_provider(
                session, sim_url, expected, start.at, feeding
            )
            end = _Clocks([daemon_pid], sim_pid)
            await feeding
        finally:
            feeding.cancel()
    figures: dict[str, Any] = start.figures(end, reached_at)
    figures["provider_accepted"] = counted
    figures["errors"] = dict(tally.errors)
    return figures


def run_septet(
    setting: Setting,
    messages: int,
    *,
    sim_url: str,
    sim_pid: int,
    deadline_s: float,
    keep_dir: Path | None = None,
) -> dict[str, Any]:
    """One septet run; past its deadline, what was left unfinished (bench.stuck) and, with
    `keep_dir`, the run's config, journal and daemon log kept there."""
    assert setting.pool is not None
    lines = septet_lines(messages, batched=setting.batched)
    # Per-message ids only when a failure is to be explained (they cost the load core).
    tally = Tally(track=keep_dir is not None)
    with tempfile.TemporaryDirectory(prefix="septet-kannel-") as tmp:
        workdir = Path(tmp)
        tcp_port, http_port = free_port(), free_port()
        document = daemon_config(
            workdir,
            sim_url=sim_url,
            tcp_port=tcp_port,
            http_port=http_port,
            bridges=["routemobile"],
            pool=setting.pool,
            overrides={},
        )
        config_path = workdir / "septet.toml"
        config_path.write_text(render_toml(document))
        log_path = workdir / "daemon.log"
        daemon = start_daemon(config_path, log_path)  # pinned to core 1
        try:
            wait_healthy(daemon, http_port, log_path, also=[tcp_port])
            drive = drive_septet(tcp_port, lines, setting, sim_url, daemon.pid, sim_pid, tally)
            try:
                figures = _run_loop(asyncio.wait_for(drive, deadline_s))
                figures["complete"] = True
            except TimeoutError:
                figures = {"complete": False, "errors": {"deadline passed": 1}}
                recipients = [recipient(i) for i in range(messages)]
                settings = load_config(str(config_path)).settings
                report = stuck.diagnose(settings, sim_url, "routemobile", tally, recipients)
                figures["stuck"] = report.summary()
                if keep_dir is not None:
                    stop_process(daemon)  # its journal and log complete before the copy
                    kept = stuck.keep_workdir(workdir, keep_dir, row_name(setting), report)
                    figures["kept"] = str(kept)
        finally:
            stop_process(daemon)
    return figures


async def _drive_septet_api(
    api_port: int,
    bodies: Sequence[bytes],
    concurrency: int,
    sim_url: str,
    daemon_pid: int,
    sim_pid: int,
) -> dict[str, Any]:
    """Kannel's sendsms load shape on septet's API, from the same bare client (a client
    library on core 0 would cap septet's rate there, as it would Kannel's)."""
    from bench import api as api_bench  # bench.api imports this module

    load = ApiLoad(api_requests(bodies, api_port, api_bench.API_KEY))
    async with aiohttp.ClientSession() as session:
        start = _Clocks([daemon_pid], sim_pid)
        sending = asyncio.ensure_future(send_sendsms(api_port, load, concurrency))
        try:
            reached_at, counted = await wait_for_provider(
                session, sim_url, load.expected, start.at, sending
            )
            end = _Clocks([daemon_pid], sim_pid)
            await sending
        finally:
            sending.cancel()
    figures: dict[str, Any] = start.figures(end, reached_at)
    figures["provider_accepted"] = counted
    errors = {f"API HTTP {status}": n for status, n in load.refused.items()}
    if load.dropped:
        errors["API connection lost"] = load.dropped
    figures["errors"] = errors
    return figures


def run_septet_api(
    setting: Setting,
    messages: int,
    *,
    sim_url: str,
    sim_pid: int,
    concurrency: int,
    deadline_s: float,
) -> dict[str, Any]:
    """septet with Kannel's sendsms load shape on its own API: one message per POST."""
    from bench import api as api_bench  # bench.api imports this module

    assert setting.pool is not None
    bodies = api_bench.request_bodies(messages, "single")
    with tempfile.TemporaryDirectory(prefix="septet-kannel-api-") as tmp:
        workdir = Path(tmp)
        api_port, http_port = free_port(), free_port()
        document = api_bench.api_config(workdir, sim_url, api_port, http_port)
        document["bridges"]["routemobile"]["pool"] = setting.pool
        config_path = workdir / "septet.toml"
        config_path.write_text(render_toml(document))
        log_path = workdir / "daemon.log"
        daemon = start_daemon(config_path, log_path)  # pinned to core 1
        try:
            wait_healthy(daemon, http_port, log_path, also=[api_port])
            drive = _drive_septet_api(api_port, bodies, concurrency, sim_url, daemon.pid, sim_pid)
            try:
                figures = _run_loop(asyncio.wait_for(drive, deadline_s))
                figures["complete"] = True
            except TimeoutError:
                figures = {"complete": False, "errors": {"deadline passed": 1}}
        finally:
            stop_process(daemon)
    return figures


START_ATTEMPTS = 3  # e.g. a port taken between choosing it and the engine binding it


def _run_setting(
    binaries: KannelBinaries,
    setting: Setting,
    messages: int,
    *,
    sim_url: str,
    sim_pid: int,
    concurrency: int,
    deadline_s: float,
    keep_dir: Path | None = None,
) -> dict[str, Any]:
    """One run of either system, started afresh (at most 3 times) if it could not run."""
    errors: dict[str, int] = {}
    for _ in range(START_ATTEMPTS):
        _reset_counters(sim_url)
        try:
            if setting.system == "kannel":
                figures = run_kannel(
                    binaries,
                    setting,
                    messages,
                    sim_url=sim_url,
                    sim_pid=sim_pid,
                    concurrency=concurrency,
                    deadline_s=deadline_s,
                )
            elif setting.system == "septet-api":
                figures = run_septet_api(
                    setting,
                    messages,
                    sim_url=sim_url,
                    sim_pid=sim_pid,
                    concurrency=concurrency,
                    deadline_s=deadline_s,
                )
            else:
                figures = run_septet(
                    setting,
                    messages,
                    sim_url=sim_url,
                    sim_pid=sim_pid,
                    deadline_s=deadline_s,
                    keep_dir=keep_dir,
                )
        except (RuntimeError, OSError) as error:
            key = f"{type(error).__name__}: {error}"[:200]
            errors[key] = errors.get(key, 0) + 1
            continue
        if errors:
            figures["restarts"] = errors
        return figures
    return {"complete": False, "errors": errors}


# ── figures ────────────────────────────────────────────────────────────────────────


def run_result(
    setting: Setting, latency_ms: float, messages: int, figures: Mapping[str, Any]
) -> dict[str, Any]:
    seconds = float(figures.get("seconds", 0.0))
    complete = bool(figures.get("complete")) and seconds > 0
    moved = figures.get("provider_accepted", 0)
    result: dict[str, Any] = {
        "latency_ms": latency_ms,
        "system": setting.system,
        "setting": setting.label,
        "max_pending_submits": setting.max_pending_submits,
        "pool": setting.pool,
        "recipients_per_line": BATCH if setting.batched else 1,
        "messages": messages,
        "complete": complete,
        "provider_accepted": moved,
        "errors": dict(figures.get("errors", {})),
    }
    if "restarts" in figures:
        result["restarts"] = figures["restarts"]  # runs that could not run, then did
    for key in ("stuck", "kept"):  # past its deadline: what was unfinished, where its files are
        if key in figures:
            result[key] = figures[key]
    if complete:
        engine_cpu = figures["engine_cpu_s"]
        result |= {
            "seconds": round(seconds, 3),
            "messages_per_s": round(min(moved, messages) / seconds, 1),
            "engine_cpu_s": round(engine_cpu, 3),
            "cpu_us_per_message": round(engine_cpu / messages * 1e6, 1),
            "simulator_cpu_s": round(figures["simulator_cpu_s"], 3),
            "loadgen_cpu_s": round(figures["loadgen_cpu_s"], 3),
            "core0_busy": round(figures["core0_busy"], 3),
            "other_cpu_s": round(figures["other_cpu_s"], 3),
        }
        if "sendsms_seconds" in figures:
            result["sendsms_per_s"] = round(messages / figures["sendsms_seconds"], 1)
    return result


_MEDIAN_KEYS = (
    "seconds",
    "messages_per_s",
    "engine_cpu_s",
    "cpu_us_per_message",
    "simulator_cpu_s",
    "loadgen_cpu_s",
    "core0_busy",
    "other_cpu_s",
    "sendsms_per_s",
)


def aggregate(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One row from repeated runs: the median of each figure over the complete runs."""
    merged = dict(runs[0])
    done = [run for run in runs if run["complete"]]
    merged["complete"] = len(done) == len(runs)
    merged["provider_accepted"] = min(run["provider_accepted"] for run in runs)
    errors: dict[str, int] = {}
    for run in runs:
        for key, count in run["errors"].items():
            errors[key] = errors.get(key, 0) + count
    merged["errors"] = errors
    for key in _MEDIAN_KEYS:
        values = [run[key] for run in done if key in run]
        if values:
            merged[key] = round(median(values), 3)
        else:
            merged.pop(key, None)
    merged["runs"] = len(runs)
    if len(runs) > 1:
        merged["per_run"] = [dict(run) for run in runs]
    return merged


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """Each septet row against its Kannel counterpart at the same latency (septet ÷ Kannel).

    Unbatched pool P meets max-pending-submits P (the same requests in flight); batched
    meets whichever Kannel setting was faster there, Kannel at its best.
    """
    for row in rows:
        if row["system"] not in ("septet", "septet-api"):
            continue
        kannel = [
            other
            for other in rows
            if other["system"] == "kannel"
            and other["latency_ms"] == row["latency_ms"]
            and "messages_per_s" in other
        ]
        if row["recipients_per_line"] == 1:
            kannel = [k for k in kannel if k["max_pending_submits"] == row["pool"]]
        if not kannel or "messages_per_s" not in row:
            continue
        best = max(kannel, key=lambda k: float(k["messages_per_s"]))
        row["compared_with"] = f"kannel {best['setting']}"
        row["rate_ratio"] = round(row["messages_per_s"] / best["messages_per_s"], 2)
        row["cpu_ratio"] = round(row["cpu_us_per_message"] / best["cpu_us_per_message"], 3)


def table(rows: Sequence[Mapping[str, Any]]) -> str:
    headers = [
        "latency ms",
        "system",
        "setting",
        "messages",
        "msg/s",
        "cpu µs/msg",
        "core 0 busy",
        "rate ×",
        "cpu ×",
        "vs",
    ]
    body = []
    for row in rows:
        done = "messages_per_s" in row
        body.append(
            [
                row["latency_ms"],
                row["system"],
                row["setting"],
                row["messages"],
                float(row["messages_per_s"]) if done else "incomplete",
                float(row["cpu_us_per_message"]) if done else "-",
                float(row["core0_busy"]) if done else "-",
                float(row.get("rate_ratio", float("nan"))),
                float(row.get("cpu_ratio", float("nan"))),
                row.get("compared_with", ""),
            ]
        )
    return format_table(headers, body)


def progress_line(result: Mapping[str, Any]) -> str:
    head = f"{result['latency_ms']:g} ms {result['system']} {result['setting']}:"
    # A run started afresh says why (a refused load connection, a slow start), so a rare
    # failure is seen in the log, not only in the JSON.
    again = f"; started again after {result['restarts']}" if "restarts" in result else ""
    if "messages_per_s" not in result:
        why = "".join(f"; {key}: {result[key]}" for key in ("stuck", "kept") if key in result)
        return f"{head} incomplete {result['errors']}{why}{again}"
    return (
        f"{head} {result['messages_per_s']:,.0f} msg/s, {result['cpu_us_per_message']:,.0f} µs/msg"
        f" (other processes {result['other_cpu_s']:.2f} CPU s){again}"
    )


# ── main ───────────────────────────────────────────────────────────────────────────


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(NAME, __doc__.splitlines()[0] if __doc__ else NAME)
    parser.add_argument(
        "-n",
        "--messages",
        type=int,
        default=None,
        help=f"messages per run (default {MESSAGES:,}; --quick {QUICK_MESSAGES:,})",
    )
    parser.add_argument(
        "--latency-ms",
        type=float,
        action="append",
        default=None,
        help="simulator latency (repeatable; default 0 and 50)",
    )
    parser.add_argument(
        "--repeat", type=int, default=None, help="runs per setting, median (default 3; --quick 1)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=200, help="sendsms requests in flight (default 200)"
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each run, wait up to SECONDS for the machine to be idle (default 0)",
    )
    parser.add_argument(
        "--only",
        action="append",
        default=None,
        metavar="ROW",
        help="run only this row, as its system and setting read (repeatable):"
        f" {', '.join(repr(name) for name in row_names())}",
    )
    parser.add_argument(
        "--keep-failed",
        type=Path,
        default=None,
        metavar="DIR",
        help="a septet run past its deadline keeps its config, journal and daemon log"
        " under DIR, with what was left unfinished (stuck.json)",
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.only or ()) - set(row_names()))
    if unknown:
        parser.error(f"--only {unknown[0]!r} is not a row; the rows: {', '.join(row_names())}")
    chosen = [s for s in settings() if args.only is None or row_name(s) in args.only]
    messages = args.messages or (QUICK_MESSAGES if args.quick else MESSAGES)
    repeat = args.repeat or (1 if args.quick else 3)
    if messages < 1 or repeat < 1 or args.concurrency < 1:
        parser.error("--messages, --repeat and --concurrency must be at least 1")
    binaries = find_kannel()
    if binaries is None:
        print(KANNEL_MISSING, file=sys.stderr)
        return 2
    if can_pin():
        os.sched_setaffinity(0, {LOAD_CORE})
    latencies = args.latency_ms or list(LATENCIES_MS)
    runs: dict[tuple[float, Setting], list[dict[str, Any]]] = {}
    # Repeats go round every setting in turn, so a busy spell on the machine is spread
    # over both systems rather than landing on one.
    for _ in range(repeat):
        for latency_ms in latencies:
            sims, sim_url = start_simulators(latency_ms, 0.0, "")
            try:
                for setting in chosen:
                    if args.wait_quiet > 0:
                        wait_for_quiet(args.wait_quiet)
                    figures = _run_setting(
                        binaries,
                        setting,
                        messages,
                        sim_url=sim_url,
                        sim_pid=sims.pid,
                        concurrency=args.concurrency,
                        deadline_s=_deadline_s(messages, latency_ms),
                        keep_dir=args.keep_failed,
                    )
                    result = run_result(setting, latency_ms, messages, figures)
                    runs.setdefault((latency_ms, setting), []).append(result)
                    print(progress_line(result), file=sys.stderr, flush=True)
            finally:
                stop_process(sims)
    rows = [aggregate(results) for results in runs.values()]
    add_ratios(rows)
    path = write_results(NAME, rows, quick=args.quick, out=args.out)
    pinning = "engine on core 1, simulator and load on core 0" if can_pin() else "unpinned"
    print(f"septet vs Kannel ({'quick, ' if args.quick else ''}{pinning}; × = septet ÷ Kannel)")
    print(table(rows))
    print(f"results written to {path}")
    return 0 if all(row["complete"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
