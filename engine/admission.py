"""Admission by bridge: which bridges of a route take a message as its line asks. Pure: no I/O.

Each driver states its provider's `Limits` (bridges/base.py): sender length and alphabet,
text length per encoding, flash, validity. A line is held to them when it is accepted,
never after, and never by quietly changing it (a flash message sent as a normal one, a
validity cut short, a sender truncated):

- The route (engine.routing) is narrowed to the bridges that take the message, in route
  order. The first of them is the primary even where the route's own primary refuses it
  (a flash message on the route dsc → routemobile goes to routemobile: the route names
  routemobile as able to carry the number, and sending is better than refusing), and the
  failovers are only those that take it too, with the sender it will carry. So a failover
  never moves a message to a bridge whose limits it breaks.
- When no bridge of the route takes it, the line is refused with one sentence naming, for
  each bridge, the rule it breaks: "from 'VERYLONGSENDER1' is 15 characters; bsg takes at
  most 11 alphanumeric".

A refusal is a value, one struct per rule; `describe_refusals` renders the sentence and
`refusal_kind` says which kind of refusal (engine.ingress.prepare.RefusalKind) each is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import msgspec

from bridges.base import Limits
from engine.models import Encoding, Message
from engine.segment import count_units

# Where the sender a bridge would get comes from: the line, or the bridge's config.
SenderSource = Literal["from", "default_sender"]
AdmissionKind = Literal["sender", "text", "flash", "validity"]


class SenderMissing(msgspec.Struct, frozen=True):
    """The provider needs a sender; the line has no `from` and the bridge no default."""

    bridge: str


class SenderPlus(msgspec.Struct, frozen=True):
    """A numeric sender written with `+` where the provider takes digits only (BSG: 25)."""

    bridge: str
    sender: str
    source: SenderSource


class SenderCharacter(msgspec.Struct, frozen=True):
    """An alphanumeric sender with a character the provider does not take."""

    bridge: str
    sender: str
    source: SenderSource
    character: str
    allowed: frozenset[str]


class SenderTooLong(msgspec.Struct, frozen=True):
    """A sender longer than the provider takes: `length` digits when `numeric`, else
    characters."""

    bridge: str
    sender: str
    source: SenderSource
    numeric: bool
    length: int
    limit: int


class TextTooLong(msgspec.Struct, frozen=True):
    """A text over the provider's limit: GSM-7 septets or UCS-2 UTF-16 units."""

    bridge: str
    encoding: Encoding
    length: int
    limit: int
    # Some characters count twice (GSM-7 extension characters, UCS-2 surrogate pairs).
    doubled: bool


class FlashUnsupported(msgspec.Struct, frozen=True):
    """A flash message for a provider that has no flash messages."""

    bridge: str


class ValidityTooLong(msgspec.Struct, frozen=True):
    """A validity longer than the provider keeps a message."""

    bridge: str
    validity_s: int
    limit_s: int


Refusal = (
    SenderMissing
    | SenderPlus
    | SenderCharacter
    | SenderTooLong
    | TextTooLong
    | FlashUnsupported
    | ValidityTooLong
)


class Asked(msgspec.Struct, frozen=True, kw_only=True):
    """What a line asks of whichever bridge carries it. `units` counts septets for GSM-7
    and UTF-16 code units for UCS-2 (engine.segment.Segmentation.units); `characters`
    is the text's length in code points."""

    sender: str | None
    encoding: Encoding
    units: int
    characters: int
    flash: bool = False
    validity_s: int | None = None


def check_sender(
    bridge: str, limits: Limits, sender: str | None, source: SenderSource
) -> Refusal | None:
    """Why `bridge` would refuse `sender`, or None where it takes it."""
    if sender is None:
        return SenderMissing(bridge) if limits.sender_required else None
    digits = sender[1:] if sender[:1] == "+" else sender
    if digits and digits.isascii() and digits.isdigit():
        if len(digits) < len(sender) and not limits.numeric_sender_plus:
            return SenderPlus(bridge, sender, source)
        if len(digits) > limits.numeric_sender_max:
            return SenderTooLong(
                bridge, sender, source, True, len(digits), limits.numeric_sender_max
            )
        return None
    allowed = limits.sender_characters
    if not allowed.issuperset(sender):
        character = next(character for character in sender if character not in allowed)
        return SenderCharacter(bridge, sender, source, character, allowed)
    if len(sender) > limits.alphanumeric_sender_max:
        return SenderTooLong(
            bridge, sender, source, False, len(sender), limits.alphanumeric_sender_max
        )
    return None


