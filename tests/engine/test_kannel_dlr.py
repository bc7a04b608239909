"""engine.kannel_dlr: which events are Kannel reports, the mask, and the URL they make."""

from __future__ import annotations

import datetime as dt
import urllib.parse

import pytest

from engine.kannel_dlr import KannelTarget, report_of, url_for
from engine.models import (
    Accepted,
    CancelledEvent,
    DeliveryReport,
    Event,
    Failed,
    RetryEvent,
    StatusEvent,
    SubmittedEvent,
)

TS = dt.datetime(2027, 1, 15, 8, 0, tzinfo=dt.UTC)
TARGET = KannelTarget(
    url="http://app/dlr?type=%d&id=%I&fid=%F&reply=%A",
    mask=31,
    to="+250788100001",
    sender="ACME",
    text="hi",
    account="demo",
    provider_id="P-1",
)


def submitted() -> SubmittedEvent:
    return SubmittedEvent(
        id=None, msg_id="7", ts=TS, provider_id="P-9", bridge="dsc", cost=1.0, currency="RWF"
    )


def report(state: str) -> DeliveryReport:
    return DeliveryReport(
        id=None, msg_id="7", ts=TS, state=state, provider_status="x", bridge="dsc"
    )


@pytest.mark.parametrize(
    ("event", "kind"),
    [
        (submitted(), 8),
        (report("DELIVRD"), 1),
        (report("UNDELIV"), 2),
        (report("EXPIRED"), 2),
        (
            StatusEvent(
                id=None, msg_id="7", ts=TS, state="ENROUTE", provider_status="q", bridge="b"
            ),
            4,
        ),
        (Failed(id=None, msg_id="7", ts=TS, error="refused", code="21", state="REJECTD"), 16),
        (Failed(id=None, msg_id="7", ts=TS, error="too late", code=None, state="EXPIRED"), 2),
    ],
)
def test_reports_and_their_kannel_types(event: Event, kind: int) -> None:
    found = report_of(event)
    assert found is not None
    assert found[0] == kind


def test_events_that_are_no_report_make_no_request() -> None:
    accepted = Accepted(
        id=None,
        msg_id="7",
        ts=TS,
        to="+1",
        encoding="GSM-7",
        segments=1,
        cost=1.0,
        currency="RWF",
        bridge="dsc",
    )
    retry = RetryEvent(id=None, msg_id="7", ts=TS, at=TS, attempt=1, reason="r", bridge="dsc")
    for event in (accepted, retry, CancelledEvent(id=None, msg_id="7", ts=TS)):
        assert report_of(event) is None
        assert url_for(TARGET, event) is None


def test_the_mask_chooses_the_reports() -> None:
    only_final = KannelTarget(
        url=TARGET.url, mask=1 | 2, to=TARGET.to, sender="ACME", text="hi", account="demo"
    )
    assert url_for(only_final, submitted()) is None
    url = url_for(only_final, report("DELIVRD"))
    assert url is not None
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
    assert query == {"type": "1", "id": "7", "reply": "stat:DELIVRD err:x"}  # %F: none known
    taken = url_for(TARGET, submitted())
    assert taken is not None
    assert dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(taken).query))["fid"] == "P-9"
