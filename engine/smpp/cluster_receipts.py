"""Receipts in a cluster: this node claims, from the store the nodes share, the receipts
its receiving binds should take, and gives back those it will not deliver.

    settle on any node ──▶ smpp_receipts (unclaimed) ──NOTIFY septet_smpp──▶ every node
    this node: claim (FOR UPDATE SKIP LOCKED) ──▶ AccountState queue ──▶ its binds
    deliver_sm_resp ──▶ delete            bind gone, refused, stopping ──▶ release

A node claims for an account only while it has a receiving bind of it, and at most
CLAIM_AHEAD receipts queued at a time (more once those are sent). Which receipts it may
claim is the bind group rule across the cluster (engine.smpp.store_postgres): its own
groups', and those of a group no live node has a receiving bind of. The count of its
receiving binds per group is written to the store as it changes, so the other nodes know.
A claim holds while this node is live; what it holds when it dies is claimed again by
another node once its lease has run out (engine.membership's rule for message claims).

It claims when woken (a NOTIFY from any node's commit that made or released a receipt, a
new receiving bind here, acknowledgements that emptied a full queue) and every POLL_S in
any case, so a missed notification, or a dead node's binds and claims ageing out, costs
at most that long. A store that cannot be written is waited out: what could not be
released is tried again at the next turn.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Final

import anyio
import structlog

from engine.smpp.account import AccountState
from engine.smpp.storage import BindGroup, PendingReceipt, ReceiptClaims, StoreError

log = structlog.get_logger("septet.smpp")

# Receipts a node keeps queued per account beyond those in flight on its binds.
CLAIM_AHEAD: Final = 256
POLL_S: Final = 1.0


class SharedReceipts:
    """This node's side of the cluster's receipts, for the accounts its server serves."""

    def __init__(
        self,
        claims: ReceiptClaims,
        accounts: Mapping[str, AccountState],
        *,
        poll_s: float = POLL_S,
    ) -> None:
        self._claims = claims
        self._accounts = accounts
        self._poll_s = poll_s
        self._wake = anyio.Event()
        # Accounts whose last claim was full: more may wait once their queue empties.
        self._more: set[str] = set()
        # (system_id, group) whose receiving binds here changed since last written.
        self._receivers_changed: set[tuple[str, BindGroup]] = set()
        self._to_release: list[int] = []
        for system_id, account in accounts.items():
            account.on_receivers = self._receivers_hook(system_id, account)

    def _receivers_hook(self, system_id: str, account: AccountState) -> Callable[[BindGroup], None]:
        def changed(group: BindGroup) -> None:
            self._receivers_changed.add((system_id, group))
            self.give_back(account.give_back(group))
            self.wake()

        return changed

    def wake(self) -> None:
        self._wake.set()

    def give_back(self, receipts: Sequence[PendingReceipt]) -> None:
        """This node will not deliver these: released at the next turn."""
        if receipts:
            self._to_release.extend(receipt.id for receipt in receipts)
            self.wake()

    def sent_some(self) -> None:
        """Acknowledgements came: claim more if the last claim was full."""
        if self._more:
            self.wake()

    async def start(self) -> int:
        """At start: what a previous run of this node claimed, and its binds, are
        forgotten (nothing here holds them now); returns how many were released."""
        return await self._claims.release_all()

    async def stop(self) -> None:
        """At a clean stop: everything this node holds is released for the other nodes."""
        try:
            released = await self._claims.release_all()
        except StoreError as error:
            log.error("smpp_receipts_not_released", error=str(error))
            return
        if released:
            log.info("smpp_receipts_released", count=released)

    async def serve(self) -> None:
        """Forever: a turn whenever woken, and every poll_s."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._claims.serve_notifications, self.wake)
            while True:
                with anyio.move_on_after(self._poll_s):
                    await self._wake.wait()
                self._wake = anyio.Event()
                try:
                    await self.turn()
                except StoreError as error:
                    log.error("smpp_receipts_claim_failed", error=str(error))

    async def turn(self) -> None:
        """Write what changed, release what was given back, claim for the binds here."""
        while self._receivers_changed:
            system_id, group = self._receivers_changed.pop()
            account = self._accounts[system_id]
            try:
                await self._claims.set_receivers(system_id, group, account.receivers[group])
            except StoreError:
                self._receivers_changed.add((system_id, group))
                raise
        if self._to_release:
            ids, self._to_release = self._to_release, []
            try:
                await self._claims.release(ids)
            except StoreError:
                self._to_release.extend(ids)
                raise
        for system_id, account in self._accounts.items():
            await self._claim_for(system_id, account)

    async def _claim_for(self, system_id: str, account: AccountState) -> None:
        groups = [group for group, count in account.receivers.items() if count > 0]
        wanted = CLAIM_AHEAD - account.waiting()
        if not groups or wanted <= 0:
            return
        receipts = await self._claims.claim(system_id, groups, wanted)
        if len(receipts) == wanted:
            self._more.add(system_id)
        else:
            self._more.discard(system_id)
        account.queue(receipts)
        for group in groups:  # the binds of a group may have gone while the claim ran
            self.give_back(account.give_back(group))
