"""SMPP v3.4 bytes <-> PDU Structs, and the framing of a byte stream into PDUs. Pure: no I/O.

    bytes ──PduReader.feed──▶ frames ──decode_pdu──▶ Pdu ──encode_pdu──▶ bytes

Two kinds of failure, because they leave the stream in different shapes:
- `FramingError`: command_length is below the 16-byte header or above the cap. The
  next PDU's start is lost, so the connection answers generic_nack and closes.
- `PduError`: the frame is whole but its body is wrong (unknown command_id, truncated
  body, a C-string without its NUL, a TLV running past the end). The next frame still
  starts where command_length says, so the session answers and carries on.

Strings are C-Octet Strings (section 3.1): read up to the NUL, as Latin-1 so that no
byte sequence fails to decode (the fields are ASCII in practice). Unknown optional
parameters are skipped (section 3.2.4: "an SMPP entity ... shall ignore" them).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Final

from engine.smpp import pdu as p

HEADER: Final = struct.Struct(">IIII")
HEADER_LENGTH: Final = HEADER.size
# message_payload may carry up to 64K octets (section 5.3.2.32); a little room for the rest.
DEFAULT_MAX_COMMAND_LENGTH: Final = HEADER_LENGTH + 65_536 + 1024

TLV_HEADER: Final = struct.Struct(">HH")
UINT16: Final = struct.Struct(">H")


class FramingError(Exception):
    """command_length is unusable: the stream cannot be followed past this point."""

    def __init__(self, command_length: int, command_id: int, sequence_number: int) -> None:
        super().__init__(f"command_length {command_length} is out of bounds")
        self.command_length = command_length
        self.command_id = command_id
        self.sequence_number = sequence_number
        self.status = p.ESME_RINVCMDLEN


class PduError(Exception):
    """A whole frame that cannot be read; `status` is what to answer (section 5.1.3)."""

    def __init__(self, status: int, command_id: int, sequence_number: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.command_id = command_id
        self.sequence_number = sequence_number


# ── framing ───────────────────────────────────────────────────────────────────


class PduReader:
    """Splits a byte stream into whole PDU frames (header included)."""

    def __init__(self, max_command_length: int = DEFAULT_MAX_COMMAND_LENGTH) -> None:
        self._max = max_command_length
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        buffer = self._buffer
        buffer += data
        frames: list[bytes] = []
        start = 0
        available = len(buffer)
        while available - start >= 4:
            length = int.from_bytes(buffer[start : start + 4], "big")
            # Section 3.2: command_length counts the whole PDU, header included.
            if length < HEADER_LENGTH or length > self._max:
                command_id = sequence = 0
                if available - start >= HEADER_LENGTH:
                    _, command_id, _, sequence = HEADER.unpack_from(buffer, start)
                raise FramingError(length, command_id, sequence)
            if available - start < length:
                break
            frames.append(bytes(buffer[start : start + length]))
            start += length
        if start:
            del buffer[:start]
        return frames

    @property
    def buffered(self) -> int:
        return len(self._buffer)


# ── decoding ──────────────────────────────────────────────────────────────────


class _Body:
    """A cursor over one PDU body; every read checks the bounds."""

    __slots__ = ("command_id", "data", "end", "position", "sequence_number")

    def __init__(self, data: bytes, command_id: int, sequence_number: int) -> None:
        self.data = data
        self.position = HEADER_LENGTH
        self.end = len(data)
        self.command_id = command_id
        self.sequence_number = sequence_number

    def fail(self, status: int, reason: str) -> PduError:
        return PduError(status, self.command_id, self.sequence_number, reason)

    def c_string(self, max_length: int) -> str:
        """A C-Octet String of at most `max_length` octets, NUL included (section 3.1)."""
        nul = self.data.find(0, self.position, min(self.end, self.position + max_length))
        if nul < 0:
            raise self.fail(p.ESME_RINVCMDLEN, "a C-Octet String has no NUL in its bounds")
        text = self.data[self.position : nul].decode("latin-1")
        self.position = nul + 1
        return text

    def integer(self) -> int:
        if self.position >= self.end:
            raise self.fail(p.ESME_RINVCMDLEN, "the body ends before a required field")
        value = self.data[self.position]
        self.position += 1
        return value

    def octets(self, length: int) -> bytes:
        if self.position + length > self.end:
            raise self.fail(p.ESME_RINVMSGLEN, "sm_length runs past the end of the PDU")
        value = self.data[self.position : self.position + length]
        self.position += length
        return value

    def optional(self) -> p.OptionalParameters:
        """TLVs to the end of the body (section 3.2.4); unknown tags are skipped."""
        if self.position >= self.end:
            return p.NO_OPTIONAL_PARAMETERS
        found: dict[str, object] = {}
        data = self.data
        while self.position < self.end:
            if self.end - self.position < TLV_HEADER.size:
                raise self.fail(p.ESME_RINVOPTPARSTREAM, "a TLV header is cut short")
            tag, length = TLV_HEADER.unpack_from(data, self.position)
            start = self.position + TLV_HEADER.size
            stop = start + length
            if stop > self.end:
                raise self.fail(p.ESME_RINVOPTPARSTREAM, f"TLV 0x{tag:04x} runs past the end")
            self.position = stop
            reader = _TLV_READERS.get(tag)
            if reader is None:
                continue
            name, read = reader
            value = read(data[start:stop])
            if value is None:
                raise self.fail(p.ESME_RINVPARLEN, f"TLV {name} has length {length}")
            found[name] = value
        return p.OptionalParameters(**found)  # type: ignore[arg-type]


def _tlv_uint8(value: bytes) -> int | None:
    return value[0] if len(value) == 1 else None


def _tlv_uint16(value: bytes) -> int | None:
    return int(UINT16.unpack(value)[0]) if len(value) == 2 else None


def _tlv_c_string(value: bytes) -> str | None:
    # Section 5.3.2.12: receipted_message_id is a C-Octet String of at most 65 octets.
    if not value or len(value) > 65 or value[-1] != 0:
        return None
    return value[:-1].decode("latin-1")


def _tlv_octets(value: bytes) -> bytes | None:
    return value


_TLV_READERS: Final[dict[int, tuple[str, Callable[[bytes], object]]]] = {
    p.TAG_MESSAGE_PAYLOAD: ("message_payload", _tlv_octets),
    p.TAG_SAR_MSG_REF_NUM: ("sar_msg_ref_num", _tlv_uint16),
    p.TAG_SAR_TOTAL_SEGMENTS: ("sar_total_segments", _tlv_uint8),
    p.TAG_SAR_SEGMENT_SEQNUM: ("sar_segment_seqnum", _tlv_uint8),
    p.TAG_RECEIPTED_MESSAGE_ID: ("receipted_message_id", _tlv_c_string),
    p.TAG_MESSAGE_STATE: ("message_state", _tlv_uint8),
    p.TAG_SC_INTERFACE_VERSION: ("sc_interface_version", _tlv_uint8),
}

# Section 4: the longest each C-Octet String may be, NUL included.
SYSTEM_ID_MAX: Final = 16
PASSWORD_MAX: Final = 9
SYSTEM_TYPE_MAX: Final = 13
ADDRESS_RANGE_MAX: Final = 41
SERVICE_TYPE_MAX: Final = 6
ADDRESS_MAX: Final = 21
TIME_MAX: Final = 17
MESSAGE_ID_MAX: Final = 65


def _read_bind(body: _Body, cls: type[p.BindRequest]) -> p.BindRequest:
    return cls(
        sequence_number=body.sequence_number,
        system_id=body.c_string(SYSTEM_ID_MAX),
        password=body.c_string(PASSWORD_MAX),
        system_type=body.c_string(SYSTEM_TYPE_MAX),
        interface_version=body.integer(),
        addr_ton=body.integer(),
        addr_npi=body.integer(),
        address_range=body.c_string(ADDRESS_RANGE_MAX),
    )


def _read_bind_resp(
    body: _Body, status: int, cls: type[p.BindResp]
) -> p.BindTransmitterResp | p.BindReceiverResp | p.BindTransceiverResp:
    system_id = body.c_string(SYSTEM_ID_MAX) if body.position < body.end else ""
    optional = body.optional()
    return cls(  # type: ignore[return-value]
        sequence_number=body.sequence_number,
        command_status=status,
        system_id=system_id,
        sc_interface_version=optional.sc_interface_version,
    )


def _read_short_message(body: _Body, cls: type[p.SubmitSm | p.DeliverSm]) -> p.ShortMessage:
    service_type = body.c_string(SERVICE_TYPE_MAX)
    source_addr_ton = body.integer()
    source_addr_npi = body.integer()
    source_addr = body.c_string(ADDRESS_MAX)
    dest_addr_ton = body.integer()
    dest_addr_npi = body.integer()
    destination_addr = body.c_string(ADDRESS_MAX)
    esm_class = body.integer()
    protocol_id = body.integer()
    priority_flag = body.integer()
    schedule_delivery_time = body.c_string(TIME_MAX)
    validity_period = body.c_string(TIME_MAX)
    registered_delivery = body.integer()
    replace_if_present_flag = body.integer()
    data_coding = body.integer()
    sm_default_msg_id = body.integer()
    sm_length = body.integer()
    short_message = body.octets(sm_length)
    optional = body.optional()
    return cls(
        sequence_number=body.sequence_number,
        service_type=service_type,
        source_addr_ton=source_addr_ton,
        source_addr_npi=source_addr_npi,
        source_addr=source_addr,
        dest_addr_ton=dest_addr_ton,
        dest_addr_npi=dest_addr_npi,
        destination_addr=destination_addr,
        esm_class=esm_class,
        protocol_id=protocol_id,
        priority_flag=priority_flag,
        schedule_delivery_time=schedule_delivery_time,
        validity_period=validity_period,
        registered_delivery=registered_delivery,
        replace_if_present_flag=replace_if_present_flag,
        data_coding=data_coding,
        sm_default_msg_id=sm_default_msg_id,
        short_message=short_message,
        optional=optional,
    )


def decode_pdu(frame: bytes) -> p.AnyPdu:
    """One whole frame (as `PduReader.feed` gives them) -> its PDU, or PduError."""
    length, command_id, status, sequence = HEADER.unpack_from(frame)
    if length != len(frame):
        raise PduError(p.ESME_RINVCMDLEN, command_id, sequence, "command_length is not the size")
    body = _Body(frame, command_id, sequence)
    if command_id == p.SUBMIT_SM:
        return _read_short_message(body, p.SubmitSm)  # type: ignore[return-value]
    if command_id == p.DELIVER_SM_RESP:
        message_id = body.c_string(MESSAGE_ID_MAX) if body.position < body.end else ""
        return p.DeliverSmResp(
            sequence_number=sequence, command_status=status, message_id=message_id
        )
    if command_id == p.ENQUIRE_LINK:
        return p.EnquireLink(sequence_number=sequence)
    if command_id == p.ENQUIRE_LINK_RESP:
        return p.EnquireLinkResp(sequence_number=sequence, command_status=status)
    if command_id == p.SUBMIT_SM_RESP:
        message_id = body.c_string(MESSAGE_ID_MAX) if body.position < body.end else ""
        return p.SubmitSmResp(
            sequence_number=sequence, command_status=status, message_id=message_id
        )
    if command_id == p.DELIVER_SM:
        return _read_short_message(body, p.DeliverSm)  # type: ignore[return-value]
    if command_id in _BIND_REQUESTS:
        return _read_bind(body, _BIND_REQUESTS[command_id])
    if command_id in _BIND_RESPONSES:
        return _read_bind_resp(body, status, _BIND_RESPONSES[command_id])
    if command_id == p.UNBIND:
        return p.Unbind(sequence_number=sequence)
    if command_id == p.UNBIND_RESP:
        return p.UnbindResp(sequence_number=sequence, command_status=status)
    if command_id == p.GENERIC_NACK:
        return p.GenericNack(sequence_number=sequence, command_status=status)
    if command_id in p.UNSUPPORTED_REQUESTS or command_id & p.RESPONSE_BIT:
        # Known to exist but not served here, or the answer to something this server
        # never asked: the header is all the session needs.
        return p.HeaderOnly(sequence_number=sequence, command_status=status, command=command_id)
    raise PduError(p.ESME_RINVCMDID, command_id, sequence, f"unknown command_id 0x{command_id:08x}")


_BIND_REQUESTS: Final[dict[int, type[p.BindRequest]]] = {
    p.BIND_TRANSMITTER: p.BindTransmitter,
    p.BIND_RECEIVER: p.BindReceiver,
    p.BIND_TRANSCEIVER: p.BindTransceiver,
}
_BIND_RESPONSES: Final[dict[int, type[p.BindResp]]] = {
    p.BIND_TRANSMITTER_RESP: p.BindTransmitterResp,
    p.BIND_RECEIVER_RESP: p.BindReceiverResp,
    p.BIND_TRANSCEIVER_RESP: p.BindTransceiverResp,
}

# ── encoding ──────────────────────────────────────────────────────────────────


def _c(text: str) -> bytes:
    return text.encode("latin-1", "replace") + b"\x00"


def _tlv(tag: int, value: bytes) -> bytes:
    return TLV_HEADER.pack(tag, len(value)) + value


def encode_optional(optional: p.OptionalParameters) -> bytes:
    parts: list[bytes] = []
    if optional.receipted_message_id is not None:
        parts.append(_tlv(p.TAG_RECEIPTED_MESSAGE_ID, _c(optional.receipted_message_id)))
    if optional.message_state is not None:
        parts.append(_tlv(p.TAG_MESSAGE_STATE, bytes((optional.message_state,))))
    if optional.sar_msg_ref_num is not None:
        parts.append(_tlv(p.TAG_SAR_MSG_REF_NUM, UINT16.pack(optional.sar_msg_ref_num)))
    if optional.sar_total_segments is not None:
        parts.append(_tlv(p.TAG_SAR_TOTAL_SEGMENTS, bytes((optional.sar_total_segments,))))
    if optional.sar_segment_seqnum is not None:
        parts.append(_tlv(p.TAG_SAR_SEGMENT_SEQNUM, bytes((optional.sar_segment_seqnum,))))
    if optional.sc_interface_version is not None:
        parts.append(_tlv(p.TAG_SC_INTERFACE_VERSION, bytes((optional.sc_interface_version,))))
    if optional.message_payload is not None:
        parts.append(_tlv(p.TAG_MESSAGE_PAYLOAD, optional.message_payload))
    return b"".join(parts)


def _encode_body(pdu: p.Pdu) -> bytes:
    if isinstance(pdu, p.SubmitSmResp | p.DeliverSmResp):
        return _c(pdu.message_id)
    if isinstance(pdu, p.ShortMessage):
        if len(pdu.short_message) > 254:
            raise ValueError("short_message is at most 254 octets (section 5.2.21)")
        return b"".join(
            (
                _c(pdu.service_type),
                bytes((pdu.source_addr_ton, pdu.source_addr_npi)),
                _c(pdu.source_addr),
                bytes((pdu.dest_addr_ton, pdu.dest_addr_npi)),
                _c(pdu.destination_addr),
                bytes((pdu.esm_class, pdu.protocol_id, pdu.priority_flag)),
                _c(pdu.schedule_delivery_time),
                _c(pdu.validity_period),
                bytes(
                    (
                        pdu.registered_delivery,
                        pdu.replace_if_present_flag,
                        pdu.data_coding,
                        pdu.sm_default_msg_id,
                        len(pdu.short_message),
                    )
                ),
                pdu.short_message,
                encode_optional(pdu.optional),
            )
        )
    if isinstance(pdu, p.Bind):
        return b"".join(
            (
                _c(pdu.system_id),
                _c(pdu.password),
                _c(pdu.system_type),
                bytes((pdu.interface_version, pdu.addr_ton, pdu.addr_npi)),
                _c(pdu.address_range),
            )
        )
    if isinstance(pdu, p.BindResp):
        body = _c(pdu.system_id)
        if pdu.sc_interface_version is not None:
            body += _tlv(p.TAG_SC_INTERFACE_VERSION, bytes((pdu.sc_interface_version,)))
        return body
    return b""


def encode_pdu(pdu: p.Pdu) -> bytes:
    """The PDU's bytes. A response with an error status is the header alone (section 3.3)."""
    command_id = pdu.command if isinstance(pdu, p.HeaderOnly) else pdu.command_id
    if pdu.command_status != p.ESME_ROK and command_id & p.RESPONSE_BIT:
        body = b""
    else:
        body = _encode_body(pdu)
    return (
        HEADER.pack(HEADER_LENGTH + len(body), command_id, pdu.command_status, pdu.sequence_number)
        + body
    )


def encode_header_only(command_id: int, status: int, sequence_number: int) -> bytes:
    """A 16-byte PDU: error responses and generic_nack (section 3.3)."""
    return HEADER.pack(HEADER_LENGTH, command_id, status, sequence_number)
