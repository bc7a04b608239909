"""The session state machine: table 2-1 of SMPP v3.4 and the four timers, on a fake clock."""

from __future__ import annotations

import pytest

from engine.smpp import pdu as p
from engine.smpp.session import Session, SessionTimers, State

TIMERS = SessionTimers(session_init_s=10, enquire_link_s=30, response_s=5, inactivity_s=120)


@pytest.mark.parametrize(
    ("bind", "submit", "bound_state"),
    [
        (p.BIND_TRANSMITTER, p.ESME_ROK, State.BOUND_TX),
        (p.BIND_RECEIVER, p.ESME_RINVBNDSTS, State.BOUND_RX),
        (p.BIND_TRANSCEIVER, p.ESME_ROK, State.BOUND_TRX),
    ],
)
def test_requests_allowed_by_state(bind: int, submit: int, bound_state: State) -> None:
    session = Session(TIMERS, now=0)
    assert session.check_request(p.SUBMIT_SM) == p.ESME_RINVBNDSTS
    assert session.check_request(p.UNBIND) == p.ESME_RINVBNDSTS
    assert session.check_request(p.ENQUIRE_LINK) == p.ESME_ROK
    assert session.check_request(bind) == p.ESME_ROK
    session.bind(bind, "demo")
    assert session.state is bound_state
    assert session.check_request(p.SUBMIT_SM) == submit
    assert session.check_request(p.BIND_TRANSCEIVER) == p.ESME_RALYBND
    assert session.check_request(p.UNBIND) == p.ESME_ROK
    assert session.can_receive == (bound_state is not State.BOUND_TX)


def test_session_init_timer_closes_an_unbound_connection() -> None:
    session = Session(TIMERS, now=100)
    assert session.next_deadline() == 110
    assert session.due(109.9) is None
    assert session.due(110) == "close"
    assert session.state is State.CLOSED
    assert session.close_reason is not None
    assert "session_init" in session.close_reason


def test_enquire_link_probe_and_response_timer() -> None:
    session = Session(TIMERS, now=0)
    session.bind(p.BIND_TRANSCEIVER, "demo")
    session.received(20)
    assert session.next_deadline() == 50
    assert session.due(49) is None
    assert session.due(50) == "enquire_link"
    session.probe_sent(7, 50)
    assert session.next_deadline() == 55
    session.probe_answered(6)  # not ours
    assert session.due(55) == "close"
    assert session.close_reason is not None
    assert "response" in session.close_reason


def test_answered_probe_keeps_the_session() -> None:
    session = Session(TIMERS, now=0)
    session.bind(p.BIND_RECEIVER, "demo")
    assert session.due(30) == "enquire_link"
    session.probe_sent(1, 30)
    session.received(31)
    session.probe_answered(1)
    assert session.due(35) is None
    assert session.next_deadline() == 61


def test_inactivity_timer() -> None:
    timers = SessionTimers(session_init_s=10, enquire_link_s=0, response_s=0, inactivity_s=60)
    session = Session(timers, now=0)
    session.bind(p.BIND_TRANSMITTER, "demo")
    session.received(10)
    assert session.next_deadline() == 70
    assert session.due(69) is None
    assert session.due(70) == "close"
    assert session.next_deadline() is None


def test_bind_twice_is_an_error() -> None:
    session = Session(TIMERS, now=0)
    session.bind(p.BIND_TRANSMITTER, "demo")
    with pytest.raises(ValueError, match="cannot bind"):
        session.bind(p.BIND_RECEIVER, "demo")


def test_the_esmes_unbind_moves_to_unbinding_where_no_message_is_taken() -> None:
    session = Session(TIMERS, now=0)
    session.bind(p.BIND_TRANSCEIVER, "demo")
    session.unbind_received()
    assert session.state is State.UNBINDING
    assert session.unbinding
    assert not session.bound
    assert not session.can_receive  # no receipt once unbinding starts
    assert session.check_request(p.SUBMIT_SM) == p.ESME_RINVBNDSTS
    assert session.check_request(p.BIND_TRANSCEIVER) == p.ESME_RALYBND
    assert session.check_request(p.ENQUIRE_LINK) == p.ESME_ROK
    assert session.check_request(p.UNBIND) == p.ESME_ROK


def test_the_servers_unbind_is_answered_by_its_own_unbind_resp() -> None:
    session = Session(TIMERS, now=0)
    session.bind(p.BIND_RECEIVER, "demo")
    session.unbind_sent(9)
    assert session.unbinding
    assert not session.unbind_answered(8)  # not the answer to our unbind
    assert session.unbinding
    assert session.unbind_answered(9)
    assert session.state is State.CLOSED
    assert session.close_reason == "unbind answered"


def test_unbind_before_bind_changes_nothing() -> None:
    session = Session(TIMERS, now=0)
    session.unbind_received()
    session.unbind_sent(1)
    assert session.state is State.OPEN
    assert not session.unbind_answered(1)


def test_timers_still_run_while_unbinding() -> None:
    session = Session(TIMERS, now=0)
    session.bind(p.BIND_TRANSMITTER, "demo")
    session.unbind_sent(1)
    assert session.next_deadline() == 30
    assert session.due(120) == "close"
    assert session.close_reason is not None
    assert "inactivity" in session.close_reason