def check(
    bridge: str, limits: Limits, asked: Asked, sender: str | None, source: SenderSource
) -> Refusal | None:
    """The first rule of `limits` the message breaks on `bridge` with `sender`, or None."""
    refusal = check_sender(bridge, limits, sender, source)
    if refusal is not None:
        return refusal
    text_limit = limits.gsm7_max if asked.encoding == "GSM-7" else limits.ucs2_max
    if text_limit is not None and asked.units > text_limit:
        doubled = asked.units != asked.characters
        return TextTooLong(bridge, asked.encoding, asked.units, text_limit, doubled)
    if asked.flash and not limits.flash:
        return FlashUnsupported(bridge)
    longest = limits.max_validity_s
    if asked.validity_s is not None and longest is not None and asked.validity_s > longest:
        return ValidityTooLong(bridge, asked.validity_s, longest)
    return None


def admit(
    route: Sequence[str],
    asked: Asked,
    limits: Mapping[str, Limits],
    default_senders: Mapping[str, str | None],
) -> tuple[str, ...] | list[Refusal]:
    """The bridges of `route` that take the message, in route order (module docstring);
    or, when none does, each bridge's refusal. A bridge with no entry in `limits` takes
    anything.

    The message carries the line's `from`, else the default sender of the bridge chosen
    first, wherever it goes (engine.ingress.prepare), so the failovers are checked with that one.
    """
    refusals: list[Refusal] = []
    for position, bridge in enumerate(route):
        sender, source = _sender_for(bridge, asked, default_senders)
        refusal = _refusal(bridge, limits, asked, sender, source)
        if refusal is None:
            failovers = tuple(
                other
                for other in route[position + 1 :]
                if _refusal(other, limits, asked, sender, source) is None
            )
            return (bridge, *failovers)
        refusals.append(refusal)
    return refusals


def _refusal(
    bridge: str,
    limits: Mapping[str, Limits],
    asked: Asked,
    sender: str | None,
    source: SenderSource,
) -> Refusal | None:
    bridge_limits = limits.get(bridge)
    return None if bridge_limits is None else check(bridge, bridge_limits, asked, sender, source)


class Admitter:
    """`admit` over one set of limits and default senders, remembering its answers: most
    lines share their route, sender and options, and have a text shorter than any
    bridge's limit, so the rules are checked once for all of them (engine.ingress.prepare calls
    this for every recipient of every line)."""

    __slots__ = ("_answers", "_limits", "_senders", "_shortest")

    # Distinct (route, sender, options, long text) answers kept before starting afresh.
    MAX_ANSWERS = 4096

    def __init__(
        self, limits: Mapping[str, Limits], default_senders: Mapping[str, str | None]
    ) -> None:
        self._limits = dict(limits)
        self._senders = dict(default_senders)
        # A text of at most this many units can break no bridge's text limit.
        gsm7 = [one.gsm7_max for one in self._limits.values() if one.gsm7_max is not None]
        ucs2 = [one.ucs2_max for one in self._limits.values() if one.ucs2_max is not None]
        self._shortest: dict[str, int | None] = {
            "GSM-7": min(gsm7, default=None),
            "UCS-2": min(ucs2, default=None),
        }
        self._answers: dict[tuple[object, ...], tuple[str, ...] | list[Refusal]] = {}

    def admit(
        self,
        route: tuple[str, ...],
        *,
        sender: str | None,
        encoding: Encoding,
        units: int,
        characters: int,
        flash: bool = False,
        validity_s: int | None = None,
    ) -> tuple[str, ...] | list[Refusal]:
        """`admit(route, Asked(...), limits, default_senders)`, remembered."""
        shortest = self._shortest[encoding]
        # The text's length matters only where some bridge's limit could be reached.
        length = (-1, -1) if shortest is None or units <= shortest else (units, characters)
        key = (route, sender, encoding, length, flash, validity_s)
        answer = self._answers.get(key)
        if answer is None:
            asked = Asked(
                sender=sender,
                encoding=encoding,
                units=units,
                characters=characters,
                flash=flash,
                validity_s=validity_s,
            )
            answer = admit(route, asked, self._limits, self._senders)
            if len(self._answers) >= self.MAX_ANSWERS:
                self._answers.clear()
            self._answers[key] = answer
        return answer


