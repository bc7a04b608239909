"""Each driver's Limits, as docs/providers.md and the seeds state them, and the simulators
agreeing on their own: what a driver's limits admit, its simulator takes; what they
refuse, the simulator refuses with the provider's code (BSG 25/26/28, Route Mobile 1707,
SMS Club 400 on src_addr)."""

from __future__ import annotations

import msgspec
import pytest

from bridges.base import BridgeDriver, BridgeSettings, Limits, Rejected, Submitted
from bridges.bsg import BsgDriver
from bridges.registry import DRIVER_LIMITS, build_driver
from bridges.sim.core import SimulatorConfig
from engine.admission import Asked, check, check_sender
from engine.segment import segment_text
from tests.bridges.roundtrip_harness import outbound, round_trip

CREDENTIALS = {
    "dsc": {"api_key": "demo", "username": "demo", "password": "demo"},
    "routemobile": {"username": "demo", "password": "demo"},
    "bsg": {"api_key": "test_demo"},
    "smsclub": {"token": "demo"},
}
TO = {
    "dsc": "+250788123456",
    "routemobile": "+447700900001",
    "bsg": "+380501234567",
    "smsclub": "+380989361131",
}


def driver(name: str, **options: str) -> BridgeDriver:
    settings = BridgeSettings(base_url="unused", credentials=CREDENTIALS[name], options=options)
    return build_driver(name, settings)


# (sender required, alphanumeric max, numeric max, '+' allowed, GSM-7 max, UCS-2 max,
#  flash, validity max in hours)
TABLE: dict[str, tuple[bool, int, int, bool, int | None, int | None, bool, int | None]] = {
    "dsc": (False, 11, 15, True, None, None, False, None),
    "routemobile": (True, 11, 18, True, None, None, True, None),
    "bsg": (True, 11, 14, False, 765, 355, False, 72),
    "smsclub": (True, 11, 11, False, None, None, False, None),
}


@pytest.mark.parametrize("name", sorted(TABLE))
def test_each_driver_states_its_providers_limits(name: str) -> None:
    limits = driver(name).limits
    hours = None if limits.max_validity_s is None else limits.max_validity_s / 3600
    assert (
        limits.sender_required,
        limits.alphanumeric_sender_max,
        limits.numeric_sender_max,
        limits.numeric_sender_plus,
        limits.gsm7_max,
        limits.ucs2_max,
        limits.flash,
        hours,
    ) == TABLE[name]
    # The registry knows them without building the driver (engine.config's check).
    assert DRIVER_LIMITS[name]({}) == limits


def test_bsg_options_raise_its_limits_to_the_newer_documents_values() -> None:
    raised = driver("bsg", max_numeric_originator="15", max_validity_hours="87840").limits
    assert raised.numeric_sender_max == 15
    assert raised.max_validity_s == 87_840 * 3600


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("max_numeric_originator", "13"),
        ("max_numeric_originator", "16"),
        ("max_validity_hours", "71"),
        ("max_validity_hours", "87841"),
        ("max_validity_hours", "lots"),
    ],
)
def test_bsg_options_outside_the_documents_are_refused(option: str, value: str) -> None:
    with pytest.raises(ValueError, match=option):
        driver("bsg", **{option: value})


def test_bsg_sends_the_raised_validity_instead_of_cutting_it() -> None:
    raised = BsgDriver(
        BridgeSettings(
            base_url="unused",
            credentials=CREDENTIALS["bsg"],
            options={"max_validity_hours": "100"},
        )
    )
    long_lived = msgspec.structs.replace(outbound(1, TO["bsg"]), validity_s=100 * 3600)
    assert b'"validity":100' in raised.build_send([long_lived]).body
    assert b'"validity":72' in driver("bsg").build_send([long_lived]).body


# ── the simulators agree, on their own ────────────────────────────────────────


SENDERS = [
    "SEPTET",
    "ELEVENCHARS",
    "VERYLONGSEND",  # 12 alphanumeric: every provider refuses it
    "VERYLONGSENDER1",
    "12345678901",
    "380501234567",
    "12345678901234",
    "123456789012345678",
    "1234567890123456789",
    "+447700900123",
    "Shop#1",
]


def _admitted(limits: Limits, sender: str) -> bool:
    return check_sender("b", limits, sender, "from") is None


