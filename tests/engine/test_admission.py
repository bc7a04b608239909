"""engine.admission: every rule refuses with a sentence naming the rule and the bridge; a
route narrows to the bridges that take the message, the first of them its primary."""

from __future__ import annotations

import msgspec
import pytest

from bridges.base import Limits
from bridges.registry import DRIVER_LIMITS
from engine.admission import (
    Admitter,
    Asked,
    FlashUnsupported,
    Refusal,
    SenderCharacter,
    SenderMissing,
    SenderPlus,
    SenderTooLong,
    TextTooLong,
    ValidityTooLong,
    admit,
    check,
    check_sender,
    describe_refusals,
    refusal_kind,
    takes_message,
)
from engine.models import Encoding, Message
from engine.segment import segment_text

BRIDGES = ("dsc", "routemobile", "bsg", "smsclub")
LIMITS: dict[str, Limits] = {name: DRIVER_LIMITS[name]({}) for name in BRIDGES}
SENDERS: dict[str, str | None] = dict.fromkeys(BRIDGES, "SEPTET")


def asked(
    text: str = "Hello",
    *,
    sender: str | None = None,
    flash: bool = False,
    validity_s: int | None = None,
) -> Asked:
    segmentation = segment_text(text)
    return Asked(
        sender=sender,
        encoding=segmentation.encoding,
        units=segmentation.units,
        characters=len(text),
        flash=flash,
        validity_s=validity_s,
    )


def refusal_on(bridge: str, message: Asked) -> Refusal | None:
    if message.sender is not None:
        return check(bridge, LIMITS[bridge], message, message.sender, "from")
    return check(bridge, LIMITS[bridge], message, SENDERS[bridge], "default_sender")


# ── every rule: the value, and the sentence naming the rule and the bridge ──────────


@pytest.mark.parametrize(
    ("bridge", "message", "refusal", "sentence"),
    [
        (
            "bsg",
            asked(sender="VERYLONGSENDER1"),
            SenderTooLong("bsg", "VERYLONGSENDER1", "from", False, 15, 11),
            "from 'VERYLONGSENDER1' is 15 characters; bsg takes at most 11 alphanumeric",
        ),
        (
            "routemobile",
            asked(sender="VERYLONGSEND"),
            SenderTooLong("routemobile", "VERYLONGSEND", "from", False, 12, 11),
            "from 'VERYLONGSEND' is 12 characters; routemobile takes at most 11 alphanumeric",
        ),
        (
            "smsclub",
            asked(sender="VERYLONGSEND"),
            SenderTooLong("smsclub", "VERYLONGSEND", "from", False, 12, 11),
            "from 'VERYLONGSEND' is 12 characters; smsclub takes at most 11 alphanumeric",
        ),
        (
            "dsc",
            asked(sender="VERYLONGSEND"),
            SenderTooLong("dsc", "VERYLONGSEND", "from", False, 12, 11),
            "from 'VERYLONGSEND' is 12 characters; dsc takes at most 11 alphanumeric",
        ),
        (
            "bsg",
            asked(sender="123456789012345"),
            SenderTooLong("bsg", "123456789012345", "from", True, 15, 14),
            "from '123456789012345' is 15 digits; bsg takes at most 14 in a numeric sender",
        ),
        (
            "routemobile",
            asked(sender="+1234567890123456789"),
            SenderTooLong("routemobile", "+1234567890123456789", "from", True, 19, 18),
            "from '+1234567890123456789' is 19 digits; "
            "routemobile takes at most 18 in a numeric sender",
        ),
        (
            "bsg",
            asked(sender="+447700900123"),
            SenderPlus("bsg", "+447700900123", "from"),
            "from '+447700900123' starts with '+'; bsg takes a numeric sender as digits only",
        ),
        (
            "smsclub",
            asked(sender="+38050123"),
            SenderPlus("smsclub", "+38050123", "from"),
            "from '+38050123' starts with '+'; smsclub takes a numeric sender as digits only",
        ),
        (
            "bsg",
            asked(sender="Shop#1"),
            SenderCharacter("bsg", "Shop#1", "from", "#", LIMITS["bsg"].sender_characters),
            "from 'Shop#1' has '#'; bsg takes only letters, digits, space and & - . _ in a sender",
        ),
        (
            "routemobile",
            asked(sender="Grüße"),
            SenderCharacter(
                "routemobile", "Grüße", "from", "ü", LIMITS["routemobile"].sender_characters
            ),
            "from 'Grüße' has 'ü'; routemobile takes only letters, digits, space and "
            "! \" # $ % & ' ( ) * + , - . / : ; < = > ? @ _ in a sender",
        ),
        (
            "bsg",
            asked("x" * 766),
            TextTooLong("bsg", "GSM-7", 766, 765, False),
            "text is 766 GSM-7 characters; bsg takes at most 765",
        ),
        (
            "bsg",
            asked("€" * 383),
            TextTooLong("bsg", "GSM-7", 766, 765, True),
            "text is 766 GSM-7 characters (an extension character such as € counts 2); "
            "bsg takes at most 765",
        ),
        (
            "bsg",
            asked("ж" * 356),
            TextTooLong("bsg", "UCS-2", 356, 355, False),
            "text is 356 UCS-2 characters; bsg takes at most 355",
        ),
        (
            "bsg",
            asked("😀" * 178),
            TextTooLong("bsg", "UCS-2", 356, 355, True),
            "text is 356 UCS-2 characters (a character outside the BMP, such as an emoji, "
            "counts 2); bsg takes at most 355",
        ),
        (
            "dsc",
            asked(flash=True),
            FlashUnsupported("dsc"),
            "flash is true; dsc sends no flash messages",
        ),
        (
            "bsg",
            asked(flash=True),
            FlashUnsupported("bsg"),
            "flash is true; bsg sends no flash messages",
        ),
        (
            "smsclub",
            asked(flash=True),
            FlashUnsupported("smsclub"),
            "flash is true; smsclub sends no flash messages",
        ),
        (
            "bsg",
            asked(validity_s=72 * 3600 + 1),
            ValidityTooLong("bsg", 72 * 3600 + 1, 72 * 3600),
            "validity_s is 259201; bsg keeps a message at most 259200 s (72 hours)",
        ),
    ],
)
def test_each_rule_refuses_with_a_sentence_naming_it_and_the_bridge(
    bridge: str, message: Asked, refusal: Refusal, sentence: str
) -> None:
    assert refusal_on(bridge, message) == refusal
    assert describe_refusals([refusal]) == sentence


