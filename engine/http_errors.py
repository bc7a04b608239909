"""The HTTP seam's exception tree, and what every transport shares. Pure: no I/O.

A caller of `engine.http_io.BridgeClient` sees only an `HttpReply` or one of these, never
a library's own exception:

    TransportError                 maybe_sent: may the provider have received the request?
    ├── ConnectFailed              maybe_sent=False: refused, DNS, connect or pool timeout,
    │                              client closed; resending cannot double-send
    ├── ReplyLost                  maybe_sent=True: written (or possibly written), no complete
    │                              reply: read timeout, reset or disconnect mid-reply
    └── ReplyTooLarge              maybe_sent=True: a reply arrived but its body passed the cap

An HTTP error status (4xx, 5xx) is a reply, not an exception: the driver reads it.
"""

from __future__ import annotations

# A provider's answer to a send or a status poll is a few KiB at most; anything past this
# is a misbehaving endpoint, not a reply a driver could parse.
DEFAULT_MAX_REPLY_BYTES = 1024 * 1024


class TransportError(Exception):
    """The request could not be completed; `maybe_sent` says whether it may have arrived."""

    maybe_sent: bool = True


class ConnectFailed(TransportError):  # noqa: N818 -- the seam's API names
    """Nothing was sent: the connection (or a free pooled one) could not be had."""

    maybe_sent = False


class ReplyLost(TransportError):  # noqa: N818 -- the seam's API names
    """The request was (or may have been) written, but no complete reply came back."""

    maybe_sent = True


class ReplyTooLarge(TransportError):  # noqa: N818 -- the seam's API names
    """The provider answered with a body larger than the client accepts."""

    maybe_sent = True
