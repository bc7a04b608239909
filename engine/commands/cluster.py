"""`septet cluster status`: the nodes on the journal, their heartbeats and leases, the backlog.

With SQLite: through a running daemon's admin API, or on the journal itself when none
runs (as `septet journal stats`). With PostgreSQL: on the database itself, read-only (it
needs no daemon, and no node's lock). A node is `live` while its heartbeat is within
`[cluster] lease_s`, `expired` after (a live node takes its claims over), `left` once it
stopped cleanly; docs/cluster.md. A journal that cannot be reached is one sentence, exit 1.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time

import anyio
import msgspec

from engine.admin import Admin, ClusterStatus, cluster_status_of
from engine.admin_api import AdminCall, add_target_arguments, run_cli
from engine.config import ConfigError, load_config
from engine.journal import JournalError

PROG = "septet cluster"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    status = sub.add_parser(
        "status", help="nodes with heartbeat age, leases (claims) held, backlog by state"
    )
    status.add_argument("--json", action="store_true", help="one JSON document")
    add_target_arguments(status)


def _time(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def render_status(status: ClusterStatus) -> str:
    if status.nodes:
        width = max(len("node"), *(len(node.node) for node in status.nodes))
        lines = [f"{'node':<{width}}  state    heartbeat     started               claims"]
        lines.extend(
            f"{node.node:<{width}}  {node.liveness:<7}  {node.heartbeat_age_s:>7.1f} s ago"
            f"  {_time(node.started_at)}  {node.claims}"
            for node in status.nodes
        )
    else:
        lines = ["no node has joined: none is running on this journal"]
    live = sum(1 for node in status.nodes if node.liveness == "live")
    lines.append(f"live nodes   {live} of {len(status.nodes)} (lease {status.lease_s:g} s)")
    backlog = ", ".join(f"{state} {count}" for state, count in status.backlog.items())
    lines.append(f"backlog      {backlog}")
    return "\n".join(lines)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    del parser
    try:
        settings = load_config(args.config).settings
    except ConfigError as error:
        for sentence in error.sentences:
            print(f"{PROG}: {sentence}", file=sys.stderr)
        return 2
    lease_s = settings.cluster.lease_s
    render = _json if args.json else render_status
    if settings.journal.backend == "postgresql" and settings.journal.dsn is not None:
        try:
            found = anyio.run(postgres_status, settings.journal.dsn, lease_s)
        except JournalError as error:
            print(f"{PROG}: {error}", file=sys.stderr)
            return 1
        print(render(found))
        return 0

    async def status(admin: Admin) -> ClusterStatus:
        return await admin.cluster_status(lease_s)

    call = AdminCall("GET", "/admin/cluster/status", (("lease_s", repr(lease_s)),), status)
    return run_cli(PROG, args, call, ClusterStatus, render)


async def postgres_status(dsn: str, lease_s: float) -> ClusterStatus:
    """The status read from the database on a read-only connection of its own; JournalError
    with a sentence when it cannot be reached or holds no journal."""
    # PostgreSQL's client is an extra (septet[postgresql]): imported only when used.
    from engine.journal.postgres import describe_dsn, node_records
    from engine.journal.postgres_reader import open_postgres_reader
    from engine.journal.postgres_schema import schema_version

    async with open_postgres_reader(dsn) as reader:
        if await reader.run(schema_version) == 0:
            raise JournalError(
                f"No journal in the database at {describe_dsn(dsn)}: no node has started on it."
            )
        records = await reader.run(node_records)
        counts = await reader.counts()
    return cluster_status_of(records, counts, lease_s, time.time())


def _json(status: ClusterStatus) -> str:
    return msgspec.json.encode(status).decode()
