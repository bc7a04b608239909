"""SMPP v3.4 PDUs as msgspec Structs, with the protocol's numbers. Pure: no I/O.

Names follow the specification (SMPP v3.4, issue 1.2): a PDU class is the command
name in CamelCase (`SubmitSm`), a field keeps its spec name (`destination_addr`).
Every PDU carries the header's `sequence_number` and `command_status` (section 3.2);
`command_length` and `command_id` are the codec's business.
"""

from __future__ import annotations

from typing import ClassVar, Final

import msgspec

# ── command_id (section 5.1.2.1) ──────────────────────────────────────────────

GENERIC_NACK: Final = 0x80000000
BIND_RECEIVER: Final = 0x00000001
BIND_RECEIVER_RESP: Final = 0x80000001
BIND_TRANSMITTER: Final = 0x00000002
BIND_TRANSMITTER_RESP: Final = 0x80000002
QUERY_SM: Final = 0x00000003
SUBMIT_SM: Final = 0x00000004
SUBMIT_SM_RESP: Final = 0x80000004
DELIVER_SM: Final = 0x00000005
DELIVER_SM_RESP: Final = 0x80000005
UNBIND: Final = 0x00000006
UNBIND_RESP: Final = 0x80000006
REPLACE_SM: Final = 0x00000007
CANCEL_SM: Final = 0x00000008
BIND_TRANSCEIVER: Final = 0x00000009
BIND_TRANSCEIVER_RESP: Final = 0x80000009
OUTBIND: Final = 0x0000000B
ENQUIRE_LINK: Final = 0x00000015
ENQUIRE_LINK_RESP: Final = 0x80000015
SUBMIT_MULTI: Final = 0x00000021
ALERT_NOTIFICATION: Final = 0x00000102
DATA_SM: Final = 0x00000103

RESPONSE_BIT: Final = 0x80000000

# Requests this server knows but does not serve: answered with their own response
# carrying ESME_RINVCMDID (section 5.1.3). outbind and alert_notification have no
# response (sections 4.1.7, 4.12.1); an ESME sending them gets generic_nack.
UNSUPPORTED_REQUESTS: Final = frozenset({QUERY_SM, REPLACE_SM, CANCEL_SM, SUBMIT_MULTI, DATA_SM})

# ── command_status (section 5.1.3) ────────────────────────────────────────────

ESME_ROK: Final = 0x00
ESME_RINVMSGLEN: Final = 0x01
ESME_RINVCMDLEN: Final = 0x02
ESME_RINVCMDID: Final = 0x03
ESME_RINVBNDSTS: Final = 0x04
ESME_RALYBND: Final = 0x05
ESME_RSYSERR: Final = 0x08
ESME_RINVSRCADR: Final = 0x0A
ESME_RINVDSTADR: Final = 0x0B
ESME_RINVMSGID: Final = 0x0C
ESME_RBINDFAIL: Final = 0x0D
ESME_RINVPASWD: Final = 0x0E
ESME_RINVSYSID: Final = 0x0F
ESME_RMSGQFUL: Final = 0x14
ESME_RINVESMCLASS: Final = 0x43
ESME_RSUBMITFAIL: Final = 0x45
ESME_RINVSRCTON: Final = 0x48
ESME_RINVDSTTON: Final = 0x50
ESME_RTHROTTLED: Final = 0x58
ESME_RINVSCHED: Final = 0x61
ESME_RINVEXPIRY: Final = 0x62
ESME_RINVOPTPARSTREAM: Final = 0xC0
ESME_RINVPARLEN: Final = 0xC2
ESME_RMISSINGOPTPARAM: Final = 0xC3
ESME_RINVOPTPARAMVAL: Final = 0xC4
ESME_RUNKNOWNERR: Final = 0xFF

# ── optional parameter tags (section 5.3.2) ───────────────────────────────────

TAG_SAR_MSG_REF_NUM: Final = 0x020C
TAG_SAR_TOTAL_SEGMENTS: Final = 0x020E
TAG_SAR_SEGMENT_SEQNUM: Final = 0x020F
TAG_SC_INTERFACE_VERSION: Final = 0x0210
TAG_RECEIPTED_MESSAGE_ID: Final = 0x001E
TAG_MESSAGE_STATE: Final = 0x0427
TAG_MESSAGE_PAYLOAD: Final = 0x0424

# message_state values (section 5.2.28).
MESSAGE_STATES: Final[dict[str, int]] = {
    "ENROUTE": 1,
    "DELIVRD": 2,
    "EXPIRED": 3,
    "DELETED": 4,
    "UNDELIV": 5,
    "ACCEPTD": 6,
    "UNKNOWN": 7,
    "REJECTD": 8,
}

# esm_class bits (section 5.2.12).
ESM_CLASS_UDHI: Final = 0x40
ESM_CLASS_DELIVERY_RECEIPT: Final = 0x04

# interface_version values a bind may carry (section 5.2.4; 0x50 is SMPP v5.0, whose
# binds are wire-compatible with v3.4 ones).
INTERFACE_VERSIONS: Final = frozenset({0x33, 0x34, 0x50})
SERVER_INTERFACE_VERSION: Final = 0x34

