"""What the SMPP server keeps durably, behind one interface whichever store keeps it.

Why a store of its own: an ESME is given one message_id per submit_sm PDU, but septet
joins the parts of a long message into ONE septet message (one msg_id). So every id an
ESME was given is a row:

    ids        id (given to the ESME) -> septet msg_id, once the message is journaled
               (NULL, with the part's octets, while a part waits for its siblings)
    outcomes   msg_id -> the FIRST final outcome septet reported for it while none of
               its ids were stored yet (the report outran the id's commit)
    receipts   deliver_sm receipts not yet acknowledged by a deliver_sm_resp

Each id and each receipt keeps the bind group that submitted it (BindGroup), so a
receipt goes back to that group's bind after a restart as before it.

The guarantees every store gives (`SmppStore`):

- One receipt per id the ESME was given: a row becomes a receipt once, in the
  transaction that deletes it, so a second final report for a message (a `failed` then
  a `dlr`, a repeated `dlr`, before or after a restart) finds no row and makes nothing.
- A report that finds no row yet is kept (the first one only: later ones are ignored),
  and the ids of its message stored later become receipts with it in the transaction
  that stores them; kept outcomes are pruned after OUTCOME_KEEP_S.
- An id whose submit_sm asked for no receipt (`GivenId.receipt_asked`) has no row once
  its message is journaled: nothing can be owed for it.
- An id is never given out twice, even after its rows are gone.
- A receipt leaves only when the ESME acknowledges it.
- Writes are group-committed (engine.journal.writer): one transaction, one commit, for
  every operation queued while the previous group ran.

The stores: engine.smpp.store (a SQLite file beside the journal, one node) and
engine.smpp.store_postgres (the PostgreSQL journal's database, shared by the nodes of a
cluster). The shared one also has `claims` (ReceiptClaims): there a receipt is claimed by
the node that delivers it, so any node with a suitable receiving bind delivers it
(engine.smpp.cluster_receipts); the SQLite store's is None, and its node delivers all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Final, Protocol

import msgspec

__all__ = [
    "NO_GROUP",
    "OUTCOME_KEEP_S",
    "BindGroup",
    "BuildReceipt",
    "GivenId",
    "Outcome",
    "PendingReceipt",
    "ReceiptClaims",
    "SmppStore",
    "StoreError",
]

# How long a report whose ids were not stored yet is kept. Such a report waits for a
# commit in progress (milliseconds), or for the parts of a long message to be joined
# again after a crash (the next start): a day is ample, and bounds the table.
OUTCOME_KEEP_S: Final = 24 * 3600.0


# The group of the bind a message id was given on: the (system_type, address_range) it
# declared (SMPP v3.4 5.2.7-5.2.8). The id's receipt goes to a receiving bind of the same
# group when one is bound (engine.smpp.account.AccountState). Rows from before it was kept
# read as the empty group.
BindGroup = tuple[str, str]
NO_GROUP: Final[BindGroup] = ("", "")


class Outcome(msgspec.Struct, frozen=True):
    """A septet message's final state as a receipt tells it (SMPP v3.4 Appendix B)."""

    state: str
    error: str
    done_at: float


class GivenId(msgspec.Struct, kw_only=True):
    """One message_id an ESME was given, and what its receipt will need."""

    id: int
    system_id: str
    msg_id: str | None
    registered_delivery: int
    submitted_at: float
    source_addr: str
    destination_addr: str
    text_head: str
    # While a part waits for its siblings: what reassembly needs to resume after a restart.
    part_key: tuple[str, str, str, int, int] | None = None
    part_seq: int = 0
    part_octets: bytes = b""
    data_coding: int = 0
    source_addr_ton: int = 0
    dest_addr_ton: int = 0
    # Stored since issue 16 (the receipt mirrors them); rows from before read as 0.
    source_addr_npi: int = 0
    dest_addr_npi: int = 0
    schedule_at: float | None = None
    expires_at: float | None = None
    priority: int = 0
    bind_group: BindGroup = NO_GROUP

    @property
    def receipt_asked(self) -> bool:
        """SMPP v3.4 5.2.17: bits 1..0 of registered_delivery ask for an SMSC receipt."""
        return bool(self.registered_delivery & 0x03)

    @property
    def kept(self) -> bool:
        """Whether the store keeps a row for it: while a part waits, or a receipt may
        be owed."""
        return self.msg_id is None or self.receipt_asked


class PendingReceipt(msgspec.Struct, kw_only=True):
    """A delivery receipt owed to an ESME (SMPP v3.4 Appendix B)."""

    id: int
    system_id: str
    source_addr: str
    destination_addr: str
    text: str
    state: str
    message_state: int
    # The deliver_sm's own TON/NPI (section 5.2.5): the submit's, mirrored.
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    dest_addr_ton: int = 0
    dest_addr_npi: int = 0
    bind_group: BindGroup = NO_GROUP


