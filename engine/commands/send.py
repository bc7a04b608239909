"""`septet send`: submit NDJSON (or one message from flags) to a running daemon, print events.

Lines go to the daemon's NDJSON socket; every event that comes back is printed as it
arrives. The command ends when every line has its answer (one `rejected`, or one
`accepted` per recipient), or with --wait-dlr when every accepted message has also
reached a final state (a final `dlr` or a `failed`). Exit 0 when all lines were
accepted (and, with --wait-dlr, none failed), 1 otherwise, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import anyio
import anyio.abc
import msgspec

FINAL_STATES = frozenset({"DELIVRD", "UNDELIV", "EXPIRED", "REJECTD", "DELETED", "UNKNOWN"})


# Well under the daemon's default idle timeout ([ingress] idle_timeout_s, 600 s).
KEEPALIVE_S = 60.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--socket",
        default="127.0.0.1:7750",
        metavar="ADDR",
        help="HOST:PORT of the NDJSON TCP socket, or a Unix socket path (default %(default)s)",
    )
    parser.add_argument("--to", action="append", help="recipient (repeatable); with --text")
    parser.add_argument("--text", help="message text; with --to")
    parser.add_argument("--from", dest="sender", help="sender id")
    parser.add_argument("--id", dest="client_ref", help="your reference (idempotency key)")
    parser.add_argument("--route", help="bridge to use")
    parser.add_argument(
        "--wait-dlr", action="store_true", help="wait for every message's final delivery report"
    )
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="give up after this many seconds"
    )
    parser.add_argument(
        "--keepalive",
        type=_positive_seconds,
        default=KEEPALIVE_S,
        metavar="SECONDS",
        help="send a blank line this often while waiting, so the daemon's idle timeout"
        " ([ingress] idle_timeout_s) does not close the connection (default %(default)g)",
    )
    parser.add_argument(
        "--events",
        action="store_true",
        help="print (and remove) events kept for clients that had disconnected, then exit",
    )
    parser.add_argument(
        "--journal",
        default="septet.db",
        metavar="PATH",
        help="the daemon's journal file, for --events (default %(default)s)",
    )


def _positive_seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text}")
    return value


def _lines_from_flags(args: argparse.Namespace) -> list[bytes]:
    item: dict[str, object] = {"to": args.to if len(args.to) > 1 else args.to[0], "text": args.text}
    if args.sender:
        item["from"] = args.sender
    if args.client_ref:
        item["id"] = args.client_ref
    if args.route:
        item["route"] = args.route
    return [msgspec.json.encode(item)]


def _recipients(line: bytes) -> int:
    """How many `accepted` events a line earns if accepted (one per recipient)."""
    try:
        value = msgspec.json.decode(line)
    except msgspec.DecodeError:
        return 1
    if isinstance(value, dict) and isinstance(value.get("to"), list):
        return max(1, len(value["to"]))
    return 1


async def _connect(address: str) -> anyio.abc.ByteStream:
    if "/" in address or address.endswith(".sock"):
        return await anyio.connect_unix(Path(address))
    host, _, port = address.rpartition(":")
    return await anyio.connect_tcp(host.strip("[]") or "127.0.0.1", int(port))


async def _session(
    lines: list[bytes], address: str, wait_dlr: bool, timeout_s: float, keepalive_s: float
) -> int:
    stream = await _connect(address)
    expected = [_recipients(line) for line in lines]
    answered = 0
    ok = True
    open_messages: set[str] = set()
    accepted_in_line = 0
    out = sys.stdout.buffer
    buffer = b""

    def done() -> bool:
        return answered == len(lines) and (not wait_dlr or not open_messages)

    async with stream, anyio.create_task_group() as tg:

        async def writer() -> None:
            # No half-close: to the daemon, end of input means the client has gone (its
            # later events would go to the journal outbox, for `septet send --events`).
            await stream.send(b"".join(line + b"\n" for line in lines))
            # A blank line now and then is a keep-alive: the daemon closes a connection
            # that completes no line for `[ingress] idle_timeout_s` (600 s by default),
            # and waiting for delivery reports can take longer.
            # A connection the daemon has closed ends the reader's loop, which says so.
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                while True:
                    await anyio.sleep(keepalive_s)
                    await stream.send(b"\n")

        tg.start_soon(writer)
        with anyio.move_on_after(timeout_s) as scope:
            while not done():
                try:
                    data = await stream.receive(65536)
                except anyio.EndOfStream:
                    break
                buffer += data
                *complete, buffer = buffer.split(b"\n")
                for raw in complete:
                    if not raw:
                        continue
                    out.write(raw + b"\n")
                    event = msgspec.json.decode(raw)
                    kind = event.get("event")
                    if kind == "rejected":
                        answered += 1
                        ok = False
                    elif kind == "accepted":
                        accepted_in_line += 1
                        if event.get("msg_id"):
                            open_messages.add(event["msg_id"])
                        if answered < len(expected) and accepted_in_line >= expected[answered]:
                            answered += 1
                            accepted_in_line = 0
                    elif kind == "failed":
                        ok = False
                        open_messages.discard(event.get("msg_id"))
                    elif kind == "dlr" and event.get("state") in FINAL_STATES:
                        open_messages.discard(event.get("msg_id"))
                out.flush()
        tg.cancel_scope.cancel()
    if scope.cancelled_caught:
        print(f"septet send: timed out after {timeout_s:g} s", file=sys.stderr)
        return 1
    if not done():
        print("septet send: the daemon closed the connection early", file=sys.stderr)
        return 1
    return 0 if ok else 1


async def _stored_events(journal_path: str) -> int:
    """Events the daemon could not deliver (the client had gone) wait in the journal's
    outbox; SQLite's WAL lets this run beside the daemon."""
    from engine.journal import open_journal

    out = sys.stdout.buffer
    total = 0
    async with open_journal(journal_path) as journal:
        while batch := await journal.take_events(None, 1000):
            out.write(b"".join(line if line.endswith(b"\n") else line + b"\n" for line in batch))
            total += len(batch)
    out.flush()
    print(f"septet send: {total} stored events", file=sys.stderr)
    return 0


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.events:
        if not Path(args.journal).is_file():
            print(f"septet send: no journal at {args.journal}", file=sys.stderr)
            return 1
        import asyncio

        from engine.journal import JournalError

        try:
            return asyncio.run(_stored_events(args.journal))
        except JournalError as error:
            print(f"septet send: {error}", file=sys.stderr)
            return 1
    if (args.to is None) != (args.text is None):
        parser.error("--to and --text go together")
    if args.to is not None:
        lines = _lines_from_flags(args)
    else:
        lines = [line.strip() for line in sys.stdin.buffer if line.strip()]
    if not lines:
        print("septet send: nothing to send (give --to/--text or NDJSON on stdin)", file=sys.stderr)
        return 2
    try:
        return anyio.run(_session, lines, args.socket, args.wait_dlr, args.timeout, args.keepalive)
    except OSError as error:
        print(f"septet send: cannot reach the daemon at {args.socket}: {error}", file=sys.stderr)
        return 1
