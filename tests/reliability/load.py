"""Sustained overload of one daemon process: socket and SMPP clients above its rate limit.

    .venv/bin/python -m tests.reliability.load [--minutes 3] [--rate 200] [--json FILE]

Starts `septet simulate dsc` and `septet run --config` as their own processes (so the
resident set measured is the daemon's alone), then runs, for the duration, 20 NDJSON
clients (10 TCP, 10 Unix socket) that write lines as fast as the daemon reads them and 3
SMPP transmitter binds that keep 16 submit_sm unanswered, all to the dsc bridge, whose
messages/s token bucket is far below what they offer. It samples the daemon's RSS and
the simulator's accepted count, and reports:

- memory: median RSS of the last third against the first third (after warm-up), and
  the peak; bounded queues keep it flat although the offered load never stops;
- backpressure: how long client writes sat blocked, and how far lines written ran ahead
  of `accepted` answers; how long SMPP submits waited for their answers (for room in
  the queue, up to `[smpp] congestion_wait_s`) and how many were answered
  ESME_RTHROTTLED when that ran out;
- fairness: per socket client, messages that reached the provider (`submitted`
  events); per SMPP bind, submits accepted (each took a queue slot in line with the
  socket clients before its commit);
- rate: messages the provider took per second over the last 10 s window, against the
  configured limit.

tests/reliability/test_load.py runs a short version and asserts on the report; this
module's `main` prints it (the longer run is by hand: a figure of speed is not a test).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import anyio
import anyio.abc
import httpx
import msgspec

from bench.pipeline import render_toml
from engine.smpp import pdu as p
from engine.smpp.codec import HEADER, PduReader, encode_pdu
from tests.reliability.harness import free_port

HOST: Final = "127.0.0.1"
TCP_CLIENTS: Final = 10
UNIX_CLIENTS: Final = 10
SMPP_BINDS: Final = 3
SMPP_WINDOW: Final = 16
LINES_PER_WRITE: Final = 50
QUEUE_SIZE: Final = 2000
MAX_RECIPIENTS: Final = 10  # requests of 10: the 10 s rate window is not quantised coarsely
RATE_WINDOW_S: Final = 10.0
SAMPLE_S: Final = 0.5
THROTTLE_PAUSE_S: Final = 0.05
DRAIN_WAIT_S: Final = 10.0
DSC_CREDENTIALS: Final = {
    # docs/design.md: the simulators' public demo credentials.
    "api_key": "demo",
    "username": "demo",
    "password": "demo",
    "callback_username": "septet",
    "callback_password": "load-callback",
}


class LoadReport(msgspec.Struct, kw_only=True):
    duration_s: float
    rate_limit: float
    warmup_s: float
    rss_mib: list[tuple[float, float]]  # (seconds since start, MiB)
    rss_first_third_mib: float
    rss_last_third_mib: float
    rss_peak_mib: float
    provider_rate: float  # messages/s the simulator took over the last RATE_WINDOW_S
    provider_taken: list[tuple[float, int]]  # (seconds since start, accepted_total)
    lines_written: int
    lines_accepted: int
    accepted_by_client: list[int]
    # `submitted` events per socket client: its share of the provider's rate. Its
    # `accepted` answers run ahead of that by the chunk it has journaled and is waiting
    # to queue (a read of up to 64 KiB, about 1,200 lines), so they measure chunking,
    # not share.
    submitted_by_client: list[int]
    write_blocked_fraction: float  # of the writers' time, spent in send() waiting
    longest_write_s: float
    smpp_accepted: int
    smpp_throttled: int
    smpp_accepted_by_bind: list[int]
    smpp_throttled_by_bind: list[int]
    smpp_longest_answer_s: float  # submit_sm to its submit_sm_resp, the slowest
    lines_ahead_of_answers: int  # written but not yet answered, at the end
    drain_s: float | None = None  # SIGTERM to exit; None: over DRAIN_WAIT_S, killed


def rss_mib(pid: int) -> float:
    """The process's resident set from /proc/<pid>/status (VmRSS, KiB), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def daemon_config(workdir: Path, sim_url: str, rate: float, cache_mb: int = 32) -> dict[str, Any]:
    return {
        "journal": {"path": str(workdir / "journal.db"), "cache_mb": cache_mb},
        "ingress": {
            "tcp": f"{HOST}:{free_port()}",
            "unix": str(workdir / "septet.sock"),
            "max_connections": 100,
        },
        "http": {"listen": f"{HOST}:{free_port()}"},
        "smpp": {"listen": f"{HOST}:{free_port()}"},
        "simulators": {"enabled": False},
        "routing": {"prefixes": {"250": ["dsc"]}},
        "bridges": {
            "dsc": {
                "driver": "dsc",
                "base_url": sim_url,
                "credentials": DSC_CREDENTIALS,
                "default_sender": "SEPTET",
                "pool": 10,
                "messages_per_s": rate,
                # A burst of two requests: the rate over a window is the configured one.
                "messages_burst": 2.0 * MAX_RECIPIENTS,
                "max_recipients": MAX_RECIPIENTS,
                "queue_size": QUEUE_SIZE,
            }
        },
    }


