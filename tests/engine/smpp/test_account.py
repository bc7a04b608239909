"""An account's receipts wait by bind group: a receiving bind takes its own group's, then
those of a group no bind receives for, never another bound group's."""

from __future__ import annotations

import pytest

from engine.accounts import Account, AccountSettings, SmppLogin
from engine.smpp.account import AccountState
from engine.smpp.store import NO_GROUP, BindGroup, PendingReceipt

pytestmark = pytest.mark.anyio  # anyio.Event needs a running loop

LINK_A: BindGroup = ("link-a", "")
LINK_B: BindGroup = ("link-b", "")


def pending(receipt_id: int, group: BindGroup) -> PendingReceipt:
    return PendingReceipt(
        id=receipt_id,
        system_id="demo",
        source_addr="250788123456",
        destination_addr="ACME",
        text="",
        state="DELIVRD",
        message_state=2,
        bind_group=group,
    )


async def test_a_bind_takes_its_groups_receipts_then_those_of_groups_nobody_receives() -> None:
    account = AccountState(Account("demo", AccountSettings(smpp=SmppLogin(password="demo"))))
    account.queue(
        [pending(1, LINK_A), pending(2, LINK_B), pending(3, LINK_A), pending(4, NO_GROUP)]
    )
    account.receiver_bound(LINK_A)
    account.receiver_bound(LINK_B)
    # Both links are bound: each takes its own, oldest first, and never the other's.
    assert account.take(LINK_B) == pending(2, LINK_B)
    assert account.take(LINK_B) == pending(4, NO_GROUP)  # its group has no receiver
    assert account.take(LINK_B) is None
    assert [account.take(LINK_A), account.take(LINK_A)] == [pending(1, LINK_A), pending(3, LINK_A)]
    # A link that is gone leaves its receipts to any bind of the account.
    account.queue([pending(5, LINK_A)])
    assert account.take(LINK_B) is None
    changed = account.changed
    account.receiver_gone(LINK_A)
    assert changed.is_set()  # waiting binds look again
    assert account.take(LINK_B) == pending(5, LINK_A)


async def test_an_accounts_origin_is_the_same_on_every_node() -> None:
    owner = Account("demo", AccountSettings(smpp=SmppLogin(password="demo")))
    # The origin the journals of every earlier release hold; in a cluster every node's
    # server takes its events (the ids are in the store the nodes share).
    assert AccountState(owner).origin == "smpp:demo"


async def test_in_a_cluster_a_group_gone_from_this_node_gives_its_receipts_back() -> None:
    account = AccountState(Account("demo", AccountSettings(smpp=SmppLogin(password="demo"))))
    changed: list[BindGroup] = []
    account.on_receivers = changed.append
    account.receiver_bound(LINK_A)
    account.receiver_bound(LINK_B)
    account.queue([pending(1, LINK_A), pending(2, LINK_B), pending(3, NO_GROUP)])
    assert account.waiting() == 3
    assert account.give_back(LINK_A) == []  # link-a still receives here
    account.receiver_gone(LINK_A)
    # Another node's link-a bind may take it now; the rest stay for link-b here.
    assert account.give_back(LINK_A) == [pending(1, LINK_A)]
    account.receiver_gone(LINK_B)
    assert account.give_back(LINK_B) == [pending(2, LINK_B), pending(3, NO_GROUP)]
    assert (account.waiting(), changed) == (0, [LINK_A, LINK_B, LINK_A, LINK_B])
