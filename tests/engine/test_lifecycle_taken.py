"""engine.lifecycle.on_taken: a request the provider took whole, as on_reply would have it.

Each case builds a request's inflight messages, asks `on_taken` and `on_reply` (message by
message) about the same replies, and checks that the one answers as the many do: the same
journal changes (state changes first, then the feed's), events, submits and charges. The
requests it must leave to `on_reply` answer None.
"""

from __future__ import annotations

import pytest

from bridges.base import Idempotency, Outcome, Rejected, Submitted
from engine import lifecycle
from engine.feed import AppendEvents
from engine.journal import Change
from engine.lifecycle import IllegalTransition, State, Step
from engine.models import Message
from tests.engine.test_lifecycle import EVERY, context, inflight, submitted


def request() -> list[Message]:
    """Five messages as one request carries them: with and without a report, one that
    failed over to the second bridge (priced there), one without a client id."""
    return [
        inflight(msg_id="1", dlr=False),
        inflight(msg_id="2", dlr=True),
        inflight(msg_id="3", dlr=False, bridge_index=1, bridges=("bsg", "smsclub")),
        inflight(msg_id="4", dlr=True, client_ref=None),
        inflight(msg_id="5", dlr=True, expires_at=1_000_600.0),
    ]


REPLIES: list[Outcome] = [
    Submitted("P-1", 0.03, "EUR"),
    Submitted("P-2"),
    Submitted("P-3", 0.01, None),
    Submitted("P-4", 0.04, "USD"),
    Submitted("P-5"),
]


def one_by_one(
    messages: list[Message], replies: list[Outcome], ctx: lifecycle.Context
) -> list[Step]:
    return [lifecycle.on_reply(m, r, ctx) for m, r in zip(messages, replies, strict=True)]


@pytest.mark.parametrize("idempotency", EVERY)
def test_a_request_taken_whole_is_what_its_steps_are(idempotency: Idempotency) -> None:
    ctx = context(idempotency)
    steps = one_by_one(request(), REPLIES, ctx)
    taken = lifecycle.on_taken(request(), REPLIES, ctx)

    assert taken is not None
    assert all(step.state in lifecycle.TAKEN and step.circuit == "success" for step in steps)
    changes: list[Change] = [c for s in steps for c in s.changes]
    state_changes = [c for c in changes if not isinstance(c, AppendEvents)]
    feed = [c for c in changes if isinstance(c, AppendEvents)]
    assert taken.changes == state_changes + feed
    assert taken.events == [event for step in steps for event in step.events]
    assert [(m.msg_id, pid) for m, pid in taken.submitted] == [
        ("1", "P-1"),
        ("2", "P-2"),
        ("3", "P-3"),
        ("4", "P-4"),
        ("5", "P-5"),
    ]
    assert taken.charges == [step.charge for step in steps if step.charge is not None]
    assert len(taken.charges) == 2  # a cost without its currency is no charge


def test_a_request_with_any_other_reply_is_left_to_on_reply() -> None:
    replies = [*REPLIES[:4], Rejected("21", "bad number")]
    assert lifecycle.on_taken(request(), replies, context("none")) is None


def test_a_report_that_could_never_be_matched_is_left_to_on_reply() -> None:
    """No id, a report wanted, and no way to ask by reference: on_reply ends it UNKNOWN."""
    replies = [*REPLIES[:4], Submitted(None)]
    assert lifecycle.on_taken(request(), replies, context("none")) is None
    assert lifecycle.on_reply(request()[4], Submitted(None), context("none")).state is (
        State.UNKNOWN
    )
    # By reference it can be asked about: taken like the others.
    taken = lifecycle.on_taken(request(), replies, context("reference"))
    assert taken is not None
    assert taken.submitted[4][1] is None


def test_a_message_no_longer_inflight_is_refused_as_on_reply_refuses_it() -> None:
    messages = [*request()[:4], submitted(msg_id="5")]
    assert lifecycle.on_taken(messages, REPLIES, context("none")) is None
    with pytest.raises(IllegalTransition):
        lifecycle.on_reply(messages[4], REPLIES[4], context("none"))


def test_a_messages_account_webhook_and_kannel_target_reach_its_feed_change() -> None:
    """The feed's change carries what the message names: its account (the default one when
    it has none), its callback URL and, sent with Kannel's dlr-url, the reports' target."""
    messages = [
        inflight(msg_id="1", account="acme", callback_url="https://hooks.example/x"),
        inflight(msg_id="2", account="", dlr_url="http://kannel.example/dlr?s=%d", dlr_mask=3),
    ]
    replies: list[Outcome] = [Submitted("P-1"), Submitted("P-2")]
    ctx = context("none")
    taken = lifecycle.on_taken(messages, replies, ctx)

    assert taken is not None
    steps = one_by_one(messages, replies, ctx)
    feed = [c for c in taken.changes if isinstance(c, AppendEvents)]
    assert feed == [c for s in steps for c in s.changes if isinstance(c, AppendEvents)]
    assert [(c.account, c.callback_url) for c in feed] == [
        ("acme", "https://hooks.example/x"),
        ("default", None),
    ]
    assert feed[0].kannel is None
    assert feed[1].kannel is not None
    assert feed[1].kannel.mask == 3