def _start_simulator(log: Path) -> tuple[subprocess.Popen[bytes], str]:
    command = [sys.executable, "-m", "engine", "simulate", "dsc", "--port", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log.open("wb"))
    assert process.stdout is not None
    line = process.stdout.readline().decode()  # `septet simulate` prints this when ready
    found = re.fullmatch(r"listening on (\S+)\n", line)
    if found is None:
        _stop(process)
        raise RuntimeError(f"the simulator did not start: {line!r} {log.read_text()[-500:]}")
    return process, found.group(1)


def _start_daemon(config: Path, log: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "engine", "run", "--config", str(config)]
    command += ["--log-level", "warning"]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log.open("wb"))


def _tail(log: Path) -> str:
    return log.read_text()[-2000:]


def _drain(process: subprocess.Popen[bytes]) -> float | None:
    """SIGTERM the daemon and time its drain; None if it took longer than DRAIN_WAIT_S
    (it is then killed: its journal keeps everything, but the drain was too slow)."""
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=DRAIN_WAIT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
        return None
    return time.monotonic() - started


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


async def _wait_ready(process: subprocess.Popen[bytes], http_url: str, log: Path) -> None:
    async with httpx.AsyncClient() as http:
        for _ in range(300):  # bounded: 15 s
            if process.poll() is not None:
                raise RuntimeError(f"the daemon exited: {_tail(log)}")
            try:
                if (await http.get(f"{http_url}/readyz", timeout=1.0)).status_code == 200:
                    return
            except httpx.TransportError:
                pass  # not listening yet
            await anyio.sleep(0.05)
    raise RuntimeError("the daemon did not become ready in 15 s")


class Tally:
    """What the clients saw, shared by every client task."""

    def __init__(self, clients: int, binds: int) -> None:
        self.written = 0
        self.accepted = [0] * clients
        self.submitted = [0] * clients
        self.blocked_s = 0.0
        self.writing_s = 0.0
        self.longest_write_s = 0.0
        self.smpp_accepted = [0] * binds
        self.smpp_throttled = [0] * binds
        self.smpp_longest_answer_s = 0.0


def _small_send_buffer(stream: anyio.abc.ByteStream) -> None:
    """A client's kernel send buffer of 64 KiB, like a client that does not autotune up to
    tcp_wmem's 4 MiB: with the daemon's own receive buffer capped, a client that outruns
    the daemon blocks within a few thousand lines instead of parking megabytes first."""
    raw = stream.extra(anyio.abc.SocketAttribute.raw_socket)  # noqa: S610 - anyio, not Django
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)


