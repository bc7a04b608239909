"""One SMPP session's bind state and timers, seen from the SMSC side. Pure: no I/O, no clock.

States (SMPP v3.4 section 2.2; OUTBOUND and outbind are ESME-side and not here):

    OPEN ──bind_transmitter──▶ BOUND_TX ─┐
      │ ──bind_receiver─────▶ BOUND_RX ──┼──unbind, either side──▶ UNBINDING ──▶ CLOSED
      │ ──bind_transceiver──▶ BOUND_TRX ─┘     (unbind_resp sent or received) │
      │                        any bound state or UNBINDING ──timer / error──▶ CLOSED
      └──────────session_init timer─────────────────────────────────────────▶ CLOSED

UNBINDING (section 4.2: either side may unbind) is the session's end in progress: the
ESME's unbind waits there until every submit_sm_resp it is owed has been sent, then
gets its unbind_resp; the server's own unbind (it is stopping) waits there for the
ESME's unbind_resp. No receipt is sent from it, and no new message is taken.

Which requests an ESME may send in each state (section 2.3, table 2-1; a request in the
wrong state is answered ESME_RINVBNDSTS, a second bind ESME_RALYBND):

    request            OPEN  BOUND_TX  BOUND_RX  BOUND_TRX  UNBINDING
    bind_*             yes   RALYBND   RALYBND   RALYBND    RALYBND
    submit_sm etc.     no    yes       no        yes        no
    enquire_link       yes   yes       yes       yes        yes
    unbind             no    yes       yes       yes        yes (crossed unbinds)

Timers (section 7.2 and SMPP v5.0 section 2.9, which names them): the session-init
timer closes a connection that does not bind in time; the enquire-link timer makes the
server probe a peer that has been silent; the response timer closes the session when
that probe goes unanswered; the inactivity timer closes a session whose peer has sent
nothing at all for that long.
"""

from __future__ import annotations

import enum
from typing import Final, Literal

import msgspec

from engine.smpp import pdu as p


class State(enum.Enum):
    OPEN = "open"
    BOUND_TX = "bound_tx"
    BOUND_RX = "bound_rx"
    BOUND_TRX = "bound_trx"
    UNBINDING = "unbinding"
    CLOSED = "closed"


BIND_STATES: Final = {
    p.BIND_TRANSMITTER: State.BOUND_TX,
    p.BIND_RECEIVER: State.BOUND_RX,
    p.BIND_TRANSCEIVER: State.BOUND_TRX,
}
BindType = Literal["transmitter", "receiver", "transceiver"]
BIND_TYPE_NAMES: Final[dict[int, BindType]] = {
    p.BIND_TRANSMITTER: "transmitter",
    p.BIND_RECEIVER: "receiver",
    p.BIND_TRANSCEIVER: "transceiver",
}
BOUND: Final = frozenset({State.BOUND_TX, State.BOUND_RX, State.BOUND_TRX})
# States in which the ESME still holds a bind: the timers run, enquire_link and unbind
# are answered.
HOLDS_BIND: Final = BOUND | {State.UNBINDING}
# Requests carrying messages from the ESME (section 2.3: transmitter or transceiver).
TRANSMIT_REQUESTS: Final = frozenset(
    {p.SUBMIT_SM, p.SUBMIT_MULTI, p.DATA_SM, p.QUERY_SM, p.CANCEL_SM, p.REPLACE_SM}
)
CAN_TRANSMIT: Final = frozenset({State.BOUND_TX, State.BOUND_TRX})
CAN_RECEIVE: Final = frozenset({State.BOUND_RX, State.BOUND_TRX})

TimerAction = Literal["enquire_link", "close"]


class SessionTimers(msgspec.Struct, frozen=True, kw_only=True):
    """Seconds; 0 turns a timer off."""

    session_init_s: float = 10.0
    enquire_link_s: float = 30.0
    response_s: float = 10.0
    inactivity_s: float = 120.0


