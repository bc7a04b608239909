"""One submission checked and turned into one Message per recipient. Pure but for the clock.

The rules every front door shares: text, recipients, schedule, destination and route, the
bridges' own limits (engine.admission) and the price. A refusal is a LineError: the sentence
for people, its RefusalKind for code (engine.smpp.server maps it to a command_status).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

import msgspec

from bridges.base import Limits
from engine.admission import Admitter, describe_refusals, refusal_kind
from engine.models import Message, Submission, submission_decoder
from engine.numbers import InvalidNumber, normalise
from engine.pricing import NoPriceError, PriceTable, message_cost
from engine.routing import Router, UnknownRoute
from engine.segment import Segmentation, segment_text
from engine.webhooks import hosts
from engine.webhooks.settings import AccountWebhooks

# engine.smpp.server answers this refusal with ESME_RTHROTTLED (SMPP v3.4 5.1.3).
CONGESTED = "the queues are full: send it again later"
# Distinct routes, and prices, a preparer remembers before starting afresh.
MAX_REMEMBERED: Final = 4096

# Why a line or submission was refused, as a value front doors map to their own codes
# (engine.smpp.server.refusal_status): never by reading the sentence.
RefusalKind = Literal[
    "invalid",  # not a valid message (JSON, fields, a session line out of place)
    "text",  # empty, too long (here, or for every bridge of its route), or not encodable
    "sender",  # a sender no bridge of the route takes (length, alphabet, '+'), or none
    "flash",  # flash, and no bridge of the route sends flash messages
    "validity",  # longer than every bridge of the route keeps a message
    "recipients",  # none, or too many
    "destination",  # an invalid number, or no route for it
    "schedule",  # schedule_at without a zone
    "price",  # no price for the destination on its bridge
    "congested",  # the queues are full: send it again later
    "journal",  # the journal could not take it: send it again later
    "duplicate",  # the client's id was accepted before (msg_ids says as what)
    # The account's own rules (engine.ingress.accept):
    "throttled",  # over the account's messages per second (retry_after_s)
    "quota",  # over the account's daily quota (retry_after_s: until 00:00 UTC)
    "unauthorised",  # no account, or a wrong key or password
    "callback",  # a callback_url septet may not call (engine.webhooks.hosts)
]


@dataclass(frozen=True, slots=True)
class LineError:
    """Why a line was rejected: the sentence for people, its `kind` for code, `client_ref`
    when the line got far enough to have one, for a duplicate the `msg_ids` the
    earlier one was accepted as, and for "throttled" and "quota" the seconds until it
    would fit (`retry_after_s`)."""

    error: str
    client_ref: str | None = None
    kind: RefusalKind = "invalid"
    msg_ids: tuple[str, ...] = ()
    retry_after_s: float | None = None


class Shared:
    """What every message of a submission shares whatever its recipient: the checked text,
    schedule and callbacks, the segmentation, and each route's admitted bridges; and the
    first Message made with them (`template`), which the first messages of the batch's
    other submissions alike are copies of."""

    __slots__ = (
        "admitted",
        "callback_url",
        "dlr_mask",
        "dlr_url",
        "due_at",
        "expires_at",
        "segmentation",
        "template",
        "used",
    )

    def __init__(
        self,
        segmentation: Segmentation,
        due_at: float,
        expires_at: float | None,
        callback_url: str | None,
        dlr_url: str | None,
        dlr_mask: int,
    ) -> None:
        self.segmentation = segmentation
        self.due_at = due_at
        self.expires_at = expires_at
        self.callback_url = callback_url
        self.dlr_url = dlr_url
        self.dlr_mask = dlr_mask
        # route -> the bridges of it that take the message (engine.admission).
        self.admitted: dict[tuple[str, ...], tuple[str, ...]] = {}
        # Whether a Message was built for it: the first is built at once, and only a
        # second submission alike makes a template (a request of one message makes none).
        self.used = False
        # Never handed out (engine.ingress.accept and the journal change the messages).
        self.template: Message | None = None


# The fields of a Submission its Shared part depends on (all but to, id, dlr, priority),
# with the identity of the account's webhook rules it was checked by.
SharedKey = tuple[object, ...]


class BatchMemo(dict[SharedKey, Shared]):
    """What the submissions of one batch share, worked out once per batch instead of once
    per submission: the Shared part of submissions alike but for their recipients (an
    HTTP API batch of one text: one message object per recipient). A dict (no __init__
    of its own to run for every request)."""


def _message(
    sub: Submission,
    origin: str,
    now: float,
    shared: Shared,
    to: str,
    sender: str | None,
    price: tuple[float, str],
    bridges: tuple[str, ...],
) -> Message:
    """A submission's Message to `to` built from its 22 keywords."""
    return Message(
        msg_id="",
        reference="",
        origin=origin,
        client_ref=sub.id,
        to=to,
        sender=sender,
        text=sub.text,
        encoding=shared.segmentation.encoding,
        segments=shared.segmentation.segments,
        cost=price[0],
        currency=price[1],
        bridges=bridges,
        dlr=sub.dlr,
        flash=sub.flash,
        priority=sub.priority,
        accepted_at=now,
        due_at=shared.due_at,
        expires_at=shared.expires_at,
        callback_url=shared.callback_url,
        dlr_url=shared.dlr_url,
        dlr_mask=shared.dlr_mask,
    )


