"""The webhook signature: HMAC-SHA256 over "{timestamp}.{body}" with the account's secret. Pure.

Header: `Septet-Signature: t=<unix seconds>,v1=<hex digest>`. The receiver recomputes the
digest over the timestamp it is given, a dot and the raw body bytes, compares in constant
time, and refuses a timestamp too far from its clock (a replay). docs/webhooks.md has the
verification code, which tests/engine/test_webhooks.py runs as written there.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

SIGNATURE_HEADER: Final = "Septet-Signature"
EVENT_ID_HEADER: Final = "Septet-Event-Id"


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The `Septet-Signature` header value of `body` sent at `timestamp`."""
    digest = hmac.new(secret.encode(), b"%d." % timestamp + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"
