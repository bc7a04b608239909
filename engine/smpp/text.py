"""What a submit_sm means: its text, its place in a long message, its addresses and times,
and the text of the delivery receipt that answers it. Pure: no I/O.

Long messages come in three forms (SMPP v3.4 section 2.8 and 3GPP TS 23.040 9.2.3.24):
a User Data Header with the concatenation element (esm_class 0x40; IE 0x00 with an 8-bit
reference or IE 0x08 with a 16-bit one), the sar_* optional parameters, or the whole
text in one message_payload. The first two arrive as parts that `Reassembly` joins;
parts are joined as octets before decoding, so a UCS-2 surrogate pair or a GSM escape
split across two parts comes out whole.

Octets become text in the coding their data_coding names for the account (`coding_of`);
octets that are not text in it (a top bit in a 7-bit alphabet, a control character but
LF and CR once decoded) are refused with a TextFault, never guessed at (issue 17).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, Final, Generic, Literal, TypeVar

import msgspec

from engine.gsm_tables import DEFAULT_ALPHABET, DEFAULT_EXTENSION, UNDEFINED
from engine.smpp import pdu as p


class UnreadableMessageError(ValueError):
    """The submit_sm cannot be turned into text; `status` is the answer (section 5.1.3)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


# ── data_coding (section 5.2.19) ──────────────────────────────────────────────
#
# What 0 and 1 mean is the account's choice (engine.smpp.settings.SmppAccount), since
# clients disagree: section 5.2.19 makes 0 "SMSC default alphabet" and 1 "IA5 (CCITT
# T.50)/ASCII", but node-smpp sends GSM 03.38 octets as 1 and Kannel with alt-charset
# sends its charset as 0 (README, SMPP). 3 is always Latin-1 and 8 always UCS-2.

# The alphabet an account reads data_coding 0 or 1 in: GSM 03.38 unpacked (one septet per
# octet, with the escape to the extension table), ISO-8859-1, or IA5 (ASCII).
Alphabet = Literal["gsm", "latin1", "ascii"]
ALPHABETS: Final[tuple[Alphabet, ...]] = ("gsm", "latin1", "ascii")
# How one submit_sm's octets are read: an account's alphabet, or UCS-2.
Coding = Literal["gsm", "latin1", "ascii", "ucs2"]

# Why octets are refused rather than journaled as text (issue 17): a wrong guess about
# the client's alphabet shows as octets the alphabet has not (a top bit set in a 7-bit
# alphabet) or as control characters; either is refused, never journaled.
TextFault = Literal[
    "unknown_data_coding",  # not 0, 1, 3 or 8
    "odd_ucs2_length",  # UCS-2 octets come in pairs
    "eight_bit_octet",  # an octet over 0x7F where GSM 03.38 unpacked or IA5 has none
    "control_character",  # C0 but LF and CR, DEL, or C1 in the decoded text
]

# The submit_sm_resp status of each fault (section 5.1.3).
TEXT_FAULT_STATUS: Final[dict[TextFault, int]] = {
    "unknown_data_coding": p.ESME_RSUBMITFAIL,
    "odd_ucs2_length": p.ESME_RINVMSGLEN,
    "eight_bit_octet": p.ESME_RSUBMITFAIL,
    "control_character": p.ESME_RSUBMITFAIL,
}


class TextRefusedError(UnreadableMessageError):
    """`octets` are not text in `coding`: `fault` says why, at `position` (an octet index
    for eight_bit_octet, a character index for control_character) where `found` (the
    octet, or the character's code point) is."""

    def __init__(
        self,
        fault: TextFault,
        coding: Coding | None,
        octets: bytes = b"",
        position: int = 0,
        found: int = 0,
    ) -> None:
        super().__init__(TEXT_FAULT_STATUS[fault], fault)
        self.fault: TextFault = fault
        self.coding = coding
        self.octets = octets
        self.position = position
        self.found = found

    @property
    def found_label(self) -> str:
        """What was found, as a log line shows it: a character or an octet."""
        if self.fault == "control_character":
            return f"U+{self.found:04X}"
        if self.fault == "eight_bit_octet":
            return f"0x{self.found:02X}"
        return str(self.found)


def coding_of(data_coding: int, *, zero: Alphabet, one: Alphabet) -> Coding:
    """How a submit_sm with this data_coding is read, given the account's alphabets."""
    if data_coding == 0:
        return zero
    if data_coding == 1:
        return one
    if data_coding == 3:
        return "latin1"
    if data_coding == 8:
        return "ucs2"
    raise TextRefusedError("unknown_data_coding", None, found=data_coding)


