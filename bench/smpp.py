"""SMPP ingress: submit_sm per second into one engine process, window 1 and window 64.

    python -m bench.smpp [--quick] [--out FILE]

The engine process (a child, so client and server each have a core) runs serve_smpp
over the real ingress path: LinePreparer (number, route, segments, price), the SQLite
journal with its group commit (synchronous=NORMAL, as the daemon runs it), and the
SMPP server's own store of message ids. Messages handed to the scheduler are counted
and dropped: this measures SMPP in to journal commit to submit_sm_resp, not providers.

The client is a pipelined asyncio client on septet's own codec: it keeps `window`
submit_sm unanswered on one bind and sends the next as each submit_sm_resp comes back.
"""

from __future__ import annotations

import argparse
import asyncio
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from bench.common import base_parser, format_table, percentile, write_results
from engine.smpp import pdu as p
from engine.smpp.codec import HEADER, PduReader, encode_pdu

NAME = "smpp"
FULL_MESSAGES: Final = {1: 5_000, 64: 60_000}
QUICK_MESSAGES: Final = {1: 1_000, 64: 10_000}
SEQUENCE_OFFSET: Final = 12


class _DroppingScheduler:
    """Counts what the handler schedules; the bench stops at the journal."""

    def __init__(self) -> None:
        self.count = 0

    async def put_many(self, messages: Sequence[Any]) -> None:
        self.count += len(messages)

    def wake_feeder(self) -> None:
        pass


async def serve_engine(directory: Path) -> None:
    """The engine side: print the SMPP port, serve until stdin closes."""
    import anyio

    from engine.ingress import EventRouter, LineHandler, LinePreparer
    from engine.journal import open_journal
    from engine.pricing import default_price_tables
    from engine.routing import Router, default_routes
    from engine.smpp.server import SmppSettings, serve_smpp

    bridges = ("dsc", "routemobile", "bsg", "smsclub")
    async with open_journal(directory / "bench.db") as journal:
        preparer = LinePreparer(
            router=Router(default_routes(), None, bridges),
            prices=default_price_tables(),
            default_senders={},
            max_text_chars=1600,
            max_recipients=1000,
            default_region=None,
        )
        handler = LineHandler(preparer, journal, _DroppingScheduler(), max_line_bytes=65536)
        router = EventRouter(lambda origin, lines: None)
        async with anyio.create_task_group() as tg:
            port = await tg.start(
                lambda task_status: serve_smpp(
                    SmppSettings(window=64),
                    accept=handler.accept_submission,
                    events=router,
                    journal=journal,
                    store_path=directory / "bench.smpp.db",
                    host="127.0.0.1",
                    port=0,
                    task_status=task_status,
                )
            )
            print(port, flush=True)
            stdin = anyio.wrap_file(sys.stdin)
            await stdin.read()
            tg.cancel_scope.cancel()


def _submit_template() -> bytes:
    return encode_pdu(
        p.SubmitSm(
            sequence_number=1,
            source_addr="ACME",
            dest_addr_ton=1,
            destination_addr="250788123456",
            registered_delivery=1,
            short_message=b"Your code is 123456. It expires in 10 minutes.",
        )
    )


async def run_client(port: int, window: int, messages: int) -> dict[str, Any]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    # The embedded default's account (DESIGN.md), not a secret.
    bind = p.BindTransmitter(sequence_number=1, system_id="demo", password="demo")  # noqa: S106
    writer.write(encode_pdu(bind))
    frames = PduReader()
    pending: list[bytes] = []
    while not pending:
        pending.extend(frames.feed(await reader.read(65536)))
    if HEADER.unpack_from(pending.pop(0))[2] != p.ESME_ROK:
        raise RuntimeError("bind refused")
    template = bytearray(_submit_template())
    pack_sequence = struct.Struct(">I").pack_into
    sent_at: dict[int, float] = {}
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    next_sequence = 2

    def submits(count: int) -> bytes:
        nonlocal next_sequence
        chunks = []
        now = time.perf_counter()
        for _ in range(count):
            pack_sequence(template, SEQUENCE_OFFSET, next_sequence)
            sent_at[next_sequence] = now
            next_sequence += 1
            chunks.append(bytes(template))
        return b"".join(chunks)

    started = time.perf_counter()
    writer.write(submits(min(window, messages)))
    sent = min(window, messages)
    answered = 0
    while answered < messages:
        data = await reader.read(65536)
        if not data:
            raise RuntimeError("the server closed the connection")
        now = time.perf_counter()
        fresh = 0
        for frame in frames.feed(data):
            _, command_id, status, sequence = HEADER.unpack_from(frame)
            if command_id != p.SUBMIT_SM_RESP:
                continue
            answered += 1
            fresh += 1
            statuses[status] = statuses.get(status, 0) + 1
            latencies.append(now - sent_at.pop(sequence))
        more = min(fresh, messages - sent)
        if more > 0:
            writer.write(submits(more))
            sent += more
    elapsed = time.perf_counter() - started
    writer.close()
    return {
        "case": f"submit_sm, window {window}",
        "window": window,
        "messages": messages,
        "accepted": statuses.get(p.ESME_ROK, 0),
        "throttled": statuses.get(p.ESME_RTHROTTLED, 0),
        "per_s": statuses.get(p.ESME_ROK, 0) / elapsed,
        "p50_ms": percentile(latencies, 0.5) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
    }


def run_case(window: int, messages: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="septet-bench-smpp-") as directory:
        engine = subprocess.Popen(
            [sys.executable, "-m", "bench.smpp", "--serve", directory],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert engine.stdout is not None
            port = int(engine.stdout.readline())
            return asyncio.run(run_client(port, window, messages))
        finally:
            if engine.stdin is not None:
                engine.stdin.close()
            try:
                engine.wait(timeout=30)
            except subprocess.TimeoutExpired:
                engine.kill()
                engine.wait()


def main(argv: list[str] | None = None, *, sizes: dict[int, int] | None = None) -> int:
    parser: argparse.ArgumentParser = base_parser(
        NAME, __doc__.splitlines()[0] if __doc__ else NAME
    )
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve is not None:
        import anyio

        from engine.log import configure_logging

        configure_logging(level="warning")  # stdout carries the port alone
        anyio.run(serve_engine, args.serve, backend="asyncio", backend_options={"use_uvloop": True})
        return 0
    plan = sizes or (QUICK_MESSAGES if args.quick else FULL_MESSAGES)
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
        ]
        for row in results
    ]
    print(
        format_table(
            ["case", "sent", "accepted", "throttled", "per second", "p50 ms", "p99 ms"], rows
        )
    )
    path = write_results(NAME, results, quick=args.quick, out=args.out)
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
