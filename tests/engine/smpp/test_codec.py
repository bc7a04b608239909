"""The PDU codec: golden bytes from SMPP v3.4, round trips under hypothesis, framing limits."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.smpp import pdu as p
from engine.smpp.codec import (
    HEADER,
    FramingError,
    PduError,
    PduReader,
    decode_pdu,
    encode_header_only,
    encode_pdu,
)

# enquire_link, sequence 1 (section 4.11.1: header only).
ENQUIRE_LINK = bytes.fromhex("00000010 00000015 00000000 00000001")
# bind_transmitter "demo"/"demo", system_type "", v3.4, TON/NPI 0, address_range "".
BIND_TRANSMITTER = bytes.fromhex(
    "0000001f 00000002 00000000 00000007 64656d6f00 64656d6f00 00 34 00 00 00"
)


def test_golden_enquire_link_and_bind() -> None:
    assert encode_pdu(p.EnquireLink(sequence_number=1)) == ENQUIRE_LINK
    assert decode_pdu(ENQUIRE_LINK) == p.EnquireLink(sequence_number=1)
    bind = p.BindTransmitter(sequence_number=7, system_id="demo", password="demo")
    assert encode_pdu(bind) == BIND_TRANSMITTER
    assert decode_pdu(BIND_TRANSMITTER) == bind


def test_error_response_is_header_only() -> None:
    resp = p.SubmitSmResp(sequence_number=3, command_status=p.ESME_RTHROTTLED, message_id="9")
    data = encode_pdu(resp)
    assert data == HEADER.pack(16, p.SUBMIT_SM_RESP, p.ESME_RTHROTTLED, 3)
    assert data == encode_header_only(p.SUBMIT_SM_RESP, p.ESME_RTHROTTLED, 3)


def test_unknown_tlv_is_skipped_and_known_ones_read() -> None:
    submit = p.SubmitSm(
        sequence_number=2,
        destination_addr="250788123456",
        optional=p.OptionalParameters(
            sar_msg_ref_num=513, sar_total_segments=3, sar_segment_seqnum=2
        ),
    )
    data = encode_pdu(submit) + bytes.fromhex("1401 0002 abcd")  # a vendor TLV
    data = HEADER.pack(len(data), p.SUBMIT_SM, 0, 2) + data[16:]
    decoded = decode_pdu(data)
    assert decoded == submit


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"\x00\x01\x01", p.ESME_RINVCMDLEN),  # ends in the middle of the fields
        (b"x" * 40, p.ESME_RINVCMDLEN),  # a C-string without its NUL
    ],
)
def test_truncated_bodies(body: bytes, status: int) -> None:
    with pytest.raises(PduError) as error:
        decode_pdu(HEADER.pack(16 + len(body), p.SUBMIT_SM, 0, 4) + body)
    assert error.value.status == status
    assert error.value.sequence_number == 4


def test_tlv_past_the_end_and_wrong_length() -> None:
    base = encode_pdu(p.SubmitSm(sequence_number=1))[16:]
    for extra, status in (
        (bytes.fromhex("0424 0010 00"), p.ESME_RINVOPTPARSTREAM),
        (bytes.fromhex("020c 0001 05"), p.ESME_RINVPARLEN),
        (bytes.fromhex("04"), p.ESME_RINVOPTPARSTREAM),
    ):
        body = base + extra
        with pytest.raises(PduError) as error:
            decode_pdu(HEADER.pack(16 + len(body), p.SUBMIT_SM, 0, 1) + body)
        assert error.value.status == status


def test_unknown_command_id() -> None:
    with pytest.raises(PduError) as error:
        decode_pdu(HEADER.pack(16, 0x0000_0777, 0, 5))
    assert error.value.status == p.ESME_RINVCMDID


def test_reader_splits_a_stream_fed_byte_by_byte() -> None:
    stream = ENQUIRE_LINK + BIND_TRANSMITTER + ENQUIRE_LINK
    reader = PduReader()
    frames = []
    for octet in stream:
        frames.extend(reader.feed(bytes((octet,))))
    assert frames == [ENQUIRE_LINK, BIND_TRANSMITTER, ENQUIRE_LINK]
    assert reader.buffered == 0


@pytest.mark.parametrize("length", [0, 15, 1_000_001])
def test_reader_refuses_lengths_out_of_bounds(length: int) -> None:
    reader = PduReader(max_command_length=1_000_000)
    with pytest.raises(FramingError) as error:
        reader.feed(HEADER.pack(length, p.SUBMIT_SM, 0, 8))
    assert error.value.status == p.ESME_RINVCMDLEN
    assert error.value.sequence_number == 8


# ── round trips ────────────────────────────────────────────────────────────────

octet = st.integers(0, 255)
sequence = st.integers(1, 0x7FFFFFFF)


def c_string(max_size: int) -> st.SearchStrategy[str]:
    return st.text(st.characters(min_codepoint=1, max_codepoint=255), max_size=max_size - 1)


optional = st.builds(
    p.OptionalParameters,
    message_payload=st.none() | st.binary(max_size=300),
    sar_msg_ref_num=st.none() | st.integers(0, 0xFFFF),
    sar_total_segments=st.none() | octet,
    sar_segment_seqnum=st.none() | octet,
    receipted_message_id=st.none() | c_string(65),
    message_state=st.none() | octet,
)


def short_message_fields(cls: type[p.SubmitSm | p.DeliverSm]) -> st.SearchStrategy[p.ShortMessage]:
    return st.builds(
        cls,
        sequence_number=sequence,
        service_type=c_string(6),
        source_addr_ton=octet,
        source_addr_npi=octet,
        source_addr=c_string(21),
        dest_addr_ton=octet,
        dest_addr_npi=octet,
        destination_addr=c_string(21),
        esm_class=octet,
        protocol_id=octet,
        priority_flag=octet,
        schedule_delivery_time=c_string(17),
        validity_period=c_string(17),
        registered_delivery=octet,
        replace_if_present_flag=octet,
        data_coding=octet,
        sm_default_msg_id=octet,
        short_message=st.binary(max_size=254),
        optional=optional,
    )


binds = st.sampled_from([p.BindTransmitter, p.BindReceiver, p.BindTransceiver]).flatmap(
    lambda cls: st.builds(
        cls,
        sequence_number=sequence,
        system_id=c_string(16),
        password=c_string(9),
        system_type=c_string(13),
        interface_version=octet,
        addr_ton=octet,
        addr_npi=octet,
        address_range=c_string(41),
    )
)
responses = st.one_of(
    st.builds(p.SubmitSmResp, sequence_number=sequence, message_id=c_string(65)),
    st.builds(p.DeliverSmResp, sequence_number=sequence),
    st.builds(
        p.BindTransceiverResp,
        sequence_number=sequence,
        system_id=c_string(16),
        sc_interface_version=st.none() | octet,
    ),
    st.builds(p.EnquireLinkResp, sequence_number=sequence),
    st.builds(p.UnbindResp, sequence_number=sequence),
    st.builds(p.GenericNack, sequence_number=sequence, command_status=st.integers(0, 0xFF)),
)
pdus = st.one_of(
    short_message_fields(p.SubmitSm),
    short_message_fields(p.DeliverSm),
    binds,
    responses,
    st.builds(p.EnquireLink, sequence_number=sequence),
    st.builds(p.Unbind, sequence_number=sequence),
)


@given(pdus)
def test_round_trip(pdu: p.AnyPdu) -> None:
    data = encode_pdu(pdu)
    assert int.from_bytes(data[:4], "big") == len(data)
    assert decode_pdu(data) == pdu
    assert PduReader().feed(data + data[:7]) == [data]


@given(st.binary(min_size=16, max_size=400))
def test_any_frame_decodes_or_raises_pdu_error(data: bytes) -> None:
    frame = len(data).to_bytes(4, "big") + data[4:]
    status = p.ESME_ROK
    try:
        decode_pdu(frame)
    except PduError as error:
        status = error.status
    assert status in {
        p.ESME_ROK,
        p.ESME_RINVCMDID,
        p.ESME_RINVCMDLEN,
        p.ESME_RINVMSGLEN,
        p.ESME_RINVOPTPARSTREAM,
        p.ESME_RINVPARLEN,
    }