class UnixClientStream(anyio.abc.ByteStream):
    """A Unix socket client on the event loop's own socket calls, not anyio's UNIXSocketStream.

    anyio (4.16) waits for a raw socket with `loop.add_reader(sock, future.set_result, None)`
    and removes the reader in the future's done callback. On uvloop an I/O callback can run
    between a cancellation finishing that future and the done callback: set_result on a
    cancelled future raises InvalidStateError from the loop, once per client blocked in
    receive() when the run cancels them while the daemon is writing to it (after any pause
    of the loop, such as a garbage collection, every such client). `sock_recv` and
    `sock_sendall` remove their reader or writer when their future is cancelled, on uvloop
    and on asyncio's own loop alike.
    """

    def __init__(self, raw: socket.socket) -> None:
        self._socket = raw

    @classmethod
    async def connect(cls, path: str) -> UnixClientStream:
        raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        raw.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(raw, path)
        except BaseException:
            raw.close()
            raise
        return cls(raw)

    @property
    def extra_attributes(self) -> dict[Any, Any]:
        return {anyio.abc.SocketAttribute.raw_socket: lambda: self._socket}

    async def send(self, item: bytes) -> None:
        try:
            await asyncio.get_running_loop().sock_sendall(self._socket, item)
        except OSError as error:
            raise anyio.BrokenResourceError from error

    async def receive(self, max_bytes: int = 65536) -> bytes:
        try:
            data = await asyncio.get_running_loop().sock_recv(self._socket, max_bytes)
        except OSError as error:
            raise anyio.BrokenResourceError from error
        if not data:
            raise anyio.EndOfStream
        return data

    async def send_eof(self) -> None:
        self._socket.shutdown(socket.SHUT_WR)

    async def aclose(self) -> None:
        self._socket.close()


async def _ndjson_client(stream: anyio.abc.ByteStream, index: int, tally: Tally) -> None:
    """Write lines as fast as the daemon takes them; count `accepted` answers."""
    serial = 0

    def chunk() -> bytes:
        nonlocal serial
        lines = []
        for _ in range(LINES_PER_WRITE):
            serial = (serial + 1) % 100_000
            # +250 78 then 7 digits: a valid Rwandan mobile number (dsc's route).
            to = f"+25078{index:02d}{serial:05d}"
            lines.append(b'{"to":"%s","text":"load test","dlr":false}\n' % to.encode())
        return b"".join(lines)

    async def read() -> None:
        try:
            while True:
                data = await stream.receive(65536)
                tally.accepted[index] += data.count(b'"event":"accepted"')
                tally.submitted[index] += data.count(b'"event":"submitted"')
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
            return

    async with stream, anyio.create_task_group() as tg:
        tg.start_soon(read)
        while True:  # until the run cancels every client
            data = chunk()
            started = time.perf_counter()
            await stream.send(data)
            tally.written += LINES_PER_WRITE
            spent = time.perf_counter() - started
            tally.writing_s += spent
            tally.blocked_s += max(0.0, spent - 0.001)  # a send that did not return at once
            tally.longest_write_s = max(tally.longest_write_s, spent)


async def _smpp_client(port: int, index: int, tally: Tally) -> None:
    """A transmitter keeping SMPP_WINDOW submit_sm unanswered; throttled ones pause."""
    stream = await anyio.connect_tcp(HOST, port)
    frames = PduReader()
    # The embedded default's account (docs/design.md), not a secret.
    await stream.send(
        encode_pdu(p.BindTransmitter(sequence_number=1, system_id="demo", password="demo"))
    )
    sequence = 1
    sent_at: dict[int, float] = {}  # sequence number -> when its submit_sm went out
    async with stream:
        while True:  # until the run cancels every client
            while len(sent_at) < SMPP_WINDOW:
                sequence += 1
                to = f"25078{50 + index:02d}{sequence % 100_000:05d}"
                submit = p.SubmitSm(
                    sequence_number=sequence,
                    source_addr="SEPTET",
                    dest_addr_ton=1,  # international (SMPP v3.4 5.2.5)
                    dest_addr_npi=1,  # E.164 (SMPP v3.4 5.2.6)
                    destination_addr=to,
                    short_message=b"load test over smpp",
                )
                await stream.send(encode_pdu(submit))
                sent_at[sequence] = time.perf_counter()
            throttled = False
            for frame in frames.feed(await stream.receive(65536)):
                _, command_id, status, number = HEADER.unpack_from(frame)
                if command_id == p.ENQUIRE_LINK:
                    await stream.send(encode_pdu(p.EnquireLinkResp(sequence_number=number)))
                elif command_id == p.SUBMIT_SM_RESP:
                    waited = time.perf_counter() - sent_at.pop(number)
                    tally.smpp_longest_answer_s = max(tally.smpp_longest_answer_s, waited)
                    if status == p.ESME_ROK:
                        tally.smpp_accepted[index] += 1
                    elif status == p.ESME_RTHROTTLED:
                        tally.smpp_throttled[index] += 1
                        throttled = True
            if throttled:
                # SMPP v3.4 5.1.3: ESME_RTHROTTLED asks the ESME to slow down.
                await anyio.sleep(THROTTLE_PAUSE_S)


