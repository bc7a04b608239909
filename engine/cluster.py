"""Cluster membership: who this node is, and whose claims may be taken over. Pure: no I/O.

Several `septet run` processes on one database (docs/cluster.md) are told apart by a node
name (`[cluster] node`, or the host's name with a suffix drawn per run). Each claim a node
makes (accepted -> inflight) is stamped with its name, and the node keeps a heartbeat in
the journal's `nodes` table. A node whose heartbeat is older than the lease
(`[cluster] lease_s`), or that said it left, holds no lease: any live node may take its
claims over and finish them under the crash-recovery rules (engine.lifecycle.on_recovery):
what may have reached its provider without a safe resend becomes `unconfirmed`, what never
left is sent once. A live node's claims are never touched.

    node row: (node, run, started_at, heartbeat_at, left_at, claims held)
    liveness(row, now, lease_s): LIVE | EXPIRED | LEFT
    takeover_targets(rows, me, now, lease_s): the nodes not LIVE that still hold claims,
        or whose row only waits to be forgotten
    registration(existing row, run, now, lease_s): JOIN | REJOIN (its own claims from a
        previous run are recovered at start) | NAME_IN_USE (a live process has the name)
    leader(rows, now, lease_s): the one live node that runs what must run once per cluster
        (status polls, report deadlines, webhooks, retention), the oldest

A node's name is also its stamp on claims, so a node configured with a stable name that
restarts finds its own claims of the previous run and recovers them at start, as a single
process does; a node named per run leaves them to the takeover step of any live node.
The SQLite journal holds one node only (its file lock says so): there every claim is its
own, and nothing is ever taken over.
"""

from __future__ import annotations

import enum
import re
import secrets
import string
from collections.abc import Sequence
from typing import Annotated, Final

import msgspec

# What a node name may hold: it goes into logs, metric labels and the database.
NODE_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
SUFFIX_ALPHABET: Final = string.ascii_lowercase + string.digits
SUFFIX_LENGTH: Final = 4
# How many heartbeats fit in a lease at the least: one lost write must not cost a lease.
MIN_HEARTBEATS_PER_LEASE: Final = 3

PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]


class ClusterSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """`[cluster]`: this node's name and its lease (docs/cluster.md), and where the
    bridges' shared rate limits are kept."""

    # Unset: the host's name and a suffix drawn per run ("db1-k3x9").
    node: str | None = None
    heartbeat_s: PositiveFloat = 2.0
    lease_s: PositiveFloat = 15.0
    # redis://HOST:PORT/DB, rediss://… (TLS) or unix:///path (or "env:NAME"): each
    # bridge's requests/s and messages/s are kept there for every node
    # (engine.cluster_limits). Unset: in each process (engine.ratelimit).
    redis: str | None = None


def settings_problems(settings: ClusterSettings) -> list[str]:
    """One sentence per problem of `[cluster]` (config check and the start refuse them)."""
    problems: list[str] = []
    if settings.node is not None and NODE_NAME.fullmatch(settings.node) is None:
        problems.append(
            f"cluster.node {settings.node!r} is not a node name: 1 to 64 letters, digits,"
            " '.', '_' or '-', starting with a letter or digit."
        )
    if settings.lease_s < MIN_HEARTBEATS_PER_LEASE * settings.heartbeat_s:
        problems.append(
            f"cluster.lease_s ({settings.lease_s:g}) must be at least"
            f" {MIN_HEARTBEATS_PER_LEASE} heartbeats (cluster.heartbeat_s"
            f" {settings.heartbeat_s:g}): one late heartbeat would let another node take"
            " this node's work."
        )
    return problems


def node_name(configured: str | None, hostname: str, draw: str) -> str:
    """The configured name, or the host's first label with the per-run suffix `draw`."""
    if configured is not None:
        return configured
    host = re.sub(r"[^A-Za-z0-9._-]", "-", hostname.split(".")[0]).strip(".-_") or "node"
    return f"{host[: 64 - SUFFIX_LENGTH - 1]}-{draw}"


def draw_suffix() -> str:
    return "".join(secrets.choice(SUFFIX_ALPHABET) for _ in range(SUFFIX_LENGTH))


def draw_run() -> str:
    """A token per start of a process: tells this run's heartbeats from another's."""
    return secrets.token_hex(8)


class NodeRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A node's row in the journal, with the claims (leases) it holds now."""

    node: str
    run: str
    started_at: float
    heartbeat_at: float
    left_at: float | None = None
    claims: int = 0


class Liveness(enum.Enum):
    LIVE = "live"
    EXPIRED = "expired"  # no heartbeat within the lease: crashed, hung, or cut off
    LEFT = "left"  # stopped and said so


def liveness(record: NodeRecord, now: float, lease_s: float) -> Liveness:
    if record.left_at is not None:
        return Liveness.LEFT
    if now - record.heartbeat_at > lease_s:
        return Liveness.EXPIRED
    return Liveness.LIVE


def takeover_targets(
    records: Sequence[NodeRecord], me: str, now: float, lease_s: float
) -> list[NodeRecord]:
    """The nodes whose claims this node may take over (or whose rows it may forget):
    every node but this one that holds no lease, oldest heartbeat first."""
    dead = [
        record
        for record in records
        if record.node != me and liveness(record, now, lease_s) is not Liveness.LIVE
    ]
    return sorted(dead, key=lambda record: (record.heartbeat_at, record.node))


def leader(records: Sequence[NodeRecord], now: float, lease_s: float) -> str | None:
    """The node that runs the cluster's single duties (status polls, report deadlines,
    webhooks, retention): the live node that started first, by name on a tie. A node that
    joins later never takes it over from a live one; when the leader dies, the next oldest
    leads within a lease."""
    live = [record for record in records if liveness(record, now, lease_s) is Liveness.LIVE]
    if not live:
        return None
    return min(live, key=lambda record: (record.started_at, record.node)).node


class Registration(enum.Enum):
    JOIN = "join"  # a name no row has
    REJOIN = "rejoin"  # a name whose last run is gone: its claims are this start's to recover
    NAME_IN_USE = "name_in_use"  # a live process of another run holds the name


def registration(existing: NodeRecord | None, run: str, now: float, lease_s: float) -> Registration:
    if existing is None:
        return Registration.JOIN
    if existing.run != run and liveness(existing, now, lease_s) is Liveness.LIVE:
        return Registration.NAME_IN_USE
    return Registration.REJOIN


def name_in_use_sentence(existing: NodeRecord, now: float) -> str:
    return (
        f"The node name {existing.node!r} is in use by a running septet (its heartbeat"
        f" {max(0.0, now - existing.heartbeat_at):.1f} s ago): give each node its own"
        " [cluster] node, or leave it unset."
    )