def test_a_missing_sender_is_refused_where_the_provider_needs_one() -> None:
    no_sender = asked()
    assert check("smsclub", LIMITS["smsclub"], no_sender, None, "default_sender") == (
        SenderMissing("smsclub")
    )
    assert describe_refusals([SenderMissing("smsclub")]) == (
        "the line has no from; smsclub needs a sender and has no default_sender"
    )
    for bridge in ("routemobile", "bsg"):
        assert check(bridge, LIMITS[bridge], no_sender, None, "default_sender") == (
            SenderMissing(bridge)
        )
    assert check("dsc", LIMITS["dsc"], no_sender, None, "default_sender") is None


@pytest.mark.parametrize(
    ("bridge", "message"),
    [
        ("bsg", asked(sender="ELEVENCHARS")),
        ("bsg", asked(sender="12345678901234")),
        ("bsg", asked(sender="MyShop_1.-&")),
        ("bsg", asked("x" * 765)),
        ("bsg", asked("ж" * 355)),
        ("bsg", asked("€" * 382)),
        ("bsg", asked(validity_s=72 * 3600)),
        ("routemobile", asked(sender="+123456789012345678")),
        ("routemobile", asked(sender="123456789012345678")),
        ("routemobile", asked(flash=True)),
        ("routemobile", asked("x" * 1600, validity_s=7 * 24 * 3600)),
        ("smsclub", asked(sender="VashZakaz")),
        ("smsclub", asked(sender="38050123456")),
        ("dsc", asked(sender="+250788123456")),
        ("dsc", asked("x" * 1600, validity_s=7 * 24 * 3600)),
    ],
)
def test_what_each_provider_takes_is_admitted(bridge: str, message: Asked) -> None:
    assert refusal_on(bridge, message) is None


@pytest.mark.parametrize(
    ("refusal", "kind"),
    [
        (SenderMissing("bsg"), "sender"),
        (SenderPlus("bsg", "+1", "from"), "sender"),
        (SenderCharacter("bsg", "#", "from", "#", frozenset("A")), "sender"),
        (SenderTooLong("bsg", "x" * 12, "from", False, 12, 11), "sender"),
        (TextTooLong("bsg", "GSM-7", 766, 765, False), "text"),
        (FlashUnsupported("bsg"), "flash"),
        (ValidityTooLong("bsg", 2, 1), "validity"),
    ],
)
def test_each_refusal_has_its_kind(refusal: Refusal, kind: str) -> None:
    assert refusal_kind(refusal) == kind