GSM_ESCAPE: Final = 0x1B
# Octet -> character for unpacked GSM 7-bit (one septet per octet, the usual SMPP form).
# Only used on octets under 0x80; the top bit is masked so the table is total.
GSM_TRANSLATION: Final = {octet: DEFAULT_ALPHABET[octet & 0x7F] for octet in range(256)}
# Characters no client means in a message: C0 controls but LF and CR (which GSM 03.38
# has, 6.2.1), DEL and C1 (ISO 6429). They are what a wrong alphabet leaves: GSM '@' read
# as IA5 is NUL, a GSM escape read as IA5 is ESC, UTF-8 read as Latin-1 gives C1.
REFUSED_CHARACTERS: Final = re.compile(r"[\x00-\x09\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def _decode_gsm(data: bytes) -> str:
    if GSM_ESCAPE not in data:
        return data.decode("latin-1").translate(GSM_TRANSLATION)
    out: list[str] = []
    escaped = False
    for octet in data:
        septet = octet & 0x7F
        if escaped:
            escaped = False
            if septet == GSM_ESCAPE:
                # 23.038 6.2.1.1: escape, escape is kept for a further table; until one
                # is defined a receiving entity shows a space.
                out.append(" ")
                continue
            extension = DEFAULT_EXTENSION[septet]
            # 3GPP TS 23.038 6.2.1.1: an escape before an undefined extension code shows
            # the default alphabet's character instead.
            out.append(DEFAULT_ALPHABET[septet] if extension == UNDEFINED else extension)
        elif septet == GSM_ESCAPE:
            escaped = True
        else:
            out.append(DEFAULT_ALPHABET[septet])
    if escaped:
        out.append(" ")  # 23.038 6.2.1.1: a lone trailing escape reads as a space
    return "".join(out)


def _first_eight_bit(data: bytes) -> int | None:
    if data.isascii():
        return None
    return next(index for index, octet in enumerate(data) if octet >= 0x80)


def decode_text(data: bytes, coding: Coding) -> str:
    """The text of a whole message, or TextRefusedError: never a text holding control
    characters (but LF and CR) or octets its alphabet has not.

    UCS-2 is read as UTF-16BE so that emoji sent as surrogate pairs survive; a lone
    surrogate is replaced rather than refused.
    """
    if coding in ("gsm", "ascii"):
        position = _first_eight_bit(data)
        if position is not None:
            raise TextRefusedError("eight_bit_octet", coding, data, position, data[position])
    elif coding == "ucs2" and len(data) % 2:
        raise TextRefusedError("odd_ucs2_length", coding, data, len(data), len(data))
    text = _decode(data, coding)
    # isprintable() is False for every control character (and a few other characters,
    # which the pattern then lets through): the common text skips the search.
    control = None if text.isprintable() else REFUSED_CHARACTERS.search(text)
    if control is not None:
        raise TextRefusedError(
            "control_character", coding, data, control.start(), ord(control.group())
        )
    return text


def preview_text(data: bytes, coding: Coding) -> str:
    """What can be read of some octets, never refused: the start of one part of a long
    message for its receipt's text field (which shows control characters as spaces)."""
    if coding == "ucs2" and len(data) % 2:
        data = data[:-1]
    if coding == "ascii":
        return data.decode("ascii", "replace")
    return _decode(data, coding)


def _decode(data: bytes, coding: Coding) -> str:
    if coding == "gsm":
        return _decode_gsm(data)
    if coding == "ascii":
        return data.decode("ascii")
    if coding == "latin1":
        return data.decode("latin-1")
    return data.decode("utf-16-be", "replace")


def readable_as(data: bytes) -> list[Alphabet]:
    """The alphabets in which these octets are text without a fault: what a refusal's log
    line suggests for the account's data_coding_0 / data_coding_1."""
    fits: list[Alphabet] = []
    for alphabet in ALPHABETS:
        try:
            decode_text(data, alphabet)
        except TextRefusedError:
            continue
        fits.append(alphabet)
    return fits


def encode_text(text: str, alphabet: Alphabet) -> bytes:
    """A receipt's text in the alphabet the account reads data_coding 0 in, so a client
    reads it as it writes (Kannel decodes a data_coding 0 deliver_sm with its
    alt-charset); a character the alphabet has not becomes '?'."""
    if alphabet == "gsm":
        return encode_gsm(text)
    return text.encode("latin-1" if alphabet == "latin1" else "ascii", "replace")


def encode_gsm(text: str) -> bytes:
    """Unpacked GSM 7-bit for receipt texts; a character outside the alphabet becomes '?'."""
    out = bytearray()
    for char in text:
        septet = GSM_ENCODING.get(char)
        if septet is not None:
            out.append(septet)
        elif char in GSM_EXTENSION_ENCODING:
            out += bytes((GSM_ESCAPE, GSM_EXTENSION_ENCODING[char]))
        else:
            out.append(GSM_ENCODING["?"])
    return bytes(out)


GSM_ENCODING: Final = {
    char: index for index, char in enumerate(DEFAULT_ALPHABET) if index != GSM_ESCAPE
}
GSM_EXTENSION_ENCODING: Final = {
    char: index for index, char in enumerate(DEFAULT_EXTENSION) if char != UNDEFINED
}

# ── concatenation ─────────────────────────────────────────────────────────────

IE_CONCAT_8BIT: Final = 0x00
IE_CONCAT_16BIT: Final = 0x08


class PartOf(msgspec.Struct, frozen=True):
    """This PDU is part `seq` of `total` of the long message `reference`."""

    reference: int
    total: int
    seq: int


def split_user_data(short_message: bytes) -> tuple[PartOf | None, bytes]:
    """3GPP TS 23.040 9.2.3.24: UDHL, then information elements, then the text octets.

    Returns the concatenation element (8- or 16-bit reference), if any, and the octets
    after the header. Other elements are skipped.
    """
    if not short_message:
        raise UnreadableMessageError(p.ESME_RINVESMCLASS, "esm_class says UDH but there is none")
    header_length = short_message[0]
    if header_length + 1 > len(short_message):
        raise UnreadableMessageError(p.ESME_RINVESMCLASS, "the UDH is longer than the message")
    header = short_message[1 : 1 + header_length]
    part: PartOf | None = None
    position = 0
    while position + 2 <= len(header):
        element, length = header[position], header[position + 1]
        value = header[position + 2 : position + 2 + length]
        if len(value) != length:
            raise UnreadableMessageError(p.ESME_RINVESMCLASS, "a UDH element runs past the header")
        if element == IE_CONCAT_8BIT and length == 3:
            part = PartOf(value[0], value[1], value[2])
        elif element == IE_CONCAT_16BIT and length == 4:
            part = PartOf(int.from_bytes(value[:2], "big"), value[2], value[3])
        position += 2 + length
    return part, short_message[1 + header_length :]


def message_octets(submit: p.ShortMessage) -> tuple[PartOf | None, bytes]:
    """The text octets of one submit_sm and, for a part of a long message, which part."""
    optional = submit.optional
    if optional.message_payload is not None:
        # Section 5.3.2.32: with message_payload, short_message must be empty.
        if submit.short_message:
            raise UnreadableMessageError(
                p.ESME_RINVOPTPARAMVAL, "message_payload and short_message are both set"
            )
        data = optional.message_payload
    else:
        data = submit.short_message
    part: PartOf | None = None
    if submit.esm_class & p.ESM_CLASS_UDHI:
        part, data = split_user_data(data)
    elif optional.sar_msg_ref_num is not None:
        if optional.sar_total_segments is None or optional.sar_segment_seqnum is None:
            raise UnreadableMessageError(
                p.ESME_RMISSINGOPTPARAM, "sar_msg_ref_num needs the other two sar_* parameters"
            )
        part = PartOf(
            optional.sar_msg_ref_num, optional.sar_total_segments, optional.sar_segment_seqnum
        )
    if part is not None:
        if part.total == 1 and part.seq == 1:
            return None, data
        if not 1 <= part.seq <= part.total:
            raise UnreadableMessageError(
                p.ESME_RINVOPTPARAMVAL, f"part {part.seq} of {part.total} is out of range"
            )
    return part, data


PartT = TypeVar("PartT")


class Reassembly(Generic[PartT]):
    """Parts of long messages waiting for their siblings, keyed by whatever the caller
    says identifies one message (account, addresses, reference, total)."""

    def __init__(self) -> None:
        self._waiting: dict[tuple[object, ...], dict[int, tuple[float, PartT]]] = {}

    def __len__(self) -> int:
        return len(self._waiting)

    def add(
        self, key: tuple[object, ...], seq: int, total: int, part: PartT, now: float
    ) -> list[PartT] | None:
        """Keep `part`; return every part in order once all `total` are in."""
        parts = self._waiting.setdefault(key, {})
        parts[seq] = (now, part)
        if len(parts) < total:
            return None
        del self._waiting[key]
        return [parts[index][1] for index in range(1, total + 1)]

    def expire(self, before: float) -> list[list[PartT]]:
        """Drop and return the groups whose first part arrived before `before`."""
        gone: list[list[PartT]] = []
        for key in [k for k, parts in self._waiting.items() if _first(parts) < before]:
            parts = self._waiting.pop(key)
            gone.append([part for _, (_, part) in sorted(parts.items())])
        return gone

    def next_expiry(self) -> float | None:
        return min((_first(parts) for parts in self._waiting.values()), default=None)


def _first(parts: dict[int, tuple[float, Any]]) -> float:
    return min(at for at, _ in parts.values())


# ── addresses (section 5.2.5) ─────────────────────────────────────────────────

TON_UNKNOWN: Final = 0
TON_INTERNATIONAL: Final = 1
TON_NATIONAL: Final = 2
TON_ALPHANUMERIC: Final = 5


def destination_number(address: str, ton: int) -> str:
    """The number as septet's normaliser reads it: international as '+digits'.

    TON 1 is international by definition. TON 0 (unknown) is read as international
    unless it starts with a national trunk 0, since that is what ESMEs mean in practice.
    TON 2 (national) is passed on as written, for the configured default region.
    """
    digits = address.strip()
    if not digits:
        raise UnreadableMessageError(p.ESME_RINVDSTADR, "destination_addr is empty")
    if ton == TON_INTERNATIONAL:
        return "+" + digits.lstrip("+")
    if ton == TON_UNKNOWN:
        if digits.startswith("+"):
            return digits
        if digits.startswith("00"):
            return "+" + digits[2:]
        return digits if digits.startswith("0") else "+" + digits
    if ton == TON_NATIONAL:
        return digits
    raise UnreadableMessageError(p.ESME_RINVDSTTON, f"dest_addr_ton {ton} cannot address a phone")


# ── times (section 7.1.1) ─────────────────────────────────────────────────────

SMPP_TIME: Final = re.compile(r"(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d)(\d{2})([+\-R])")


def parse_smpp_time(value: str, now: float) -> float | None:
    """ "YYMMDDhhmmsstnnp": absolute with a UTC offset in quarter hours (p '+'/'-'), or
    relative to now (p 'R'). Empty means "not given". Returns Unix seconds."""
    if not value:
        return None
    match = SMPP_TIME.fullmatch(value)
    if match is None:
        raise ValueError(f"{value!r} is not an SMPP time (YYMMDDhhmmsstnnp)")
    year, month, day, hour, minute, second, tenths, quarters = (
        int(group) for group in match.groups()[:8]
    )
    sign = match.group(9)
    if sign == "R":
        seconds = ((((year * 365 + month * 30 + day) * 24 + hour) * 60 + minute) * 60) + second
        return now + seconds
    offset = dt.timedelta(minutes=15 * quarters) * (1 if sign == "+" else -1)
    moment = dt.datetime(
        2000 + year, month, day, hour, minute, second, tenths * 100_000, dt.timezone(offset)
    )
    return moment.timestamp()


def receipt_date(seconds: float) -> str:
    """YYMMDDhhmm in UTC, as in the receipt text (SMPP v3.4 Appendix B)."""
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%y%m%d%H%M")


# ── delivery receipts (Appendix B) ────────────────────────────────────────────

FINAL_STATES: Final = frozenset({"DELIVRD", "UNDELIV", "EXPIRED", "REJECTD", "DELETED", "UNKNOWN"})
RECEIPT_TEXT_CHARS: Final = 20
# C0 controls, DEL and C1 controls (ISO 6429). Appendix B's receipt is one line of
# "name:value" fields that ESMEs parse with patterns (and often log or store as C
# strings): a line break, NUL or escape from the message would cut or corrupt it.
CONTROL_CHARACTERS: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def error_digits(code: str | None) -> str:
    """Three digits for `err:`: the provider's numeric code when it has one, else 000."""
    digits = "".join(char for char in code or "" if char.isdigit())
    return digits[-3:].rjust(3, "0") if digits else "000"


def printable_head(text: str) -> str:
    """The first characters of a message as the receipt's `text:` field shows them:
    every control character is a space, so the field stays on its one line."""
    return CONTROL_CHARACTERS.sub(" ", text[:RECEIPT_TEXT_CHARS])


def receipt_text(
    *,
    message_id: str,
    state: str,
    error: str,
    submitted_at: float,
    done_at: float,
    text: str,
) -> str:
    delivered = "001" if state == "DELIVRD" else "000"
    return (
        f"id:{message_id} sub:001 dlvrd:{delivered} submit date:{receipt_date(submitted_at)}"
        f" done date:{receipt_date(done_at)} stat:{state} err:{error}"
        f" text:{printable_head(text)}"
    )