# ── PDUs ──────────────────────────────────────────────────────────────────────


class OptionalParameters(msgspec.Struct, frozen=True, kw_only=True):
    """The TLVs this server reads or writes; any other tag is skipped (section 3.2.4)."""

    message_payload: bytes | None = None
    sar_msg_ref_num: int | None = None
    sar_total_segments: int | None = None
    sar_segment_seqnum: int | None = None
    receipted_message_id: str | None = None
    message_state: int | None = None
    sc_interface_version: int | None = None


NO_OPTIONAL_PARAMETERS: Final = OptionalParameters()


class Pdu(msgspec.Struct, kw_only=True):
    command_id: ClassVar[int]
    sequence_number: int
    command_status: int = ESME_ROK


class Bind(Pdu, kw_only=True):
    """The body shared by the three bind requests (section 4.1.1)."""

    system_id: str = ""
    password: str = ""
    system_type: str = ""
    interface_version: int = SERVER_INTERFACE_VERSION
    addr_ton: int = 0
    addr_npi: int = 0
    address_range: str = ""


class BindTransmitter(Bind, kw_only=True):
    command_id: ClassVar[int] = BIND_TRANSMITTER


class BindReceiver(Bind, kw_only=True):
    command_id: ClassVar[int] = BIND_RECEIVER


class BindTransceiver(Bind, kw_only=True):
    command_id: ClassVar[int] = BIND_TRANSCEIVER


class BindResp(Pdu, kw_only=True):
    """Section 4.1.2: system_id, then sc_interface_version only when the ESME speaks
    v3.4 or later (section 5.3.2.25)."""

    system_id: str = ""
    sc_interface_version: int | None = None


class BindTransmitterResp(BindResp, kw_only=True):
    command_id: ClassVar[int] = BIND_TRANSMITTER_RESP


class BindReceiverResp(BindResp, kw_only=True):
    command_id: ClassVar[int] = BIND_RECEIVER_RESP


class BindTransceiverResp(BindResp, kw_only=True):
    command_id: ClassVar[int] = BIND_TRANSCEIVER_RESP


class ShortMessage(Pdu, kw_only=True):
    """The body shared by submit_sm (section 4.4.1) and deliver_sm (section 4.6.1)."""

    service_type: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""
    dest_addr_ton: int = 0
    dest_addr_npi: int = 0
    destination_addr: str = ""
    esm_class: int = 0
    protocol_id: int = 0
    priority_flag: int = 0
    schedule_delivery_time: str = ""
    validity_period: str = ""
    registered_delivery: int = 0
    replace_if_present_flag: int = 0
    data_coding: int = 0
    sm_default_msg_id: int = 0
    short_message: bytes = b""
    optional: OptionalParameters = NO_OPTIONAL_PARAMETERS


class SubmitSm(ShortMessage, kw_only=True):
    command_id: ClassVar[int] = SUBMIT_SM


class DeliverSm(ShortMessage, kw_only=True):
    command_id: ClassVar[int] = DELIVER_SM


class SubmitSmResp(Pdu, kw_only=True):
    """Section 4.4.2: the body is left out when command_status is an error."""

    command_id: ClassVar[int] = SUBMIT_SM_RESP
    message_id: str = ""


class DeliverSmResp(Pdu, kw_only=True):
    """Section 4.6.2: message_id is unused and set to NULL."""

    command_id: ClassVar[int] = DELIVER_SM_RESP
    message_id: str = ""


class EnquireLink(Pdu, kw_only=True):
    command_id: ClassVar[int] = ENQUIRE_LINK


class EnquireLinkResp(Pdu, kw_only=True):
    command_id: ClassVar[int] = ENQUIRE_LINK_RESP


class Unbind(Pdu, kw_only=True):
    command_id: ClassVar[int] = UNBIND


class UnbindResp(Pdu, kw_only=True):
    command_id: ClassVar[int] = UNBIND_RESP


class GenericNack(Pdu, kw_only=True):
    command_id: ClassVar[int] = GENERIC_NACK


class HeaderOnly(Pdu, kw_only=True):
    """Any PDU sent or read as its 16-byte header alone: error responses (section 3.3:
    "only the header" when command_status is not 0), and requests this server does not
    serve. `command_id` is per instance here."""

    command: int


BindRequest = BindTransmitter | BindReceiver | BindTransceiver
AnyPdu = (
    BindTransmitter
    | BindReceiver
    | BindTransceiver
    | BindTransmitterResp
    | BindReceiverResp
    | BindTransceiverResp
    | SubmitSm
    | SubmitSmResp
    | DeliverSm
    | DeliverSmResp
    | EnquireLink
    | EnquireLinkResp
    | Unbind
    | UnbindResp
    | GenericNack
    | HeaderOnly
)


def response_id(command_id: int) -> int:
    """The command_id of a request's response (section 5.1.2.1: the top bit set)."""
    return command_id | RESPONSE_BIT
