"""One ESME's TCP connection: reads framed PDUs, answers them, writes coalesced replies,
runs the session timers, and sends the account's receipts while bound as a receiver.

The session (engine.smpp.session) decides what is allowed and when timers fire; the
server (engine.smpp.server) does the work a submit_sm asks for. Up to `window`
submit_sm of one connection are in progress at once; past that the connection stops
reading, so the ESME feels TCP backpressure instead of the server buffering.

Unbind, either way (SMPP v3.4 section 4.2): the ESME's unbind is answered only after
every submit_sm_resp it is owed, so an ESME that submits then unbinds learns the fate of
each submit_sm; the server's own unbind (it is stopping) is sent by
`unbind_for_shutdown`, and the ESME's unbind_resp closes the connection. Either way no
receipt is sent once unbinding starts; those in flight and unacknowledged go back to
the account for its next bind.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Final

import anyio
import anyio.abc
import structlog

from engine.accounts import BindRefusal
from engine.smpp import pdu as p
from engine.smpp.codec import (
    FramingError,
    PduError,
    PduReader,
    decode_pdu,
    encode_header_only,
    encode_pdu,
)
from engine.smpp.receipts import receipt_pdu
from engine.smpp.session import BIND_TYPE_NAMES, Session
from engine.smpp.storage import NO_GROUP, BindGroup, PendingReceipt

if TYPE_CHECKING:
    from engine.smpp.account import AccountState
    from engine.smpp.server import SmppServer

log = structlog.get_logger("septet.smpp")

MAX_SEQUENCE: Final = 0x7FFFFFFF  # section 5.1.4: sequence numbers run 1..0x7FFFFFFF
_BIND_REFUSAL_STATUS: Final = {
    BindRefusal.UNKNOWN_SYSTEM_ID: p.ESME_RINVSYSID,
    BindRefusal.WRONG_PASSWORD: p.ESME_RINVPASWD,
    BindRefusal.BIND_TYPE: p.ESME_RBINDFAIL,
}


class SmppConnection:
    """One TCP connection: its session, its reads, its coalesced writes, its receipts."""

    def __init__(self, server: SmppServer, stream: anyio.abc.SocketStream, peer: str) -> None:
        self.server = server
        self.stream = stream
        self.peer = peer
        settings = server.settings
        self.session = Session(settings.timers, server.clock())
        self.reader = PduReader(settings.max_command_length)
        # submit_sm go to `window` long-lived workers (no task per request); at most
        # `window` are queued or in progress, and past that the reader waits.
        self._submits: deque[tuple[AccountState, p.SubmitSm]] = deque()
        self._submits_waiting = anyio.Event()
        self._in_progress = 0
        self._slot_freed = anyio.Event()
        self._workers_started = False
        self.account: AccountState | None = None
        # Set at bind: the (system_type, address_range) the bind declared; receipts of
        # what it submits go to a receiving bind of the same group (engine.smpp.account).
        self.bind_group: BindGroup = NO_GROUP
        self._receiving = False
        self._out: list[bytes] = []
        self._out_wake = anyio.Event()
        self._closing = False
        self._sequence = 0
        self._receipts_in_flight: dict[int, PendingReceipt] = {}
        self._receipt_slot_freed = anyio.Event()
        self._receipts_scope: anyio.CancelScope | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        # The scope the connection runs in (set by server._serve_connection).
        self.scope: anyio.CancelScope | None = None

    def send(self, data: bytes) -> None:
        self._out.append(data)
        self._out_wake.set()

    def close_after_flush(self, reason: str) -> None:
        self.session.close(reason)
        self._closing = True
        self._out_wake.set()

    def next_sequence(self) -> int:
        self._sequence = self._sequence % MAX_SEQUENCE + 1
        return self._sequence

    def unbind_for_shutdown(self) -> None:
        """The server is stopping: a bound ESME is sent an unbind (its unbind_resp then
        closes the connection); one not bound is closed. Submit_sm already read are
        still answered."""
        if self.session.bound:
            sequence = self.next_sequence()
            self.session.unbind_sent(sequence)
            self._stop_receipts()
            self.send(encode_pdu(p.Unbind(sequence_number=sequence)))
        elif not self.session.unbinding:
            self.close_after_flush("the server is stopping")

    def cancel(self) -> None:
        """Close now, whatever is in progress (the stopping server's time is up)."""
        self.session.close("the server stopped")
        if self.scope is not None:
            self.scope.cancel()

    async def serve(self) -> None:
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                tg.start_soon(self._serve_writes)
                tg.start_soon(self._serve_timers)
                await self._serve_reads()
                tg.cancel_scope.cancel()
        finally:
            self._stop_receipts()
            if self.account is not None and self._receipts_in_flight:
                # Unacknowledged receipts go back for the account's next bind.
                self.server.receipts_returned(self.account, list(self._receipts_in_flight.values()))
                self._receipts_in_flight.clear()
            with anyio.CancelScope(shield=True):
                await self.stream.aclose()
            log.info(
                "smpp_closed",
                peer=self.peer,
                system_id=self.session.system_id,
                reason=self.session.close_reason or "peer closed",
            )

    async def _serve_writes(self) -> None:
        try:
            while True:
                await self._out_wake.wait()
                self._out_wake = anyio.Event()
                while self._out:
                    data, self._out = self._out, []
                    await self.stream.send(b"".join(data))
                # Answers still being worked on go out before the close (an ESME that
                # unbinds with requests outstanding still gets their responses).
                if self._closing and not self._in_progress:
                    break
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            self.session.close("the peer stopped reading")
        if self._tg is not None:
            self._tg.cancel_scope.cancel()

    async def _serve_timers(self) -> None:
        clock = self.server.clock
        while True:
            deadline = self.session.next_deadline()
            if deadline is None:
                return
            delay = deadline - clock()
            if delay > 0:
                await anyio.sleep(delay)
                continue
            action = self.session.due(clock())
            if action == "enquire_link":
                sequence = self.next_sequence()
                self.session.probe_sent(sequence, clock())
                self.send(encode_pdu(p.EnquireLink(sequence_number=sequence)))
            elif action == "close":
                log.info("smpp_timer", peer=self.peer, reason=self.session.close_reason)
                self._closing = True
                self._out_wake.set()
                return

    @property
    def closing(self) -> bool:
        return self._closing

    async def _serve_reads(self) -> None:
        clock = self.server.clock
        while True:
            if self.closing:
                # The writer flushes what is queued, then cancels the connection.
                await anyio.sleep_forever()
            try:
                data = await self.stream.receive(65536)
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                self.session.close("peer closed")
                return
            except OSError:
                self.session.close("connection reset")
                return
            try:
                frames = self.reader.feed(data)
            except FramingError as error:
                # Section 3.3: the stream cannot be followed further; nack and close.
                self.send(encode_header_only(p.GENERIC_NACK, error.status, error.sequence_number))
                self.close_after_flush(f"bad command_length {error.command_length}")
                continue
            if frames:
                self.session.received(clock())
            for frame in frames:
                try:
                    pdu = decode_pdu(frame)
                except PduError as error:
                    if not error.command_id & p.RESPONSE_BIT:
                        self.send(
                            encode_header_only(p.GENERIC_NACK, error.status, error.sequence_number)
                        )
                    continue
                await self._handle(pdu)
                if self.closing:
                    break

    async def _handle(self, pdu: p.AnyPdu) -> None:
        if isinstance(pdu, p.SubmitSm):
            status = self.session.check_request(p.SUBMIT_SM)
            if status != p.ESME_ROK or self.account is None:
                self.send(encode_header_only(p.SUBMIT_SM_RESP, status, pdu.sequence_number))
                return
            if not self._workers_started and self._tg is not None:
                self._workers_started = True
                for _ in range(self.server.settings.window):
                    self._tg.start_soon(self._serve_submits)
            while self._in_progress >= self.server.settings.window:
                await self._slot_freed.wait()
            self._in_progress += 1
            self._submits.append((self.account, pdu))
            self._submits_waiting.set()
        elif isinstance(pdu, p.DeliverSmResp | p.GenericNack):
            self._receipt_answered(pdu)
        elif isinstance(pdu, p.EnquireLink):
            self.send(encode_pdu(p.EnquireLinkResp(sequence_number=pdu.sequence_number)))
        elif isinstance(pdu, p.EnquireLinkResp):
            self.session.probe_answered(pdu.sequence_number)
        elif isinstance(pdu, p.BindTransmitter | p.BindReceiver | p.BindTransceiver):
            self._bind(pdu)
        elif isinstance(pdu, p.Unbind):
            await self._unbind(pdu)
        elif isinstance(pdu, p.UnbindResp):
            if self.session.unbind_answered(pdu.sequence_number):
                self.close_after_flush("unbind answered")
        elif isinstance(pdu, p.DeliverSm):
            # deliver_sm travels SMSC -> ESME only (section 4.6).
            self.send(encode_header_only(p.DELIVER_SM_RESP, p.ESME_RINVCMDID, pdu.sequence_number))
        elif isinstance(pdu, p.HeaderOnly) and not pdu.command & p.RESPONSE_BIT:
            status = self.session.check_request(pdu.command)
            status = status if status != p.ESME_ROK else p.ESME_RINVCMDID
            self.send(encode_header_only(p.response_id(pdu.command), status, pdu.sequence_number))
        # Other responses (to requests this server never sends) are ignored.

    async def _unbind(self, unbind: p.Unbind) -> None:
        status = self.session.check_request(p.UNBIND)
        if status == p.ESME_ROK:
            self.session.unbind_received()
            self._stop_receipts()
            # Section 4.2: unbind_resp ends the session, so it goes out last: after the
            # submit_sm_resp of every submit_sm read before the unbind (nothing is read
            # after it: this waits in the reader).
            while self._in_progress:
                await self._slot_freed.wait()
        self.send(encode_header_only(p.UNBIND_RESP, status, unbind.sequence_number))
        if status == p.ESME_ROK:
            self.close_after_flush("unbind")

    async def _serve_submits(self) -> None:
        submit = self.server.submit
        send = self.send
        queued = self._submits
        while True:
            while queued:
                account, pdu = queued.popleft()
                try:
                    send(encode_pdu(await submit(account, pdu, self.bind_group)))
                finally:
                    self._in_progress -= 1
                    self._slot_freed.set()
                    self._slot_freed = anyio.Event()
            waiting = self._submits_waiting
            if not queued:
                await waiting.wait()
                if waiting is self._submits_waiting:
                    self._submits_waiting = anyio.Event()

    # ── bind ────────────────────────────────────────────────────────────────────

    def _bind(self, bind: p.BindRequest) -> None:
        command = bind.command_id
        response_command = p.response_id(command)
        status = self.session.check_request(command)
        server = self.server
        if status == p.ESME_ROK and bind.interface_version not in p.INTERFACE_VERSIONS:
            status = p.ESME_RBINDFAIL
        if status != p.ESME_ROK:
            server.monitor.smpp_bind("refused")
            self.send(encode_header_only(response_command, status, bind.sequence_number))
            return
        # Failed binds count per (system_id, peer): one account's bad passwords never lock
        # out another account from the same address (engine.accounts, engine.smpp.auth).
        found = server.registry.by_smpp(
            bind.system_id, bind.password, self.peer, server.clock(), BIND_TYPE_NAMES[command]
        )
        if isinstance(found, BindRefusal):
            self._refuse_bind(bind, found)
            return
        account = server.accounts[bind.system_id]
        self.account = account
        self.bind_group = (bind.system_type, bind.address_range)
        self.session.bind(command, bind.system_id)
        server.monitor.smpp_bind("bound")
        response_type = _BIND_RESPONSES[command]
        self.send(
            encode_pdu(
                response_type(
                    sequence_number=bind.sequence_number,
                    system_id=server.settings.system_id,
                    # Section 5.3.2.25: only to an ESME that speaks v3.4 or later.
                    sc_interface_version=(
                        p.SERVER_INTERFACE_VERSION if bind.interface_version >= 0x34 else None
                    ),
                )
            )
        )
        log.info(
            "smpp_bound",
            peer=self.peer,
            system_id=bind.system_id,
            type=BIND_TYPE_NAMES[command],
            system_type=bind.system_type,
            address_range=bind.address_range,
        )
        if self.session.can_receive and self._tg is not None:
            account.receiver_bound(self.bind_group)
            self._receiving = True
            self._receipts_scope = anyio.CancelScope()
            self._tg.start_soon(self._serve_receipts, account, self._receipts_scope)

    def _refuse_bind(self, bind: p.BindRequest, found: BindRefusal) -> None:
        """Answer a bind the registry refused: a blocked peer is told and closed, bad
        credentials are logged and counted, a wrong bind type only counted."""
        server = self.server
        response_command = p.response_id(bind.command_id)
        if found is BindRefusal.BLOCKED:
            log.warning("smpp_bind_blocked", peer=self.peer, system_id=bind.system_id)
            server.monitor.smpp_bind("blocked")
            self.send(encode_header_only(response_command, p.ESME_RBINDFAIL, bind.sequence_number))
            self.close_after_flush("too many failed binds")
            return
        if found is not BindRefusal.BIND_TYPE:
            log.warning(
                "smpp_bind_failed", peer=self.peer, system_id=bind.system_id, reason=found.name
            )
        server.monitor.smpp_bind(
            "refused" if found is BindRefusal.BIND_TYPE else "invalid_credentials"
        )
        status = _BIND_REFUSAL_STATUS[found]
        self.send(encode_header_only(response_command, status, bind.sequence_number))

    # ── receipts ────────────────────────────────────────────────────────────────

    def _stop_receipts(self) -> None:
        """No more receipts to this bind: its group's go to another (once none of the
        group is left bound, to any bind of the account)."""
        if self._receipts_scope is not None:
            self._receipts_scope.cancel()
        if self._receiving and self.account is not None:
            self._receiving = False
            self.account.receiver_gone(self.bind_group)

    async def _serve_receipts(self, account: AccountState, scope: anyio.CancelScope) -> None:
        with scope:
            await self._send_receipts(account)

    async def _send_receipts(self, account: AccountState) -> None:
        window = self.server.settings.receipt_window
        alphabet = account.account.data_coding_0
        while True:
            changed = account.changed
            freed = self._receipt_slot_freed
            while len(self._receipts_in_flight) < window:
                receipt = account.take(self.bind_group)
                if receipt is None:
                    break
                sequence = self.next_sequence()
                self._receipts_in_flight[sequence] = receipt
                self.send(encode_pdu(receipt_pdu(receipt, sequence, alphabet)))
            if len(self._receipts_in_flight) >= window:
                await freed.wait()
            else:
                await changed.wait()

    def _receipt_answered(self, response: p.DeliverSmResp | p.GenericNack) -> None:
        receipt = self._receipts_in_flight.pop(response.sequence_number, None)
        if receipt is None or self.account is None:
            return
        self._receipt_slot_freed.set()
        self._receipt_slot_freed = anyio.Event()
        if isinstance(response, p.DeliverSmResp) and response.command_status == p.ESME_ROK:
            self.server.receipt_acknowledged(receipt.id)
        elif self.server.tg is not None:
            log.info("smpp_receipt_refused", id=receipt.id, status=response.command_status)
            self.server.tg.start_soon(self.server.retry_receipt_later, self.account, receipt)


_BIND_RESPONSES: dict[int, type[p.BindResp]] = {
    p.BIND_TRANSMITTER: p.BindTransmitterResp,
    p.BIND_RECEIVER: p.BindReceiverResp,
    p.BIND_TRANSCEIVER: p.BindTransceiverResp,
}