def takes_message(limits: Mapping[str, Limits], message: Message, bridge: str, now: float) -> bool:
    """Whether `bridge` takes a journaled message as it would be sent there at `now`: its
    own sender, its text, its validity left. For a failover (engine.lifecycle) of a
    message whose route was narrowed before its bridges' limits changed (a restart with
    other options, or a journal from before admission by bridge)."""
    bridge_limits = limits.get(bridge)
    if bridge_limits is None:
        return True
    validity_s = None
    if message.expires_at is not None:
        validity_s = max(1, int(message.expires_at - now))
    asked = Asked(
        sender=message.sender,
        encoding=message.encoding,
        units=count_units(message.text, message.encoding),
        characters=len(message.text),
        flash=message.flash,
        validity_s=validity_s,
    )
    source: SenderSource = "from" if message.sender is not None else "default_sender"
    return check(bridge, bridge_limits, asked, message.sender, source) is None


def _sender_for(
    bridge: str, asked: Asked, default_senders: Mapping[str, str | None]
) -> tuple[str | None, SenderSource]:
    if asked.sender is not None:
        return asked.sender, "from"
    return default_senders.get(bridge) or None, "default_sender"


# ── Words, rendered at the edge ──────────────────────────────────────────────────


def refusal_kind(refusal: Refusal) -> AdmissionKind:
    """Which kind of refusal it is, for front doors that answer with codes (SMPP)."""
    if isinstance(refusal, TextTooLong):
        return "text"
    if isinstance(refusal, FlashUnsupported):
        return "flash"
    if isinstance(refusal, ValidityTooLong):
        return "validity"
    return "sender"


def describe_refusals(refusals: Sequence[Refusal]) -> str:
    """One sentence for one or more refusals: what the message has, then what each
    bridge takes, the first part said once for bridges that refuse the same thing."""
    parts: list[str] = []
    said: str | None = None
    for refusal in refusals:
        subject, clause = _words(refusal)
        if subject != said:
            parts.append(subject)
            said = subject
        parts.append(clause)
    return "; ".join(parts)


def _words(refusal: Refusal) -> tuple[str, str]:
    """(what the message has, what the bridge takes) for one refusal."""
    bridge = refusal.bridge
    if isinstance(refusal, SenderMissing):
        return "the line has no from", f"{bridge} needs a sender and has no default_sender"
    if isinstance(refusal, SenderPlus):
        return (
            f"{refusal.source} {refusal.sender!r} starts with '+'",
            f"{bridge} takes a numeric sender as digits only",
        )
    if isinstance(refusal, SenderCharacter):
        return (
            f"{refusal.source} {refusal.sender!r} has {refusal.character!r}",
            f"{bridge} takes only {_alphabet(refusal.allowed)} in a sender",
        )
    if isinstance(refusal, SenderTooLong):
        if refusal.numeric:
            return (
                f"{refusal.source} {refusal.sender!r} is {refusal.length} digits",
                f"{bridge} takes at most {refusal.limit} in a numeric sender",
            )
        return (
            f"{refusal.source} {refusal.sender!r} is {refusal.length} characters",
            f"{bridge} takes at most {refusal.limit} alphanumeric",
        )
    if isinstance(refusal, TextTooLong):
        counted = ""
        if refusal.doubled:
            counted = (
                " (an extension character such as € counts 2)"
                if refusal.encoding == "GSM-7"
                else " (a character outside the BMP, such as an emoji, counts 2)"
            )
        return (
            f"text is {refusal.length} {refusal.encoding} characters{counted}",
            f"{bridge} takes at most {refusal.limit}",
        )
    if isinstance(refusal, FlashUnsupported):
        return "flash is true", f"{bridge} sends no flash messages"
    hours = refusal.limit_s / 3600
    return (
        f"validity_s is {refusal.validity_s}",
        f"{bridge} keeps a message at most {refusal.limit_s} s ({hours:g} hours)",
    )


def _alphabet(allowed: frozenset[str]) -> str:
    """The characters of a sender alphabet in words: "letters, digits, space and . _ & -"."""
    words: list[str] = []
    rest = set(allowed)
    for word, group in (
        ("letters", frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")),
        ("digits", frozenset("0123456789")),
        ("space", frozenset(" ")),
    ):
        if group <= rest:
            words.append(word)
            rest -= group
    if rest:
        words.append(" ".join(sorted(rest)))
    if len(words) < 2:
        return words[0] if words else "no character"
    return ", ".join(words[:-1]) + " and " + words[-1]
