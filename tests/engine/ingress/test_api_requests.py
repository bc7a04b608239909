"""engine.ingress.api_requests.decode_submissions: a batch of plain messages is read in one
pass and the same as read message by message; anything else still gets the per-message
reading (whole floats, a bad schedule_at answered for its message) or the 400/413 sentence."""

from __future__ import annotations

import msgspec
import pytest

from engine.ingress.api_requests import ApiProblem, decode_submissions
from engine.ingress.prepare import LineError
from engine.models import Submission


def body(value: object) -> bytes:
    return msgspec.json.encode(value)


def test_a_plain_batch_is_every_message_in_order() -> None:
    subs = [Submission(to=f"+25078810000{i}", text="hi", id=f"c{i}", dlr=False) for i in range(3)]
    assert decode_submissions(body({"messages": subs}), 1000) == subs


def test_a_batch_needing_the_lenient_reading_is_read_message_by_message() -> None:
    lines = [
        {"to": "+250788100001", "text": "hi", "priority": 2.0},
        {"to": "+250788100002", "text": "hi", "schedule_at": "tomorrow", "id": "s"},
    ]
    first, second = decode_submissions(body({"messages": lines}), 1000)
    assert isinstance(first, Submission)
    assert first.priority == 2
    assert isinstance(second, LineError)
    assert (second.kind, second.client_ref) == ("schedule", "s")


@pytest.mark.parametrize(
    ("value", "status", "detail"),
    [
        ({"messages": []}, 400, "'messages' is empty"),
        ({"messages": [], "extra": 1}, 400, "a batch has only 'messages'; unknown field 'extra'"),
        (
            {"messages": [{"to": "+250788100001", "text": "hi"}] * 3},
            413,
            "the batch has 3 messages; the limit is 2",
        ),
        ({"messages": [{"to": "+250788100001"}]}, 400, "message 1: invalid message: missing"),
    ],
)
def test_what_is_not_a_batch_is_answered_with_its_sentence(
    value: object, status: int, detail: str
) -> None:
    with pytest.raises(ApiProblem) as raised:
        decode_submissions(body(value), 2)
    assert raised.value.status == status
    assert raised.value.detail.startswith(detail)
