"""`septet messages list|show|retry|cancel`: the journal's messages, via the daemon or on the file.

While a daemon runs on the journal, each command goes through its admin API (one writer
per file); when none does, it works on the file itself (engine.admin_api). Exit 0 done,
1 refused (no such message, not retryable, too late to cancel, no daemon answer), 2 bad
usage or config. docs/operations.md, "Admin commands".
"""

from __future__ import annotations

import argparse
import datetime as dt
from functools import partial

import msgspec

from engine.admin import Admin, Cancelled, MessageDetail, MessageList, Retried, parse_msg_id
from engine.admin_api import AdminCall, add_target_arguments, run_cli
from engine.models import State

PROG = "septet messages"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = sub.add_parser("list", help="messages newest first, optionally in one state")
    listing.add_argument(
        "--state", choices=[state.value for state in State], help="only messages in this state"
    )
    listing.add_argument("--limit", type=int, default=50, help="at most this many (1-1000)")
    listing.add_argument("--before", metavar="MSG_ID", help="older than this msg_id (paging)")
    listing.add_argument("--json", action="store_true", help="one JSON document")
    add_target_arguments(listing)
    for action, help_text in (
        ("show", "one message: its fields and its events"),
        ("retry", "send a message that ended rejected, undeliverable, expired or unknown again"),
        ("cancel", "cancel a message no request has carried yet"),
    ):
        one = sub.add_parser(action, help=help_text)
        one.add_argument("msg_id", metavar="MSG_ID")
        add_target_arguments(one)


def _time(at: float | None) -> str:
    if at is None:
        return "-"
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def render_list(page: MessageList) -> str:
    lines = [
        f"{m.msg_id:>10}  {m.status:<13}  {m.account or '-':<10}  {m.to:<16}  {m.bridge:<11}"
        f"  {_time(m.accepted_at)}  {_time(m.final_at)}  {m.error or ''}".rstrip()
        for m in page.messages
    ]
    header = f"{'msg_id':>10}  {'state':<13}  {'account':<10}  {'to':<16}  {'bridge':<11}"
    header += f"  {'accepted':<20}  {'ended':<20}  error"
    return "\n".join([header, *lines]) if lines else "no messages"


def render_detail(detail: MessageDetail) -> str:
    return msgspec.json.format(msgspec.json.encode(detail), indent=2).decode()


def render_retried(answer: Retried) -> str:
    line = f"message {answer.msg_id} retried as message {answer.new_msg_id}"
    return line if answer.warning is None else f"{line} (warning: {answer.warning})"


def render_cancelled(answer: Cancelled) -> str:
    return f"message {answer.msg_id} {'was cancelled already' if answer.already else 'cancelled'}"


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.action == "list":
        if args.before is not None and not str(args.before).isdigit():
            parser.error(f"--before {args.before!r} is not a msg_id")
        if not 1 <= args.limit <= 1000:
            parser.error("--limit must be 1 to 1000")
        query = [("limit", str(args.limit))]
        query += [("status", args.state)] if args.state else []
        query += [("before", args.before)] if args.before else []
        below = int(args.before) if args.before else None

        async def listing(admin: Admin) -> MessageList:
            return await admin.list(args.state, args.limit, below)

        call = AdminCall("GET", "/admin/messages", tuple(query), listing)
        if args.json:
            return run_cli(PROG, args, call, MessageList, lambda p: msgspec.json.encode(p).decode())
        return run_cli(PROG, args, call, MessageList, render_list)
    msg_id = args.msg_id
    if not msg_id.isdigit():
        parser.error(f"{msg_id!r} is not a msg_id (digits)")
    parse_msg_id(msg_id)
    if args.action == "show":
        call = AdminCall("GET", f"/admin/messages/{msg_id}", (), partial(Admin.show, msg_id=msg_id))
        return run_cli(PROG, args, call, MessageDetail, render_detail)
    if args.action == "retry":
        call = AdminCall(
            "POST", f"/admin/messages/{msg_id}/retry", (), partial(Admin.retry, msg_id=msg_id)
        )
        return run_cli(PROG, args, call, Retried, render_retried)
    call = AdminCall(
        "POST", f"/admin/messages/{msg_id}/cancel", (), partial(Admin.cancel, msg_id=msg_id)
    )
    return run_cli(PROG, args, call, Cancelled, render_cancelled)