async def _provider_taken(http: httpx.AsyncClient, sim_url: str) -> int:
    reply = await http.get(f"{sim_url}/_sim/counters", params={"provider": "dsc"})
    taken: int = reply.json()["dsc"]["accepted_total"]
    return taken


async def run_load(
    duration_s: float, rate: float = 200.0, workdir: Path | None = None, cache_mb: int = 32
) -> LoadReport:
    """Run the overload for `duration_s` (at least 20 s: warm-up, thirds, a 10 s window
    past the first fill of the queue).
    `cache_mb` is the journal's page cache (`[journal] cache_mb`), the part of the
    daemon's memory that grows with the journal file until it is full."""
    with tempfile.TemporaryDirectory(prefix="septet-load-") as scratch:
        work = workdir or Path(scratch)
        simulator, sim_url = _start_simulator(work / "simulator.log")
        try:
            document = daemon_config(work, sim_url, rate, cache_mb)
            config = work / "septet.toml"
            config.write_text(render_toml(document))
            daemon = _start_daemon(config, work / "daemon.log")
            try:
                report = await _drive(daemon, document, sim_url, duration_s, rate, work)
                report.drain_s = _drain(daemon)
                return report
            finally:
                _stop(daemon)
        finally:
            _stop(simulator)


async def _drive(
    daemon: subprocess.Popen[bytes],
    document: dict[str, Any],
    sim_url: str,
    duration_s: float,
    rate: float,
    work: Path,
) -> LoadReport:
    http_url = f"http://{document['http']['listen']}"
    await _wait_ready(daemon, http_url, work / "daemon.log")
    tcp_host, _, tcp_port = document["ingress"]["tcp"].rpartition(":")
    smpp_port = int(document["smpp"]["listen"].rpartition(":")[2])
    tally = Tally(TCP_CLIENTS + UNIX_CLIENTS, SMPP_BINDS)
    rss: list[tuple[float, float]] = []
    taken: list[tuple[float, int]] = []
    started = time.monotonic()
    async with httpx.AsyncClient() as http, anyio.create_task_group() as tg:
        for index in range(TCP_CLIENTS):
            stream: anyio.abc.ByteStream = await anyio.connect_tcp(tcp_host, int(tcp_port))
            _small_send_buffer(stream)
            tg.start_soon(_ndjson_client, stream, index, tally)
        for index in range(TCP_CLIENTS, TCP_CLIENTS + UNIX_CLIENTS):
            stream = await UnixClientStream.connect(document["ingress"]["unix"])
            _small_send_buffer(stream)
            tg.start_soon(_ndjson_client, stream, index, tally)
        for index in range(SMPP_BINDS):
            tg.start_soon(_smpp_client, smpp_port, index, tally)
        while (elapsed := time.monotonic() - started) < duration_s:
            if daemon.poll() is not None:
                raise RuntimeError(
                    f"the daemon exited: {(work / 'daemon.log').read_text()[-2000:]}"
                )
            rss.append((elapsed, rss_mib(daemon.pid)))
            taken.append((time.monotonic() - started, await _provider_taken(http, sim_url)))
            await anyio.sleep(SAMPLE_S)
        taken.append((time.monotonic() - started, await _provider_taken(http, sim_url)))
        tg.cancel_scope.cancel()
    return _report(tally, rss, taken, duration_s, rate)


def _median_mib(samples: Sequence[tuple[float, float]], start: float, end: float) -> float:
    return statistics.median(mib for at, mib in samples if start <= at < end)


