"""`septet send`: submit NDJSON (or one message from flags) to a running daemon, print events.

Lines go to the daemon's NDJSON socket; every event that comes back is printed as it
arrives. The command ends when every line has its answer (one `rejected`, or one
`accepted` per recipient), or with --wait-dlr when every accepted message has also
reached a final state (a final `dlr` or a `failed`). Exit 0 when all lines were
accepted (and, with --wait-dlr, none failed), 1 otherwise, 2 on bad usage.

With --session TOKEN the first line sent is `{"session": "TOKEN"}` (engine.ingress.sessions):
events of messages sent under that token come to whichever connection presents it, and
those kept while none did are printed first; only what follows the daemon's `session`
event is counted as this run's answers.

With --account NAME the first line is an auth line (`{"auth": {"account": NAME,
"api_key": …}}`, with the session beside it when --session is given): the lines are that
account's (docs/accounts.md). The key is read from the environment variable
SEPTET_API_KEY, never from a flag (flags show in `ps`).

--events reads the events the journal keeps for clients that had gone (all of them, or
one identity's: an origin, or --session's, of --account's sessions when given, else of
the default account's), the operator's way in.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import msgspec

from engine.ingress.sessions import (
    auth_line,
    check_token,
    describe,
    session_line,
    session_origin,
)

FINAL_STATES = frozenset({"DELIVRD", "UNDELIV", "EXPIRED", "REJECTD", "DELETED", "UNKNOWN"})
# Where --account's API key comes from.
API_KEY_VARIABLE = "SEPTET_API_KEY"
# --events without an ORIGIN: every client's kept events.
ALL_ORIGINS = ""


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
        "--session",
        metavar="TOKEN",
        help="present this session first (16 to 128 characters of A-Z, a-z, 0-9, _ and -;"
        " keep it secret): events of messages sent under it reach whichever connection"
        " presents it, and those kept while none did are printed first",
    )
    parser.add_argument(
        "--account",
        metavar="NAME",
        help=f"send as this account: its API key is read from ${API_KEY_VARIABLE}"
        " (docs/accounts.md); without it, the lines are the listener's account's",
    )
    parser.add_argument(
        "--events",
        nargs="?",
        const=ALL_ORIGINS,
        metavar="ORIGIN",
        help="print (and remove) events kept for clients that had disconnected, then exit:"
        " all of them, or those of ORIGIN (as in the daemon's log, such as tcp:RUN:N),"
        " or with --session those of that session (with --account, that account's;"
        " without, the default account's)",
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


class Answers:
    """Counts what comes back for this run's lines: one `rejected` or one `accepted` per
    recipient per line, then (with --wait-dlr) a final report per accepted message."""

    def __init__(self, lines: list[bytes], wait_dlr: bool, *, counting: bool) -> None:
        self.expected = [_recipients(line) for line in lines]
        self.wait_dlr = wait_dlr
        # With a session, events kept from earlier connections come first: counting
        # starts at the daemon's `session` event.
        self.counting = counting
        self.answered = 0
        self.accepted_in_line = 0
        self.open_messages: set[str] = set()
        self.ok = True

    def done(self) -> bool:
        return self.answered == len(self.expected) and not (self.wait_dlr and self.open_messages)

    def take(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "session":
            self.counting = True
        elif not self.counting:
            return
        elif kind == "rejected":
            self.answered += 1
            self.ok = False
        elif kind == "accepted":
            self.accepted_in_line += 1
            if event.get("msg_id"):
                self.open_messages.add(event["msg_id"])
            answered = self.answered
            if answered < len(self.expected) and self.accepted_in_line >= self.expected[answered]:
                self.answered += 1
                self.accepted_in_line = 0
        elif kind == "failed":
            self.ok = False
            self.open_messages.discard(event.get("msg_id"))
        elif kind == "dlr" and event.get("state") in FINAL_STATES:
            self.open_messages.discard(event.get("msg_id"))


async def _exchange(
    lines: list[bytes],
    address: str,
    wait_dlr: bool,
    timeout_s: float,
    keepalive_s: float,
    session: str | None,
    auth: tuple[str, str] | None = None,
) -> int:
    stream = await _connect(address)
    answers = Answers(lines, wait_dlr, counting=session is None)
    out = sys.stdout.buffer
    buffer = b""
    if auth is not None:
        first = [auth_line(*auth, session=session)]
    else:
        first = [] if session is None else [session_line(session)]

    async with stream, anyio.create_task_group() as tg:

        async def writer() -> None:
            # No half-close: to the daemon, end of input means the client has gone (its
            # later events are kept in the journal outbox, for its session or for
            # `septet send --events`).
            await stream.send(b"".join(line + b"\n" for line in [*first, *lines]))
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
            while not answers.done():
                try:
                    data = await stream.receive(65536)
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    break
                buffer += data
                *complete, buffer = buffer.split(b"\n")
                for raw in complete:
                    if not raw:
                        continue
                    out.write(raw + b"\n")
                    answers.take(msgspec.json.decode(raw))
                out.flush()
        tg.cancel_scope.cancel()
    if scope.cancelled_caught:
        print(f"septet send: timed out after {timeout_s:g} s", file=sys.stderr)
        return 1
    if not answers.done():
        print("septet send: the daemon closed the connection early", file=sys.stderr)
        return 1
    return 0 if answers.ok else 1


async def _stored_events(journal_path: str, origin: str | None) -> int:
    """Events the daemon could not deliver (the client had gone) wait in the journal's
    outbox, each under its client's identity; SQLite's WAL lets this run beside the
    daemon."""
    from engine.config import JournalSettings
    from engine.journal import open_journal

    out = sys.stdout.buffer
    total = 0
    async with open_journal(JournalSettings(path=journal_path)) as journal:
        while batch := await journal.take_events(origin, 1000):
            out.write(b"".join(line if line.endswith(b"\n") else line + b"\n" for line in batch))
            total += len(batch)
    out.flush()
    print(f"septet send: {total} stored events", file=sys.stderr)
    return 0


def _events_origin(args: argparse.Namespace, parser: argparse.ArgumentParser) -> str | None:
    """Whose kept events --events reads: None for everyone's."""
    if args.session is not None:
        if args.events != ALL_ORIGINS:
            parser.error("--events takes an ORIGIN or --session, not both")
        return session_origin(args.session, args.account)
    return args.events or None


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.session is not None and (problem := check_token(args.session)) is not None:
        parser.error(f"--session: {describe(problem)}")
    if args.events is not None:
        origin = _events_origin(args, parser)
        if not Path(args.journal).is_file():
            print(f"septet send: no journal at {args.journal}", file=sys.stderr)
            return 1
        import asyncio

        from engine.journal import JournalError

        try:
            return asyncio.run(_stored_events(args.journal, origin))
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
    auth: tuple[str, str] | None = None
    if args.account is not None:
        key = os.environ.get(API_KEY_VARIABLE)
        if not key:
            parser.error(f"--account needs the account's API key in ${API_KEY_VARIABLE}")
        auth = (args.account, key)
    try:
        return anyio.run(
            _exchange,
            lines,
            args.socket,
            args.wait_dlr,
            args.timeout,
            args.keepalive,
            args.session,
            auth,
        )
    except OSError as error:
        print(f"septet send: cannot reach the daemon at {args.socket}: {error}", file=sys.stderr)
        return 1
