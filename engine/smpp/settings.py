"""The `[smpp]` section of the settings: the server's limits and timers (its logins are the
accounts', engine.accounts).
Pure: no I/O.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from engine.smpp.codec import DEFAULT_MAX_COMMAND_LENGTH
from engine.smpp.session import BindType as BindType  # re-exported: engine.accounts
from engine.smpp.session import SessionTimers
from engine.smpp.text import Alphabet, Coding, coding_of


class SmppAccount(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One ESME login as the server reads it (engine.accounts.Account.smpp), and the
    entry of the deprecated `[[smpp.accounts]]` form, whose `throughput` (submit_sm per
    second, 0: unlimited) and `burst` become its account's messages_per_s and burst.

    `data_coding_0` and `data_coding_1` say which alphabet this account's clients mean
    by data_coding 0 and 1 (engine.smpp.text). Both default to "gsm", GSM 03.38 unpacked,
    what the common clients send there: smpplib, aiosmpplib and Kannel (without
    alt-charset) send GSM 03.38 as 0, and node-smpp sends it as 1 (its `ASCII` encoding,
    consts.ENCODING.ASCII = 0x01, is GSM 03.38). "latin1" suits Kannel's `alt-charset =
    ISO-8859-1` (for 0); "ascii" a client that sends IA5 as 1, as section 5.2.19 says.
    """

    system_id: str
    password: str
    bind_types: list[BindType] = msgspec.field(
        default_factory=lambda: ["transmitter", "receiver", "transceiver"]
    )
    throughput: float = 0.0
    burst: float | None = None
    data_coding_0: Alphabet = "gsm"
    data_coding_1: Alphabet = "gsm"

    def coding(self, data_coding: int) -> Coding:
        """How this account's submit_sm with `data_coding` is read (TextRefusedError for
        one septet cannot read)."""
        return coding_of(data_coding, zero=self.data_coding_0, one=self.data_coding_1)


class SmppSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The `[smpp]` section. Times in seconds; the defaults are the embedded default's."""

    listen: str | None = "127.0.0.1:2775"
    system_id: str = "septet"
    # Deprecated: the logins are [accounts.NAME.smpp] now (engine.config folds these in).
    accounts: list[SmppAccount] | None = None
    # Requests read from one session and not yet answered; past it the server stops
    # reading that socket, so a client that ignores its window feels TCP backpressure.
    window: int = 64
    # deliver_sm receipts sent to one session and not yet acknowledged.
    receipt_window: int = 16
    # submit_sm in progress in the whole server; past it: ESME_RTHROTTLED.
    max_pending: int = 4096
    # How long a submit_sm may wait for room in a full bridge queue before it is answered
    # ESME_RTHROTTLED (nothing journaled); 0 throttles at once. Well under the ESME's
    # response timer (often 10-30 s), so a slow answer is never taken for a lost one.
    congestion_wait_s: Annotated[float, msgspec.Meta(ge=0)] = 2.0
    max_connections: int = 1000
    max_command_length: int = DEFAULT_MAX_COMMAND_LENGTH
    session_init_s: float = 10.0
    enquire_link_s: float = 30.0
    response_s: float = 10.0
    inactivity_s: float = 120.0
    reassembly_timeout_s: float = 300.0
    receipt_retry_s: float = 30.0
    max_failed_binds: int = 5
    failed_bind_window_s: float = 300.0

    @property
    def timers(self) -> SessionTimers:
        return SessionTimers(
            session_init_s=self.session_init_s,
            enquire_link_s=self.enquire_link_s,
            response_s=self.response_s,
            inactivity_s=self.inactivity_s,
        )