# What the server makes of a row and its message's outcome: a receipt, or None when the
# ESME asked for none (registered_delivery, section 5.2.17).
BuildReceipt = Callable[[GivenId, Outcome], PendingReceipt | None]


given_encoder: Final = msgspec.msgpack.Encoder()
given_decoder: Final = msgspec.msgpack.Decoder(GivenId)
receipt_decoder: Final = msgspec.msgpack.Decoder(PendingReceipt)
outcome_decoder: Final = msgspec.msgpack.Decoder(Outcome)


class StoreError(Exception):
    """The SMPP store cannot be opened or written."""


def receipts_of(
    rows: Sequence[GivenId], outcomes: Mapping[int, Outcome], build: BuildReceipt
) -> tuple[list[GivenId], list[PendingReceipt]]:
    """The rows that end (those with an outcome, by id) and the receipts made for them."""
    ending = [row for row in rows if row.id in outcomes]
    receipts = [r for r in (build(row, outcomes[row.id]) for row in ending) if r is not None]
    return ending, receipts


class ReceiptClaims(Protocol):
    """What a store shared by the nodes of a cluster adds: each receipt is claimed by the
    node that delivers it (engine.smpp.cluster_receipts), a dead node's waiting parts are
    taken by a live one, and a final event lost with its node is made good from the
    journal it shares the database with. A claim holds while its node is live
    (its heartbeat within the lease, engine.membership); a dead node's are claimed again."""

    node: str

    async def claim(
        self, system_id: str, groups: Sequence[BindGroup], limit: int
    ) -> list[PendingReceipt]:
        """Up to `limit` of the account's receipts not claimed by a live node, oldest
        first, now claimed by this node: those of `groups` (this node's receiving binds),
        and those of a group with no receiving bind on any live node."""
        ...

    async def release(self, ids: Sequence[int]) -> None:
        """This node will not deliver these receipts: any node may claim them (the
        nodes are woken)."""
        ...

    async def release_all(self) -> int:
        """Every receipt this node claimed (a previous run's, at start; what is left,
        at a clean stop), and its receiving binds (and dead nodes') forgotten; returns
        how many receipts."""
        ...

    async def set_receivers(self, system_id: str, group: BindGroup, receivers: int) -> None:
        """How many receiving binds of this account and group this node has now."""
        ...

    async def serve_notifications(self, wake: Callable[[], None]) -> None:
        """Forever: `wake()` when a node may have made or released a receipt."""
        ...

    async def adopt_parts(self) -> list[GivenId]:
        """The waiting parts of nodes that are no longer live, now this node's."""
        ...

    async def settle_final(self, before: float, build: BuildReceipt) -> list[PendingReceipt]:
        """Ids whose message the journal holds as final since before `before` become
        receipts (the final event was lost with the node that made it)."""
        ...


class SmppStore(Protocol):
    """Message ids, waiting parts, early outcomes and pending receipts (module docstring)."""

    # Set when the store is shared by a cluster's nodes; None: this node delivers all.
    claims: ReceiptClaims | None

    async def allocate_id(self) -> int:
        """A fresh message id, never given before (nor by another node)."""
        ...

    async def add_ids(self, rows: Sequence[GivenId], build: BuildReceipt) -> list[PendingReceipt]:
        """Store ids given out. Those whose message already has an outcome (its report
        outran this commit) become receipts at once, in the same transaction."""
        ...

    async def link(self, rows: Sequence[GivenId], build: BuildReceipt) -> list[PendingReceipt]:
        """Parts joined into one septet message (each row's msg_id set): they now wait
        for its report, or become receipts at once if it came already."""
        ...

    async def settle_messages(
        self, outcomes: Mapping[str, Outcome], build: BuildReceipt, *, now: float
    ) -> tuple[list[PendingReceipt], set[str]]:
        """In one transaction: the ids mapped to these septet messages leave, and the
        receipts `build` makes for them are stored. A message none of whose ids is
        stored keeps its outcome (the first one) for ids stored later. Returns the
        receipts and the msg_ids that had ids."""
        ...

    async def settle_ids(
        self, rows: Sequence[GivenId], outcome: Outcome, build: BuildReceipt
    ) -> list[PendingReceipt]:
        """The same for given ids whose message never reached the journal (refused, or
        a long message whose parts did not all arrive)."""
        ...

    async def forget_outcomes(self, before: float) -> int:
        """Drop kept outcomes older than `before` (wall-clock seconds); returns how many."""
        ...

    async def delete_receipts(self, ids: Sequence[int]) -> None:
        """Receipts the ESME acknowledged."""
        ...

    async def waiting_parts(self) -> list[GivenId]:
        """Parts waiting for their siblings (this node's, in a cluster)."""
        ...

    async def pending_receipts(self) -> list[PendingReceipt]:
        """Every receipt still owed."""
        ...

    async def counts(self) -> dict[str, int]:
        """Rows by kind: message_ids, outcomes, receipts."""
        ...