@pytest.mark.anyio
@pytest.mark.parametrize("name", ["routemobile", "bsg", "smsclub"])
async def test_a_sender_the_limits_admit_the_simulator_takes_and_the_12_character_one_it_refuses(
    name: str,
) -> None:
    bridge = driver(name)
    refused_code = {"routemobile": "1707", "bsg": "25", "smsclub": "400"}[name]
    quiet = SimulatorConfig(seed=7, smsclub_rate_limit=None, smsclub_duplicate_window_s=0.0)
    async with round_trip(name, quiet) as trip:
        for number, sender in enumerate(SENDERS):
            (outcome,) = await trip.send(bridge, [outbound(number, TO[name], sender=sender)])
            if _admitted(bridge.limits, sender):
                assert isinstance(outcome, Submitted), (sender, outcome)
            elif sender in ("VERYLONGSEND", "VERYLONGSENDER1"):
                assert isinstance(outcome, Rejected), (sender, outcome)
                assert outcome.code == refused_code
    assert not _admitted(bridge.limits, "VERYLONGSEND")


@pytest.mark.anyio
async def test_bsg_refuses_a_plus_sender_with_25_and_the_limits_refuse_it_first() -> None:
    bridge = driver("bsg")
    assert not _admitted(bridge.limits, "+447700900123")
    async with round_trip("bsg") as trip:
        (outcome,) = await trip.send(bridge, [outbound(1, TO["bsg"], sender="+447700900123")])
    assert isinstance(outcome, Rejected)
    assert outcome.code == "25"


def _asked(text: str) -> Asked:
    segmentation = segment_text(text)
    return Asked(
        sender=None,
        encoding=segmentation.encoding,
        units=segmentation.units,
        characters=len(text),
    )


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("text", "fits"),
    [
        ("x" * 765, True),
        ("x" * 766, False),
        ("€" * 382, True),
        ("€" * 383, False),
        ("ж" * 355, True),
        ("ж" * 356, False),
    ],
)
async def test_bsg_text_limits_agree_with_its_simulator(text: str, fits: bool) -> None:
    bridge = driver("bsg")
    admitted = check("bsg", bridge.limits, _asked(text), "SEPTET", "from") is None
    assert admitted is fits
    encoding = _asked(text).encoding
    async with round_trip("bsg") as trip:
        (outcome,) = await trip.send(bridge, [outbound(1, TO["bsg"], text, encoding=encoding)])
    if fits:
        assert isinstance(outcome, Submitted)
    else:
        assert isinstance(outcome, Rejected)
        assert outcome.code == "26"


@pytest.mark.anyio
async def test_bsg_validity_over_72_hours_needs_the_option_on_both_sides() -> None:
    raised = driver("bsg", max_validity_hours="100")
    long_lived = msgspec.structs.replace(outbound(1, TO["bsg"]), validity_s=100 * 3600)
    async with round_trip("bsg") as trip:
        (outcome,) = await trip.send(raised, [long_lived])
        assert isinstance(outcome, Rejected)
        assert outcome.code == "28"  # a BSG that keeps the seed's 1–72 refuses it
        trip.configure(bsg_max_validity_hours=100)
        (outcome,) = await trip.send(raised, [long_lived])
        assert isinstance(outcome, Submitted)


@pytest.mark.anyio
async def test_routemobile_sends_flash_and_the_simulator_takes_each_flash_type() -> None:
    bridge = driver("routemobile")
    assert bridge.limits.flash
    async with round_trip("routemobile") as trip:
        gsm = outbound(1, TO["routemobile"], flash=True)
        unicode = outbound(2, TO["routemobile"], "Привет", encoding="UCS-2", flash=True)
        for message, flash_type in ((gsm, "1"), (unicode, "6")):
            assert dict(bridge.build_send([message]).query)["type"] == flash_type
            (outcome,) = await trip.send(bridge, [message])
            assert isinstance(outcome, Submitted)
        latin = driver("routemobile", charset="latin1")
        message = outbound(3, TO["routemobile"], "Grüße", flash=True)
        assert dict(latin.build_send([message]).query)["type"] == "7"
        (outcome,) = await trip.send(latin, [message])
        assert isinstance(outcome, Submitted)