def test_a_default_sender_is_named_as_such() -> None:
    refusal = check_sender("bsg", LIMITS["bsg"], "VERYLONGSENDER1", "default_sender")
    assert describe_refusals([refusal] if refusal else []) == (
        "default_sender 'VERYLONGSENDER1' is 15 characters; bsg takes at most 11 alphanumeric"
    )


# ── a route narrowed to the bridges that take the message ────────────────────────


def test_flash_goes_to_the_first_bridge_of_the_route_that_sends_flash() -> None:
    assert admit(("dsc", "routemobile"), asked(flash=True), LIMITS, SENDERS) == ("routemobile",)
    assert admit(("routemobile", "bsg"), asked(flash=True), LIMITS, SENDERS) == ("routemobile",)


def test_flash_on_a_route_without_flash_is_refused_naming_every_bridge() -> None:
    refusals = admit(("smsclub", "bsg"), asked(flash=True), LIMITS, SENDERS)
    assert refusals == [FlashUnsupported("smsclub"), FlashUnsupported("bsg")]
    assert isinstance(refusals, list)
    assert describe_refusals(refusals) == (
        "flash is true; smsclub sends no flash messages; bsg sends no flash messages"
    )


def test_a_message_every_bridge_takes_keeps_its_whole_route() -> None:
    assert admit(("bsg", "routemobile"), asked(), LIMITS, SENDERS) == ("bsg", "routemobile")


def test_failovers_are_only_the_bridges_that_take_it() -> None:
    # A long text: routemobile takes it, bsg (765 septets) does not, whichever comes first.
    long_text = asked("x" * 800)
    assert admit(("bsg", "routemobile"), long_text, LIMITS, SENDERS) == ("routemobile",)
    assert admit(("routemobile", "bsg"), long_text, LIMITS, SENDERS) == ("routemobile",)
    # A 12-digit sender: smsclub takes at most 11, bsg 14.
    numeric = asked(sender="380501234567")
    assert admit(("smsclub", "bsg"), numeric, LIMITS, SENDERS) == ("bsg",)
    # A validity over 72 hours: dsc and routemobile have no validity field, bsg keeps 72 h.
    four_days = asked(validity_s=96 * 3600)
    assert admit(("bsg", "dsc", "routemobile"), four_days, LIMITS, SENDERS) == (
        "dsc",
        "routemobile",
    )


def test_the_same_refusal_of_several_bridges_is_said_once() -> None:
    refusals = admit(("bsg", "routemobile"), asked(sender="VERYLONGSENDER1"), LIMITS, SENDERS)
    assert isinstance(refusals, list)
    assert describe_refusals(refusals) == (
        "from 'VERYLONGSENDER1' is 15 characters; bsg takes at most 11 alphanumeric; "
        "routemobile takes at most 11 alphanumeric"
    )


def test_different_refusals_each_say_what_the_message_has() -> None:
    refusals = admit(("dsc", "bsg"), asked("x" * 800, flash=True), LIMITS, SENDERS)
    assert isinstance(refusals, list)
    assert describe_refusals(refusals) == (
        "flash is true; dsc sends no flash messages; "
        "text is 800 GSM-7 characters; bsg takes at most 765"
    )


def test_without_from_each_bridge_is_tried_with_its_own_default_and_failovers_with_the_chosen() -> (
    None
):
    senders: dict[str, str | None] = {"bsg": "+447700900123", "routemobile": "+447700900123"}
    # bsg refuses its own default (a '+'); routemobile takes its own; the message then
    # carries routemobile's default wherever it goes.
    assert admit(("bsg", "routemobile"), asked(), LIMITS, senders) == ("routemobile",)
    senders = {"routemobile": "+447700900123", "bsg": "SEPTET"}
    # Chosen routemobile, whose default goes to bsg too on failover: bsg is left out.
    assert admit(("routemobile", "bsg"), asked(), LIMITS, senders) == ("routemobile",)


def test_a_bridge_without_limits_takes_anything() -> None:
    assert admit(("other",), asked("x" * 5000, flash=True), LIMITS, {}) == ("other",)