class Session:
    """Feed it what happens (`received`, `bound`, `probe_sent`...) with the time; ask
    `check_request` before serving a request and `due` when a timer may have fired."""

    def __init__(self, timers: SessionTimers, now: float) -> None:
        self.timers = timers
        self.state = State.OPEN
        self.system_id: str | None = None
        self.close_reason: str | None = None
        self._opened_at = now
        self._last_received = now
        self._probe_sequence: int | None = None
        self._probe_sent_at = 0.0
        self._unbind_sequence: int | None = None

    @property
    def bound(self) -> bool:
        return self.state in BOUND

    @property
    def unbinding(self) -> bool:
        return self.state is State.UNBINDING

    @property
    def can_receive(self) -> bool:
        return self.state in CAN_RECEIVE

    def check_request(self, command_id: int) -> int:
        """ESME_ROK if the ESME may send this request now, else the status to answer."""
        state = self.state
        if command_id in BIND_STATES:
            return p.ESME_ROK if state is State.OPEN else p.ESME_RALYBND
        if command_id == p.ENQUIRE_LINK:
            return p.ESME_ROK
        if state not in HOLDS_BIND:
            return p.ESME_RINVBNDSTS
        if command_id == p.UNBIND:
            return p.ESME_ROK
        if state not in BOUND or (command_id in TRANSMIT_REQUESTS and state not in CAN_TRANSMIT):
            return p.ESME_RINVBNDSTS
        return p.ESME_ROK

    def received(self, now: float) -> None:
        """Any PDU arrived: the peer is alive."""
        self._last_received = max(self._last_received, now)

    def bind(self, command_id: int, system_id: str) -> None:
        if self.state is not State.OPEN:
            raise ValueError(f"cannot bind in state {self.state.value}")
        self.state = BIND_STATES[command_id]
        self.system_id = system_id

    def unbind_received(self) -> None:
        """The ESME unbinds: no new work; its unbind_resp follows its submit_sm_resp."""
        if self.state in BOUND:
            self.state = State.UNBINDING

    def unbind_sent(self, sequence_number: int) -> None:
        """The server unbinds (it is stopping); `unbind_answered` ends the session."""
        if self.state in BOUND:
            self.state = State.UNBINDING
            self._unbind_sequence = sequence_number

    def unbind_answered(self, sequence_number: int) -> bool:
        """An unbind_resp arrived; True when it answers the server's unbind."""
        if self.state is State.UNBINDING and sequence_number == self._unbind_sequence:
            self.close("unbind answered")
            return True
        return False

    def close(self, reason: str) -> None:
        if self.state is not State.CLOSED:
            self.state = State.CLOSED
            self.close_reason = reason

    def probe_sent(self, sequence_number: int, now: float) -> None:
        self._probe_sequence = sequence_number
        self._probe_sent_at = now

    def probe_answered(self, sequence_number: int) -> None:
        if sequence_number == self._probe_sequence:
            self._probe_sequence = None

    def due(self, now: float) -> TimerAction | None:
        """What a timer asks for at `now`: close the session, probe the peer, or nothing.
        On "close", `close_reason` says which timer."""
        timers = self.timers
        if self.state is State.CLOSED:
            return None
        if self.state is State.OPEN:
            if timers.session_init_s and now - self._opened_at >= timers.session_init_s:
                self.close("session_init timer: no bind in time")
                return "close"
            return None
        if timers.inactivity_s and now - self._last_received >= timers.inactivity_s:
            self.close("inactivity timer: the peer sent nothing")
            return "close"
        if self._probe_sequence is not None:
            if timers.response_s and now - self._probe_sent_at >= timers.response_s:
                self.close("response timer: enquire_link went unanswered")
                return "close"
            return None
        if timers.enquire_link_s and now - self._last_received >= timers.enquire_link_s:
            return "enquire_link"
        return None

    def next_deadline(self) -> float | None:
        """The earliest time `due` may answer something; None when no timer runs."""
        timers = self.timers
        if self.state is State.CLOSED:
            return None
        if self.state is State.OPEN:
            return self._opened_at + timers.session_init_s if timers.session_init_s else None
        deadlines: list[float] = []
        if timers.inactivity_s:
            deadlines.append(self._last_received + timers.inactivity_s)
        if self._probe_sequence is not None:
            if timers.response_s:
                deadlines.append(self._probe_sent_at + timers.response_s)
        elif timers.enquire_link_s:
            deadlines.append(self._last_received + timers.enquire_link_s)
        return min(deadlines, default=None)
