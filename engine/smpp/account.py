"""One SMPP login while the server runs: its account (engine.accounts: limits shared with the
other doors), and the receipts waiting for one of its receiving binds, by bind group.

A receipt waits in the queue of the bind group (engine.smpp.storage.BindGroup) that
submitted its message. A receiving bind takes its own group's receipts first, oldest
first, then those of a group that has no receiving bind at all (none connected, or one
that only transmits), so a receipt goes back to the link that submitted its message
while that link is bound, and to any bind of the account otherwise: Kannel matches a
receipt only on the link its message went out on (smsc_smpp.c, dlr_find by smsc-id).

In a cluster the queue holds the receipts this node claimed from the shared store
(engine.smpp.cluster_receipts): `on_receivers` tells it when a group's receiving binds
here change, and `give_back` hands back what no bind here should take any more.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence

import anyio

from engine.accounts import Account
from engine.smpp.settings import SmppAccount
from engine.smpp.storage import BindGroup, PendingReceipt


def origin_of(system_id: str) -> str:
    """The origin of an account's messages: their events come to the server under it,
    whichever bind submitted them (the bind group then picks the bind). In a cluster every
    node's server takes its events (the ids are in the store the nodes share), so an
    event made on any node, or kept in the shared outbox while its node is gone, becomes
    receipts on a live one."""
    return f"smpp:{system_id}"


class AccountState:
    """A login's account (`owner`), its receipts waiting by bind group, and how many
    receiving binds each group has connected (the module docstring says who takes what).
    """

    def __init__(self, owner: Account) -> None:
        if owner.smpp is None:
            raise ValueError(f"account {owner.name!r} has no SMPP login")
        self.owner = owner
        self.account: SmppAccount = owner.smpp
        self.origin = origin_of(self.account.system_id)
        # Oldest first within a group; a group leaves the dict once it has none waiting.
        self.ready: dict[BindGroup, OrderedDict[int, PendingReceipt]] = {}
        self.receivers: Counter[BindGroup] = Counter()
        self.changed = anyio.Event()
        # Called with a group whose count of receiving binds here changed (a cluster's
        # shared receipts, engine.smpp.cluster_receipts).
        self.on_receivers: Callable[[BindGroup], None] | None = None

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

    def waiting(self) -> int:
        """Receipts queued here, not yet sent."""
        return sum(len(ready) for ready in self.ready.values())

    def give_back(self, group: BindGroup) -> list[PendingReceipt]:
        """The queued receipts no receiving bind here is for any more: with none bound,
        all; else `group`'s if it has no receiving bind here now (in a cluster another
        node's bind of that group may take them)."""
        if not self.receivers:
            receipts = [r for ready in self.ready.values() for r in ready.values()]
            self.ready.clear()
            return receipts
        if self.receivers[group] > 0 or group not in self.ready:
            return []
        return list(self.ready.pop(group).values())

    def receiver_bound(self, group: BindGroup) -> None:
        self.receivers[group] += 1
        if self.on_receivers is not None:
            self.on_receivers(group)

    def receiver_gone(self, group: BindGroup) -> None:
        self.receivers[group] -= 1
        if self.receivers[group] <= 0:
            del self.receivers[group]
            if group in self.ready:
                self.notify()  # its receipts are now for any receiving bind
        if self.on_receivers is not None:
            self.on_receivers(group)

    def notify(self) -> None:
        self.changed.set()
        self.changed = anyio.Event()