_NO_PRICE: Final = (0.0, "")


def _first_of(
    sub: Submission,
    origin: str,
    now: float,
    shared: Shared,
    to: str,
    sender: str | None,
    price: tuple[float, str],
    bridges: tuple[str, ...],
) -> Message:
    """A submission's first recipient's Message, after the first of its Shared part (built
    at once): a copy of a template of what the Shared part's submissions share, with what
    a submission may have of its own (its id, dlr and priority) and the recipient's
    number, route, sender and price. An HTTP API batch of one text is a submission per
    recipient: building each Message from its 22 keywords cost about seven times as much."""
    template = shared.template
    if template is None or template.origin != origin or template.accepted_at != now:
        template = _message(sub, origin, now, shared, "", None, _NO_PRICE, ())
        shared.template = template
    return msgspec.structs.replace(
        template,
        client_ref=sub.id,
        to=to,
        sender=sender,
        cost=price[0],
        currency=price[1],
        bridges=bridges,
        dlr=sub.dlr,
        priority=sub.priority,
    )


class LinePreparer:
    """Validates one input line and turns it into one Message per recipient. Pure but for
    the clock passed in.

    With `limits` (each bridge driver's), a message goes only to the bridges of its route
    that take it, the first of them as its primary, or the line is refused with a sentence
    naming each bridge's rule (engine.admission)."""

    def __init__(
        self,
        *,
        router: Router,
        prices: dict[str, PriceTable],
        default_senders: dict[str, str | None],
        max_text_chars: int,
        max_recipients: int,
        default_region: str | None,
        limits: Mapping[str, Limits] | None = None,
        webhooks: AccountWebhooks | None = None,
    ) -> None:
        """`webhooks`: the account's webhook settings (its default URL and the rules a
        line's `callback_url` must pass); without them a line's callback_url is refused."""
        self._webhooks = webhooks
        self._router = router
        self._prices = prices
        self._senders = default_senders
        self._max_text = max_text_chars
        self._max_recipients = max_recipients
        self._region = default_region
        self._admitter = Admitter(limits, default_senders) if limits else None
        # Routes and prices depend on a number's first digits only, and front doors send
        # one message a request as often as a batch: both are remembered across batches.
        # (requested route, number prefix: Router.prefix_length) -> the route's bridges.
        self._routed: dict[tuple[str | None, str], tuple[str, ...]] = {}
        self._prefix_length = router.prefix_length
        # (bridge, number prefix, segments) -> (amount, currency).
        self._priced: dict[tuple[str, str, int], tuple[float, str]] = {}

    def prepare(self, line: bytes, origin: str, now: float) -> list[Message] | LineError:
        sub = self.decode(line)
        return sub if isinstance(sub, LineError) else self.prepare_submission(sub, origin, now)

    @staticmethod
    def decode(line: bytes) -> Submission | LineError:
        """One NDJSON line as a Submission, or why it is not one ("invalid")."""
        try:
            return submission_decoder.decode(line)
        except msgspec.ValidationError as error:
            return LineError(f"invalid message: {_describe(error)}")
        except msgspec.DecodeError:
            return LineError("invalid message: the line is not a JSON object")

    def prepare_submission(
        self,
        sub: Submission,
        origin: str,
        now: float,
        webhooks: AccountWebhooks | None = None,
        memo: BatchMemo | None = None,
    ) -> list[Message] | LineError:
        """The checks and per-recipient messages of one decoded submission (NDJSON or SMPP).
        `webhooks`: its account's (engine.accounts.Account.webhooks); None: the preparer's.
        `memo`: shared by the submissions of one batch (engine.ingress.accept)."""
        ref = sub.id
        text = sub.text
        if not text:
            return LineError("text is empty", ref, "text")
        if len(text) > self._max_text:
            return LineError(
                f"text is {len(text)} characters; the limit is {self._max_text}", ref, "text"
            )
        recipients = [sub.to] if isinstance(sub.to, str) else sub.to
        if not recipients:
            return LineError("to has no recipients", ref, "recipients")
        if len(recipients) > self._max_recipients:
            return LineError(
                f"to has {len(recipients)} recipients; the limit is {self._max_recipients}",
                ref,
                "recipients",
            )
        if memo is None:
            memo = BatchMemo()
        webhooks = webhooks or self._webhooks
        key = (
            text,
            sub.sender,
            sub.route,
            sub.flash,
            sub.schedule_at,
            sub.validity_s,
            sub.callback_url,
            sub.dlr_url,
            sub.dlr_mask,
            id(webhooks),
        )
        shared = memo.get(key)
        if shared is None:
            made = self._shared(sub, now, webhooks)
            if isinstance(made, LineError):
                return made
            shared = memo[key] = made
        return self._messages(sub, origin, now, recipients, shared)

    def _shared(
        self, sub: Submission, now: float, webhooks: AccountWebhooks | None
    ) -> Shared | LineError:
        """A submission's schedule, callbacks and segmentation checked (module docstring)."""
        ref = sub.id
        due_at = now
        if sub.schedule_at is not None:
            if sub.schedule_at.tzinfo is None:
                return LineError(
                    "schedule_at needs a time zone, such as Z or +02:00", ref, "schedule"
                )
            due_at = max(now, sub.schedule_at.timestamp())
        expires_at = None if sub.validity_s is None else due_at + sub.validity_s
        dlr_url: str | None = None
        if sub.callback_url is None and sub.dlr_url is None:  # most lines: nothing to check
            callback_url = webhooks.default_url if webhooks is not None else None
        else:
            checked = self._callback_url(sub, webhooks)
            if isinstance(checked, LineError):
                return checked
            callback_url = checked
            checked = self._dlr_url(sub, webhooks)
            if isinstance(checked, LineError):
                return checked
            dlr_url = checked
        try:
            segmentation = segment_text(sub.text)
        except ValueError as error:
            return LineError(str(error), ref, "text")
        dlr_mask = (sub.dlr_mask or 0) if dlr_url is not None else 0
        return Shared(segmentation, due_at, expires_at, callback_url, dlr_url, dlr_mask)

    def _messages(
        self,
        sub: Submission,
        origin: str,
        now: float,
        recipients: list[str],
        shared: Shared,
    ) -> list[Message] | LineError:
        """One Message per recipient, each normalised, routed, admitted and priced."""
        messages: list[Message] = []
        for raw in recipients:
            found = self._recipient(sub, raw, shared)
            if isinstance(found, LineError):
                return found
            to, bridges, price = found
            sender = sub.sender or self._senders.get(bridges[0])
            if messages:
                # The others as copies of the first with their own number, route, sender
                # and price: msgspec builds a Message from its 22 keywords at about ten
                # times the cost of replacing these five.
                messages.append(
                    msgspec.structs.replace(
                        messages[0],
                        to=to,
                        sender=sender,
                        cost=price[0],
                        currency=price[1],
                        bridges=bridges,
                    )
                )
            elif shared.used:
                messages.append(_first_of(sub, origin, now, shared, to, sender, price, bridges))
            else:  # the Shared part's first Message: built at once, no template
                shared.used = True
                messages.append(_message(sub, origin, now, shared, to, sender, price, bridges))
        return messages

    def _recipient(
        self, sub: Submission, raw: str, shared: Shared
    ) -> tuple[str, tuple[str, ...], tuple[float, str]] | LineError:
        """A recipient's number, its admitted bridges and its price (amount, currency).

        Recipients mostly share a route and a price prefix: each route is admitted once
        per Shared part, and each route and (bridge, number prefix, segments) price
        worked out once (MAX_REMEMBERED of each are kept before starting afresh)."""
        try:
            to = normalise(raw, self._region)
            # The route depends on the number's first `prefix_length` characters only.
            route_key = (sub.route, to[: self._prefix_length])
            route = self._routed.get(route_key)
            if route is None:
                route = self._router.route(to, sub.route)
                if len(self._routed) >= MAX_REMEMBERED:
                    self._routed.clear()
                self._routed[route_key] = route
        except (InvalidNumber, UnknownRoute) as error:
            return LineError(str(error), sub.id, "destination")
        bridges = shared.admitted.get(route)
        if bridges is None:
            admission = self._admit(route, sub, shared.segmentation)
            if isinstance(admission, LineError):
                return admission
            bridges = shared.admitted[route] = admission
        segments = shared.segmentation.segments
        table = self._prices[bridges[0]]
        # The price depends on the number's first `longest_prefix` digits only.
        price_key = (bridges[0], to[: table.longest_prefix + 1], segments)
        price = self._priced.get(price_key)
        if price is None:
            try:
                cost = message_cost(table, to, segments)
            except NoPriceError as error:
                return LineError(str(error), sub.id, "price")
            price = (cost.amount, cost.currency)
            if len(self._priced) >= MAX_REMEMBERED:
                self._priced.clear()
            self._priced[price_key] = price
        return to, bridges, price

    def _admit(
        self, route: tuple[str, ...], sub: Submission, segmentation: Segmentation
    ) -> tuple[str, ...] | LineError:
        """The bridges of `route` that take the message (engine.admission), or why none."""
        if self._admitter is None:
            return route
        taken = self._admitter.admit(
            route,
            sender=sub.sender,
            encoding=segmentation.encoding,
            units=segmentation.units,
            characters=len(sub.text),
            flash=sub.flash,
            validity_s=sub.validity_s,
        )
        if isinstance(taken, list):
            return LineError(describe_refusals(taken), sub.id, refusal_kind(taken[0]))
        return taken

    def _callback_url(
        self, sub: Submission, webhooks: AccountWebhooks | None
    ) -> str | LineError | None:
        """Where the events of a line with a callback_url or a dlr_url go: its own URL,
        checked (engine.webhooks.hosts), or none (its reports go to its dlr_url). A line
        with neither has the account's default (checked when the config was loaded)."""
        if sub.callback_url is not None and sub.dlr_url is not None:
            return LineError("callback_url and dlr_url cannot both be set", sub.id, "callback")
        if sub.callback_url is None:
            return None  # its reports go to its dlr_url instead
        if webhooks is None:
            return LineError("callback_url: this listener takes no webhooks", sub.id, "callback")
        refusal = hosts.check_url(sub.callback_url, webhooks)
        if refusal is not None:
            return LineError(hosts.describe(refusal), sub.id, "callback")
        return sub.callback_url

    def _dlr_url(self, sub: Submission, webhooks: AccountWebhooks | None) -> str | LineError | None:
        """Kannel's dlr-url, checked by the webhooks' host rules (no secret: it is a GET
        and carries no signature)."""
        url = sub.dlr_url
        if url is None:
            return None
        if not sub.dlr_mask:
            return LineError(
                "dlr_url needs a dlr_mask (Kannel's bits, 1 to 31)", sub.id, "callback"
            )
        if webhooks is None:
            return LineError("dlr_url: this listener takes no report URLs", sub.id, "callback")
        refusal = hosts.check_url(url, webhooks, signed=False)
        if refusal is not None:
            return LineError(hosts.describe(refusal), sub.id, "callback")
        return url


def describe_invalid(error: msgspec.ValidationError) -> str:
    """The sentence for a message object that does not fit a Submission."""
    return f"invalid message: {_describe(error)}"


def _describe(error: msgspec.ValidationError) -> str:
    """msgspec says "Object contains unknown field `x`" / "Expected `str`, got `int` - at
    `$.text`"; keep its precision, drop the backticks a person doesn't need."""
    text = str(error).replace("`", "'")
    if text.startswith("Object contains unknown field"):
        return "unknown field" + text[len("Object contains unknown field") :]
    if text.startswith("Object missing required field"):
        return "missing required field" + text[len("Object missing required field") :]
    return text[0].lower() + text[1:] if text else "invalid"
