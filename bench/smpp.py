"""SMPP ingress to providers: submit_sm per second into one septet daemon, window 1 and 64.

    python -m bench.smpp [--quick] [--out FILE] [--window W=N ...]

Each case starts fresh processes, as bench/pipeline.py does: `septet simulate` (pinned
to core 0) and `septet run --config` (pinned to core 1) with its journal on, a dsc
bridge pointing at the simulator and `[smpp] listen` on a free port (the embedded demo
account, throughput unlimited). This process (core 0) is a pipelined asyncio client on
septet's own codec: it binds as a transmitter and keeps `window` submit_sm unanswered
(SMPP v3.4 2.6: a window of outstanding requests), sending the next as each
submit_sm_resp comes back; every message goes to a distinct +25078... number (dsc) with
one shared text, so the daemon may batch them to the provider.

It reports, per window: submit_sm accepted per second (first submit_sm sent -> last
ESME_ROK submit_sm_resp), p50/p99 submit_sm -> submit_sm_resp latency, ESME_RTHROTTLED
answers (each resubmitted after a pause), the daemon's CPU per submit, and how long
until the simulator counted every message accepted (GET /_sim/counters, dsc
accepted_total): messages per second "through to the simulators".
"""

from __future__ import annotations

import argparse
import asyncio
import os
import struct
import subprocess
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any, Final

from bench.common import base_parser, format_table, percentile, write_results
from bench.pipeline import (
    HOST,
    LOADGEN_CORE,
    _can_pin,
    _free_port,
    _http_json,
    cpu_seconds,
    daemon_config,
    mean_batch,
    render_toml,
    start_daemon,
    start_simulators,
    stop_process,
    wait_healthy,
)
from engine.smpp import pdu as p
from engine.smpp.codec import HEADER, PduReader, encode_pdu

NAME = "smpp"
FULL_MESSAGES: Final = {1: 5_000, 64: 60_000}
QUICK_MESSAGES: Final = {1: 500, 64: 10_000}
BRIDGE: Final = "dsc"
# Rwanda (dsc's route, bench/loadgen.py): 9 national digits after 250, so every
# recipient has the same length and is written into one pre-encoded PDU in place.
RECIPIENT_FORMAT: Final = b"25078%07d"
TEMPLATE_RECIPIENT: Final = b"250780000000"
TEXT: Final = b"Your septet bench code is 123456. Thank you for testing."
SEQUENCE_OFFSET: Final = 12  # SMPP v3.4 3.2: the 4th field of the 16-octet header
THROTTLE_PAUSE_S: Final = 0.01
POOL: Final = 100
POLL_S: Final = 0.02
pack_sequence: Final = struct.Struct(">I").pack_into


def _submit_template() -> tuple[bytearray, int]:
    """One encoded submit_sm and the offset of its destination_addr."""
    template = bytearray(
        encode_pdu(
            p.SubmitSm(
                sequence_number=1,
                source_addr="SEPTET",
                dest_addr_ton=1,  # international (SMPP v3.4 5.2.5)
                dest_addr_npi=1,  # E.164 (SMPP v3.4 5.2.6)
                destination_addr=TEMPLATE_RECIPIENT.decode(),
                short_message=TEXT,
            )
        )
    )
    return template, template.index(TEMPLATE_RECIPIENT + b"\x00")


class ClientFigures:
    """What the SMPP client saw: answers by status, latencies, when it finished."""

    def __init__(self) -> None:
        self.statuses: dict[int, int] = {}
        self.latencies: list[float] = []
        self.started_at = 0.0
        self.accepted_at = 0.0

    @property
    def accepted(self) -> int:
        return self.statuses.get(p.ESME_ROK, 0)

    @property
    def throttled(self) -> int:
        return self.statuses.get(p.ESME_RTHROTTLED, 0)


