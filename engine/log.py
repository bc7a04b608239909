"""structlog configuration, in one place: JSON lines on stderr, secrets redacted.

Every log event passes `Redactor` before it is rendered, and so do the records of the
standard library's loggers (aiohttp, asyncio), routed through the same pipeline. A
secret is caught three ways, because it does not always sit under a telling key:

1. the value of any key that names a secret (`password`, `api_key`, `token`, ...), at
   any depth;
2. inside any string: `name=value` pairs whose name names a secret, in a query string,
   a form body or a URL nested in one (percent-encoded: DSC's `dlrurl` carries the
   callback password inside the send URL), `user:password@` in URLs, `Bearer`/`Basic`
   credentials and `"password": "..."` in JSON text;
3. the configured credential values themselves, wherever they appear (and their
   percent-encoded forms), when the daemon passes them in.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any
from urllib.parse import quote, quote_plus

import structlog

from bridges.base import HttpCall
from engine.config import Settings

SECRET_KEYS = re.compile(
    r"pass(word|wd)?|pwd|secret|token|api[_-]?key|authorization|credential|cookie", re.I
)
REDACTED = "[redacted]"
# Names whose value in a query string or form is a secret. User names count: septet's
# callback URLs carry a user name meant for the provider alone (PROVIDERS.md, DSC dlrurl).
_CONFIDENTIAL_NAMES = (
    r"(?:[\w.\-\[\]]*?[_.\-\[])?(?:pass(?:word|wd)?|pwd|secret|token|api[_-]?key|apikey|auth\w*|"
    r"credential|signature|sig|key|user(?:name)?|login)"
)
# name=value, with `=` and `&` plain or percent-encoded once (a URL inside a query) or
# twice (a URL inside a URL inside a query).
_QUERY_SECRET = re.compile(
    r"(?:^|(?<=[^\w.\-])|(?<=%3F)|(?<=%26)|(?<=%253F)|(?<=%2526))"
    rf"(?P<name>{_CONFIDENTIAL_NAMES}\]?)(?P<equals>=|%3D|%253D)"
    r"(?P<value>(?:(?!%26|%2526|%23)[^&\s#\"'<>,;)\]])+)",
    re.I,
)
_URL_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.\-]*://)[^/\s:@]+:[^/\s@]+@", re.I)
_AUTH_SCHEME = re.compile(
    r"\b(?P<scheme>bearer|basic|digest|token)\s+[A-Za-z0-9._~+/=\-]{4,}", re.I
)
_JSON_SECRET = re.compile(
    r"(?P<name>[\"']?[\w\-]*(?:pass(?:word)?|secret|token|api[_-]?key|apikey|authorization)"
    r"[\"']?\s*:\s*[\"']?)(?P<value>[^\"'\s,}]+)",
    re.I,
)
# Known values shorter than this are not searched for as bare substrings: they collide
# with ordinary words (the embedded default's "demo"); passes 1 and 2 still cover them.
MIN_KNOWN_SECRET_CHARS = 6


def redact_text(text: str) -> str:
    """`text` with every pattern-recognisable secret (pass 2 of the module) replaced."""
    if "=" in text or "%3" in text.upper():
        text = _QUERY_SECRET.sub(lambda m: f"{m['name']}{m['equals']}{REDACTED}", text)
    if "@" in text:
        text = _URL_USERINFO.sub(lambda m: f"{m['scheme']}{REDACTED}@", text)
    if " " in text:
        text = _AUTH_SCHEME.sub(lambda m: f"{m['scheme']} {REDACTED}", text)
    if ":" in text:
        text = _JSON_SECRET.sub(lambda m: f"{m['name']}{REDACTED}", text)
    return text


def credential_values(settings: Settings) -> list[str]:
    """Every configured credential value of every bridge (pass 3 of the module)."""
    return [value for bridge in settings.bridges.values() for value in bridge.credentials.values()]


# A request body longer than this is cut in the debug log (a 100-recipient batch is long).
MAX_LOGGED_BODY_CHARS = 600


def describe_call(call: HttpCall) -> dict[str, Any]:
    """The fields of a `provider_request` debug event: everything the driver built, as
    mappings so key-based redaction applies (credentials travel in the query, headers or
    body, depending on the provider: PROVIDERS.md)."""
    body = call.body.decode("utf-8", "replace")
    if len(body) > MAX_LOGGED_BODY_CHARS:
        body = body[:MAX_LOGGED_BODY_CHARS] + f"... ({len(body)} characters)"
    return {
        "method": call.method,
        "path": call.path,
        "query": dict(call.query),
        "headers": dict(call.headers),
        "body": body,
    }


class Redactor:
    """Replaces secrets in log events and in any text: see the module docstring."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        forms: set[str] = set()
        for secret in secrets:
            if len(secret) >= MIN_KNOWN_SECRET_CHARS:
                forms.update({secret, quote(secret, safe=""), quote_plus(secret, safe="")})
                forms.add(quote(quote(secret, safe=""), safe=""))
        # Longest first, so a secret that contains another is replaced whole.
        self._known = sorted(forms, key=len, reverse=True)
        self._known_pattern = (
            re.compile("|".join(re.escape(form) for form in self._known)) if self._known else None
        )

    def text(self, text: str) -> str:
        if self._known_pattern is not None:
            text = self._known_pattern.sub(REDACTED, text)
        return redact_text(text)

    def value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, MutableMapping):
            for key in list(value):
                if isinstance(key, str) and SECRET_KEYS.search(key):
                    value[key] = REDACTED
                else:
                    value[key] = self.value(value[key])
            return value
        if isinstance(value, list | tuple | set | frozenset):
            return type(value)(self.value(item) for item in value)
        if isinstance(value, bytes | bytearray):
            return self.text(bytes(value).decode("utf-8", "replace"))
        if isinstance(value, BaseException):
            return self.text(f"{type(value).__name__}: {value}")
        return value

    def __call__(
        self, logger: Any, method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        """The structlog processor."""
        del logger, method
        redacted: MutableMapping[str, Any] = self.value(event)
        return redacted


def redact_secrets(
    logger: Any, method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """The structlog processor for passes 1 and 2 (no known values)."""
    return Redactor()(logger, method, event)


def configure_logging(fmt: str = "json", level: str = "info", secrets: Iterable[str] = ()) -> None:
    """JSON lines (or `console` text for people) on stderr at `level`; `secrets` are the
    configured credential values to redact wherever they appear."""
    redactor = Redactor(secrets)
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=False)
        if fmt == "console"
        else structlog.processors.JSONRenderer()
    )
    shared: list[Any] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    number = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            *shared,
            # Tracebacks become text before redaction: exception messages carry URLs.
            structlog.processors.format_exc_info,
            redactor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(number),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # The standard library's loggers (aiohttp, asyncio) go through the same redaction
    # and renderer; their debug chatter stays out even at --log-level debug.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                redactor,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(max(number, logging.INFO))
