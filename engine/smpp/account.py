"""One SMPP login while the server runs: its account (engine.accounts: limits shared with the
other doors), and the receipts waiting for one of its receiving binds, by bind group.

A receipt waits in the queue of the bind group (engine.smpp.storage.BindGroup) that
submitted its message. A receiving bind takes its own group's receipts first, oldest
first, then those of a group that has no receiving bind at all (none connected, or one
that only transmits), so a receipt goes back to the link that submitted its message
while that link is bound, and to any bind of the account otherwise: Kannel matches a
receipt only on the link its message went out on (smsc_smpp.c, dlr_find by smsc-id).
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Sequence

import anyio

from engine.accounts import Account
from engine.smpp.settings import SmppAccount
from engine.smpp.storage import BindGroup, PendingReceipt


def origin_of(system_id: str, node: str | None = None) -> str:
    """The origin of an account's messages: their events come to the server under it,
    whichever bind submitted them (the bind group then picks the bind). In a cluster
    (`node` given) each node's server has its own: the ids an ESME was given live in
    that node's store, so a report another node took must come back to this node
    (through the shared outbox, engine.ingress.outbox), and the client references built
    from those ids stay unique across the nodes."""
    return f"smpp:{system_id}" if node is None else f"smpp:{system_id}@{node}"


class AccountState:
    """A login's account (`owner`), its receipts waiting by bind group, and how many
    receiving binds each group has connected (the module docstring says who takes what).
    """

    def __init__(self, owner: Account, node: str | None = None) -> None:
        if owner.smpp is None:
            raise ValueError(f"account {owner.name!r} has no SMPP login")
        self.owner = owner
        self.account: SmppAccount = owner.smpp
        self.origin = origin_of(self.account.system_id, node)
        # Oldest first within a group; a group leaves the dict once it has none waiting.
        self.ready: dict[BindGroup, OrderedDict[int, PendingReceipt]] = {}
        self.receivers: Counter[BindGroup] = Counter()
        self.changed = anyio.Event()

    def queue(self, receipts: Sequence[PendingReceipt]) -> None:
        for receipt in receipts:
            self.ready.setdefault(receipt.bind_group, OrderedDict())[receipt.id] = receipt
        if receipts:
            self.notify()

    def take(self, group: BindGroup) -> PendingReceipt | None:
        """The next receipt for a receiving bind of `group`, if any is for it."""
        waiting = self.ready.get(group)
        if waiting is None:
            waiting = next(
                (ready for other, ready in self.ready.items() if not self.receivers[other]),
                None,
            )
            if waiting is None:
                return None
        _, receipt = waiting.popitem(last=False)
        if not waiting:
            del self.ready[receipt.bind_group]
        return receipt

    def receiver_bound(self, group: BindGroup) -> None:
        self.receivers[group] += 1

    def receiver_gone(self, group: BindGroup) -> None:
        self.receivers[group] -= 1
        if self.receivers[group] <= 0:
            del self.receivers[group]
            if group in self.ready:
                self.notify()  # its receipts are now for any receiving bind

    def notify(self) -> None:
        self.changed.set()
        self.changed = anyio.Event()