async def _connect(
    port: int, deadline_s: float
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """The daemon serves SMPP shortly after /healthz answers: retry until it listens."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            return await asyncio.open_connection(HOST, port)
        except OSError:
            if time.monotonic() >= deadline:
                raise
            await asyncio.sleep(0.05)


async def _bind(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, frames: PduReader
) -> None:
    # The embedded default's account (docs/design.md), not a secret.
    bind = p.BindTransmitter(sequence_number=1, system_id="demo", password="demo")  # noqa: S106
    writer.write(encode_pdu(bind))
    for _ in range(100):  # bounded: a bind_transmitter_resp comes in a few reads
        data = await asyncio.wait_for(reader.read(65536), 10.0)
        if not data:
            break
        for frame in frames.feed(data):
            _, command_id, status, _ = HEADER.unpack_from(frame)
            if command_id == p.BIND_TRANSMITTER_RESP:
                if status != p.ESME_ROK:
                    raise RuntimeError(f"bind refused: status {status:#x}")
                return
    raise RuntimeError("no bind_transmitter_resp")


async def run_client(port: int, window: int, messages: int) -> ClientFigures:
    """Submit `messages` with at most `window` unanswered; resubmit what is throttled."""
    reader, writer = await _connect(port, 20.0)
    frames = PduReader()
    await _bind(reader, writer, frames)
    template, recipient_offset = _submit_template()
    recipient_end = recipient_offset + len(TEMPLATE_RECIPIENT)
    figures = ClientFigures()
    in_flight: dict[int, tuple[int, float]] = {}  # sequence -> (recipient index, sent at)
    retry: deque[int] = deque()
    next_index = 0
    next_sequence = 2

    def submits(count: int) -> bytes:
        nonlocal next_index, next_sequence
        chunks = []
        now = time.perf_counter()
        for _ in range(count):
            if retry:
                index = retry.popleft()
            else:
                index = next_index
                next_index += 1
            template[recipient_offset:recipient_end] = RECIPIENT_FORMAT % index
            pack_sequence(template, SEQUENCE_OFFSET, next_sequence)
            in_flight[next_sequence] = (index, now)
            next_sequence += 1
            chunks.append(bytes(template))
        return b"".join(chunks)

    def room() -> int:
        return min(window - len(in_flight), messages - next_index + len(retry))

    figures.started_at = time.perf_counter()
    writer.write(submits(room()))
    while figures.accepted < messages:
        data = await asyncio.wait_for(reader.read(65536), 60.0)
        if not data:
            raise RuntimeError("the daemon closed the SMPP session")
        now = time.perf_counter()
        throttled = False
        for frame in frames.feed(data):
            _, command_id, status, sequence = HEADER.unpack_from(frame)
            if command_id == p.ENQUIRE_LINK:
                writer.write(encode_pdu(p.EnquireLinkResp(sequence_number=sequence)))
                continue
            if command_id not in (p.SUBMIT_SM_RESP, p.GENERIC_NACK):
                continue
            index, sent_at = in_flight.pop(sequence)
            figures.statuses[status] = figures.statuses.get(status, 0) + 1
            if status == p.ESME_ROK:
                figures.latencies.append(now - sent_at)
            elif status == p.ESME_RTHROTTLED:
                retry.append(index)
                throttled = True
            else:
                raise RuntimeError(f"submit_sm refused: status {status:#x}")
        if throttled:
            # SMPP v3.4 5.1.3: ESME_RTHROTTLED asks the ESME to slow down.
            await asyncio.sleep(THROTTLE_PAUSE_S)
        more = room()
        if more > 0:
            writer.write(submits(more))
    figures.accepted_at = time.perf_counter()
    writer.write(encode_pdu(p.Unbind(sequence_number=next_sequence)))
    writer.close()
    return figures


def wait_for_provider(sim_url: str, messages: int, deadline_s: float) -> tuple[int, float]:
    """Poll the simulator until dsc accepted `messages`; (its count, when it was seen)."""
    deadline = time.monotonic() + deadline_s
    while True:
        accepted: int = _http_json(f"{sim_url}/_sim/counters")[BRIDGE]["accepted_total"]
        now = time.perf_counter()
        if accepted >= messages or time.monotonic() >= deadline:
            return accepted, now
        time.sleep(POLL_S)


def run_case(window: int, messages: int) -> dict[str, Any]:
    """Fresh simulators and daemon; `messages` submit_sm with `window`; the figures."""
    with tempfile.TemporaryDirectory(prefix="septet-bench-smpp-") as tmp:
        workdir = Path(tmp)
        tcp_port, http_port, smpp_port = _free_port(), _free_port(), _free_port()
        sims, sim_url = start_simulators(0.0, 0.0, f"http://{HOST}:{http_port}/dlr/routemobile")
        daemon: subprocess.Popen[bytes] | None = None
        try:
            document = daemon_config(
                workdir,
                sim_url=sim_url,
                tcp_port=tcp_port,
                http_port=http_port,
                bridges=[BRIDGE],
                pool=POOL,
                overrides={},
            )
            document["smpp"] = {"listen": f"{HOST}:{smpp_port}", "window": max(64, window)}
            # The embedded demo login, its account's rate unlimited (the default) for the bench.
            document["accounts"] = {"demo": {"smpp": {"password": "demo"}}}
            config_path = workdir / "septet.toml"
            config_path.write_text(render_toml(document))
            log_path = workdir / "daemon.log"
            daemon = start_daemon(config_path, log_path)
            wait_healthy(daemon, http_port, log_path)
            daemon_cpu_before = cpu_seconds(daemon.pid)
            sims_cpu_before = cpu_seconds(sims.pid)
            client = asyncio.run(run_client(smpp_port, window, messages))
            daemon_cpu_accepted = cpu_seconds(daemon.pid) - daemon_cpu_before
            reached, reached_at = wait_for_provider(sim_url, messages, 60.0 + messages / 200.0)
            daemon_cpu_provider = cpu_seconds(daemon.pid) - daemon_cpu_before
            sims_cpu = cpu_seconds(sims.pid) - sims_cpu_before
            batches = mean_batch(sim_url, [BRIDGE])
            daemon_log = log_path.read_text(errors="replace")
        finally:
            if daemon is not None:
                stop_process(daemon)
            stop_process(sims)
    accept_s = client.accepted_at - client.started_at
    provider_s = reached_at - client.started_at
    return {
        "case": f"submit_sm, window {window}",
        "window": window,
        "messages": messages,
        "accepted": client.accepted,
        "throttled": client.throttled,
        "seconds_to_accept": round(accept_s, 3),
        "per_s": round(client.accepted / accept_s, 1),
        "p50_ms": round(percentile(client.latencies, 0.5) * 1000.0, 3),
        "p99_ms": round(percentile(client.latencies, 0.99) * 1000.0, 3),
        "reached_provider": reached,
        "seconds_to_provider": round(provider_s, 3),
        "provider_per_s": round(reached / provider_s, 1),
        "mean_batch": batches[BRIDGE],
        "daemon_cpu_us_per_submit": round(daemon_cpu_accepted / messages * 1e6, 1),
        "daemon_cpu_us_per_message_to_provider": round(daemon_cpu_provider / messages * 1e6, 1),
        "simulators_cpu_s": round(sims_cpu, 3),
        "daemon_log_errors": sum(
            1 for line in daemon_log.splitlines() if '"level": "error"' in line
        ),
        "pinned": _can_pin(),
    }


def _window_size(text: str) -> tuple[int, int]:
    window, _, messages = text.partition("=")
    try:
        pair = int(window), int(messages)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WINDOW=MESSAGES, got {text!r}") from None
    if pair[0] < 1 or pair[1] < 1:
        raise argparse.ArgumentTypeError("window and messages must be at least 1")
    return pair


def main(argv: list[str] | None = None) -> int:
    parser: argparse.ArgumentParser = base_parser(
        NAME, __doc__.splitlines()[0] if __doc__ else NAME
    )
    parser.add_argument(
        "--window",
        action="append",
        type=_window_size,
        metavar="W=N",
        help="run window W with N messages (repeatable; default 1 and 64)",
    )
    args = parser.parse_args(argv)
    if _can_pin():
        os.sched_setaffinity(0, {LOADGEN_CORE})
    plan = dict(args.window) if args.window else (QUICK_MESSAGES if args.quick else FULL_MESSAGES)
    results = [run_case(window, messages) for window, messages in plan.items()]
    rows = [
        [
            row["case"],
            row["messages"],
            row["accepted"],
            row["throttled"],
            row["per_s"],
            row["p50_ms"],
            row["p99_ms"],
            row["daemon_cpu_us_per_submit"],
            row["reached_provider"],
            row["seconds_to_provider"],
            row["provider_per_s"],
        ]
        for row in results
    ]
    cores = "daemon on core 1, simulators and client on core 0" if _can_pin() else "unpinned"
    print(f"septet SMPP ingress ({'quick, ' if args.quick else ''}{cores})")
    print(
        format_table(
            [
                "case",
                "sent",
                "accepted",
                "throttled",
                "accepted/s",
                "p50 ms",
                "p99 ms",
                "cpu µs/submit",
                "at provider",
                "provider s",
                "provider msg/s",
            ],
            rows,
        )
    )
    path = write_results(NAME, results, quick=args.quick, out=args.out)
    print(f"results: {path}")
    complete = all(r["accepted"] == r["messages"] == r["reached_provider"] for r in results)
    return 0 if complete else 1


if __name__ == "__main__":
    raise SystemExit(main())