def _report(
    tally: Tally,
    rss: list[tuple[float, float]],
    taken: list[tuple[float, int]],
    duration_s: float,
    rate: float,
) -> LoadReport:
    warmup = duration_s / 5
    third = (duration_s - warmup) / 3
    end_at, end_count = taken[-1]
    start_at, start_count = min(taken, key=lambda sample: abs(sample[0] - (end_at - RATE_WINDOW_S)))
    accepted = sum(tally.accepted)
    return LoadReport(
        duration_s=duration_s,
        rate_limit=rate,
        warmup_s=warmup,
        rss_mib=rss,
        rss_first_third_mib=_median_mib(rss, warmup, warmup + third),
        rss_last_third_mib=_median_mib(rss, duration_s - third, duration_s),
        rss_peak_mib=max(mib for _, mib in rss),
        provider_rate=(end_count - start_count) / (end_at - start_at),
        provider_taken=taken,
        lines_written=tally.written,
        lines_accepted=accepted,
        accepted_by_client=list(tally.accepted),
        submitted_by_client=list(tally.submitted),
        write_blocked_fraction=tally.blocked_s / max(tally.writing_s, 1e-9),
        longest_write_s=tally.longest_write_s,
        smpp_accepted=sum(tally.smpp_accepted),
        smpp_throttled=sum(tally.smpp_throttled),
        smpp_accepted_by_bind=list(tally.smpp_accepted),
        smpp_throttled_by_bind=list(tally.smpp_throttled),
        smpp_longest_answer_s=tally.smpp_longest_answer_s,
        lines_ahead_of_answers=tally.written - accepted,
    )


def summary(report: LoadReport) -> str:
    return "\n".join(
        [
            f"duration {report.duration_s:.0f} s, rate limit {report.rate_limit:g} msg/s",
            f"provider took {report.provider_rate:.1f} msg/s over the last {RATE_WINDOW_S:g} s "
            f"({100 * (report.provider_rate / report.rate_limit - 1):+.2f}%)",
            f"daemon RSS: first third {report.rss_first_third_mib:.1f} MiB, last third "
            f"{report.rss_last_third_mib:.1f} MiB, peak {report.rss_peak_mib:.1f} MiB",
            "daemon RSS, median of each minute (MiB): " + _per_minute(report.rss_mib),
            f"NDJSON: {report.lines_written} lines written, {report.lines_accepted} accepted, "
            f"{report.lines_ahead_of_answers} still unanswered; writers blocked "
            f"{100 * report.write_blocked_fraction:.0f}% of their time, longest write "
            f"{report.longest_write_s:.2f} s",
            f"per socket client: accepted {_spread(report.accepted_by_client)}; "
            f"submitted to the provider {_spread(report.submitted_by_client)}",
            f"SMPP: {report.smpp_accepted} submit_sm accepted, {report.smpp_throttled} "
            f"answered ESME_RTHROTTLED; per bind accepted {report.smpp_accepted_by_bind}, "
            f"throttled {report.smpp_throttled_by_bind}; slowest answer "
            f"{report.smpp_longest_answer_s:.2f} s",
            "drain after SIGTERM: "
            + (
                f"{report.drain_s:.1f} s"
                if report.drain_s is not None
                else f"over {DRAIN_WAIT_S:g} s"
            ),
        ]
    )


def _per_minute(samples: Sequence[tuple[float, float]]) -> str:
    """Median RSS of each whole or partial minute: a plateau shows as equal figures."""
    minutes: dict[int, list[float]] = {}
    for at, mib in samples:
        minutes.setdefault(int(at // 60), []).append(mib)
    return ", ".join(f"{statistics.median(values):.1f}" for _, values in sorted(minutes.items()))


def _spread(counts: Sequence[int]) -> str:
    return f"min {min(counts)}, median {statistics.median(counts):.0f}, max {max(counts)}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.reliability.load", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--minutes", type=float, default=3.0, help="how long to run (default 3)")
    parser.add_argument("--rate", type=float, default=200.0, help="dsc messages/s limit")
    parser.add_argument("--json", type=Path, help="also write the full report here")
    parser.add_argument(
        "--journal-cache-mb",
        type=int,
        default=32,
        help="the daemon's [journal] cache_mb (default 32): a small cache shows how much"
        " of the memory growth is the journal's page cache",
    )
    args = parser.parse_args(argv)
    if args.minutes * 60 < 25:
        parser.error("--minutes must give at least 25 s")
    report = anyio.run(
        run_load,
        args.minutes * 60,
        args.rate,
        None,
        args.journal_cache_mb,
        backend="asyncio",
        # The clients' side only (the daemon runs uvloop in its own process): 200 msg/s of
        # overload does not need uvloop's speed here.
        backend_options={"use_uvloop": False},
    )
    print(summary(report))  # this module's command-line output
    if args.json:
        args.json.write_bytes(msgspec.json.format(msgspec.json.encode(report)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