def test_an_empty_default_sender_counts_as_none() -> None:
    refusals = admit(("smsclub",), asked(), LIMITS, {"smsclub": ""})
    assert refusals == [SenderMissing("smsclub")]


@pytest.mark.parametrize("encoding", ["GSM-7", "UCS-2"])
def test_a_provider_without_a_text_limit_takes_any_length(encoding: Encoding) -> None:
    message = Asked(sender=None, encoding=encoding, units=10_000, characters=10_000)
    assert check("routemobile", LIMITS["routemobile"], message, "ACME", "from") is None


ACCEPTED_AT = 1_700_000_000.0


def journaled(**changes: object) -> Message:
    message = Message(
        msg_id="1",
        reference="r1",
        origin="tcp:1",
        client_ref=None,
        to="+447700900123",
        sender="SEPTET",
        text="Hello",
        encoding="GSM-7",
        segments=1,
        cost=0.0,
        currency="EUR",
        bridges=("routemobile", "bsg"),
        accepted_at=ACCEPTED_AT,
        due_at=ACCEPTED_AT,
    )
    return msgspec.structs.replace(message, **changes)


@pytest.mark.parametrize(
    ("changes", "hours_later", "bsg_takes_it"),
    [
        ({}, 0, True),
        ({"flash": True}, 0, False),
        ({"sender": "+447700900123"}, 0, False),
        ({"sender": None}, 0, False),  # bsg needs a sender
        ({"text": "€" * 383}, 0, False),
        ({"text": "€" * 382}, 0, True),
        ({"expires_at": ACCEPTED_AT + 80 * 3600}, 0, False),
        # Eight hours gone by the failover: 72 h left, which bsg keeps.
        ({"expires_at": ACCEPTED_AT + 80 * 3600}, 8, True),
    ],
)
def test_a_journaled_message_is_checked_as_it_would_be_sent_on_failover(
    changes: dict[str, object], hours_later: int, bsg_takes_it: bool
) -> None:
    message = journaled(**changes)
    now = ACCEPTED_AT + hours_later * 3600
    assert takes_message(LIMITS, message, "bsg", now) is bsg_takes_it
    assert takes_message(LIMITS, message, "unlimited", now)


# ── Admitter: admit, remembered ─────────────────────────────────────────────────


def test_the_admitter_answers_as_admit_does() -> None:
    admitter = Admitter(LIMITS, SENDERS)
    for route in (("bsg", "routemobile"), ("smsclub", "bsg"), ("dsc", "routemobile")):
        for text in ("Hello", "x" * 765, "x" * 766, "ж" * 356, "€" * 383):
            for sender in (None, "VERYLONGSEND", "380501234567", "+447700900123"):
                for flash in (False, True):
                    message = asked(text, sender=sender, flash=flash, validity_s=80 * 3600)
                    remembered = admitter.admit(
                        route,
                        sender=message.sender,
                        encoding=message.encoding,
                        units=message.units,
                        characters=message.characters,
                        flash=message.flash,
                        validity_s=message.validity_s,
                    )
                    assert remembered == admit(route, message, LIMITS, SENDERS)


def test_the_admitter_tells_long_texts_apart_and_short_ones_not() -> None:
    admitter = Admitter(LIMITS, SENDERS)
    route = ("bsg",)

    def text_of(units: int, characters: int) -> tuple[str, ...] | list[Refusal]:
        return admitter.admit(
            route, sender="ACME", encoding="GSM-7", units=units, characters=characters
        )

    assert text_of(5, 5) == text_of(765, 765) == ("bsg",)
    assert len(admitter._answers) == 1  # a text no limit reaches: one answer for all
    assert text_of(766, 766) == [TextTooLong("bsg", "GSM-7", 766, 765, False)]
    assert text_of(766, 383) == [TextTooLong("bsg", "GSM-7", 766, 765, True)]
    assert text_of(800, 800) == [TextTooLong("bsg", "GSM-7", 800, 765, False)]


def test_the_admitter_forgets_when_full() -> None:
    admitter = Admitter(LIMITS, SENDERS)
    for number in range(Admitter.MAX_ANSWERS + 10):
        admitter.admit(("bsg",), sender=f"S{number}", encoding="GSM-7", units=5, characters=5)
    assert len(admitter._answers) <= Admitter.MAX_ANSWERS
