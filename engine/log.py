"""structlog, configured once: JSON lines on stderr or a file, secrets and personal data masked.

Every log event passes `Redactor` before it is rendered, and so do the records of the
standard library's loggers (aiohttp, asyncio), routed through the same pipeline.
Redaction goes by *place*, never by searching for a value: a configured credential
that happens to be an ordinary word ("demo") must not blank that word out of a journal
path or a message text. The places:

1. the value of any key that names a secret (`password`, `api_key`, `token`, `user`,
   `Authorization`, `X-API-Key`, ...), at any depth of an event;
2. inside any string: `name=value` pairs whose name names a secret, in a query string,
   a form body or a URL nested in one (percent-encoded: DSC's `dlrurl` carries the
   callback password inside the send URL), `user:password@` in URLs, `Bearer`/`Basic`
   credentials and `"password": "..."` in JSON text;
3. personal data, unless `[log] personal_data = true`: the value of a key that names a
   phone number (`to`, `msisdn`, `destination`, ...) is masked to `+25078****800`, and
   of a key that names a message text (`text`, `message`, ...) becomes its length and a
   short hash (the same text gives the same hash, so lines can still be matched up).

A provider request or callback body is logged as its fields (a JSON object or a form
decoded), so the same keys apply inside it; a body that is neither is logged as its
length and hash unless personal data is allowed.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import re
import sys
import threading
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import parse_qsl

import msgspec
import structlog

from bridges.base import HttpCall

# A key whose value is a secret: the whole key, maybe after a prefix ending in a separator
# (`callback_password`, `x-api-key`, `user[password]`).
_CONFIDENTIAL_NAMES = (
    r"pass(?:word|wd)?|pwd|secret|token|api[_-]?key|apikey|key|auth\w*|credentials?|cookie|"
    r"signature|sig|user(?:name)?|login"
)
SECRET_KEYS = re.compile(rf"(?:[\w.\-\[\]]*?[_.\-\[])?(?:{_CONFIDENTIAL_NAMES})\]?", re.I)
# A key whose value is a phone number, or a list of them (SMPP's and the providers' names).
PHONE_KEYS = re.compile(
    r"to|msisdn|msisdns|phones?|phone_?numbers?|destinations?|destination_addr|source_addr|"
    r"recipients?|mobile|mobile_?number|s?mobile_?no|dnis|ani|dst|dest|digits",
    re.I,
)
# A key whose value is a message text.
# A key whose value is a message text; a request `body` that is not fields is one too.
TEXT_KEYS = re.compile(r"text|message|msg|short_message|message_payload|sms|content|body", re.I)
REDACTED = "[redacted]"
# name=value, with `=` and `&` plain or percent-encoded once (a URL inside a query) or
# twice (a URL inside a URL inside a query).
_QUERY_SECRET = re.compile(
    r"(?:^|(?<=[^\w.\-])|(?<=%3F)|(?<=%26)|(?<=%253F)|(?<=%2526))"
    rf"(?P<name>(?:[\w.\-\[\]]*?[_.\-\[])?(?:{_CONFIDENTIAL_NAMES})\]?)(?P<equals>=|%3D|%253D)"
    r"(?P<value>(?:(?!%26|%2526|%23)[^&\s#\"'<>,;)\]])+)",
    re.I,
)
_URL_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.\-]*://)[^/\s:@]+(?::[^/\s@]*)?@", re.I)
_AUTH_SCHEME = re.compile(
    r"\b(?P<scheme>bearer|basic|digest|token)\s+[A-Za-z0-9._~+/=\-]{4,}", re.I
)
_JSON_SECRET = re.compile(
    r"(?P<name>[\"']?[\w\-]*(?:pass(?:word)?|secret|token|api[_-]?key|apikey|authorization)"
    r"[\"']?\s*:\s*[\"']?)(?P<value>[^\"'\s,}]+)",
    re.I,
)
# A list longer than this in a logged body keeps its first items and a count.
MAX_LOGGED_ITEMS = 5


def redact_text(text: str) -> str:
    """`text` with every secret that sits in a recognisable place (pass 2) replaced."""
    if "=" in text or "%3" in text.upper():
        text = _QUERY_SECRET.sub(lambda m: f"{m['name']}{m['equals']}{REDACTED}", text)
    if "@" in text:
        text = _URL_USERINFO.sub(lambda m: f"{m['scheme']}{REDACTED}@", text)
    if " " in text:
        text = _AUTH_SCHEME.sub(lambda m: f"{m['scheme']} {REDACTED}", text)
    if ":" in text:
        text = _JSON_SECRET.sub(lambda m: f"{m['name']}{REDACTED}", text)
    return text


def mask_number(number: str) -> str:
    """A phone number with its middle digits hidden: `+250788100800` -> `+25078****800`.
    A comma-separated list (Route Mobile's `destination`) is masked number by number."""
    if "," in number:
        return ",".join(mask_number(part) for part in number.split(","))
    digits = number.strip()
    if len(digits) >= 10:
        return f"{digits[:-7]}****{digits[-3:]}"
    if len(digits) > 4:
        return f"{'*' * (len(digits) - 2)}{digits[-2:]}"
    return "*" * len(digits)


def mask_text(text: str) -> str:
    """A message text as its length and a short hash: no word of it is logged."""
    data = text.encode("utf-8", "surrogatepass")
    digest = hashlib.sha256(data).hexdigest()[:12]
    return f"[{len(text)} chars, sha256 {digest}]"


def _maskable(value: Any) -> bool:
    """Whether `value` is data to mask whole: a string, a number, or a list of them (a
    mapping under a personal key is walked instead: a request body's fields)."""
    if isinstance(value, list | tuple):
        return all(_maskable(item) for item in value)
    return isinstance(value, str | bytes | int) and not isinstance(value, bool)


def _masked(value: Any, mask: Callable[[str], str]) -> Any:
    if isinstance(value, list | tuple):
        return [_masked(item, mask) for item in value]
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return mask(text) if text else text


def decode_body(body: bytes) -> Any:
    """A request body as fields where it is a JSON document or a form (so redaction
    applies by key inside it), otherwise as text (under the `body` key, `Redactor` masks
    it unless personal data may be logged). Long lists keep their first items."""
    text = body.decode("utf-8", "replace")
    stripped = text.strip()
    if not stripped:
        return ""
    if stripped[0] in "{[":
        # Not JSON after all (a provider's text reply that starts with a bracket): it is
        # logged as text, below.
        with contextlib.suppress(msgspec.DecodeError):
            return _shorten(msgspec.json.decode(body))
    elif "=" in stripped and not any(c.isspace() for c in stripped):
        try:
            pairs = parse_qsl(stripped, keep_blank_values=True, strict_parsing=True)
        except ValueError:
            pairs = []
        if pairs:
            fields: dict[str, Any] = {}
            for key, value in pairs:
                fields[key] = [*fields[key], value] if key in fields else value
            return _shorten(fields)
    return text


def _shorten(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _shorten(item) for key, item in value.items()}
    if isinstance(value, list):
        kept = [_shorten(item) for item in value[:MAX_LOGGED_ITEMS]]
        if len(value) > MAX_LOGGED_ITEMS:
            kept.append(f"... ({len(value)} items)")
        return kept
    return value


def describe_call(call: HttpCall) -> dict[str, Any]:
    """The fields of a `provider_request` debug event: everything the driver built, as
    mappings so key-based redaction applies (credentials travel in the query, headers or
    body, depending on the provider: docs/providers.md)."""
    return {
        "method": call.method,
        "path": call.path,
        "query": dict(call.query),
        "headers": dict(call.headers),
        "body": decode_body(call.body),
    }


class Redactor:
    """Replaces secrets, and personal data unless allowed, by place: see the module
    docstring."""

    def __init__(self, *, personal_data: bool = False) -> None:
        self.personal_data = personal_data

    def text(self, text: str) -> str:
        return redact_text(text)

    def value(self, value: Any) -> Any:
        if isinstance(value, str):
            return redact_text(value)
        if isinstance(value, MutableMapping):
            for key in list(value):
                value[key] = self._field(key, value[key])
            return value
        if isinstance(value, list | tuple | set | frozenset):
            return type(value)(self.value(item) for item in value)
        if isinstance(value, bytes | bytearray):
            return redact_text(bytes(value).decode("utf-8", "replace"))
        if isinstance(value, BaseException):
            return redact_text(f"{type(value).__name__}: {value}")
        return value

    def _field(self, key: object, value: Any) -> Any:
        if not isinstance(key, str):
            return self.value(value)
        if SECRET_KEYS.fullmatch(key):
            return REDACTED
        if not self.personal_data and _maskable(value):
            if PHONE_KEYS.fullmatch(key):
                return _masked(value, mask_number)
            if TEXT_KEYS.fullmatch(key):
                return _masked(self.value(value), mask_text)
        return self.value(value)

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
    """The structlog processor with personal data masked."""
    return Redactor()(logger, method, event)


class LogFile(io.TextIOBase):
    """The log's file (`[log] file`), appended to, line by line; `reopen` swaps in a fresh
    handle on the same path (SIGHUP, after logrotate moved the old file away). Writers on
    other threads (the journal's) share it, so a lock guards the swap."""

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path)
        self._lock = threading.Lock()
        self._file = self._open()

    def _open(self) -> TextIO:
        return self.path.open("a", encoding="utf-8", buffering=1)

    def write(self, text: str) -> int:
        with self._lock:
            return self._file.write(text)

    def flush(self) -> None:
        with self._lock:
            self._file.flush()

    def reopen(self) -> None:
        """Open the path again (a new file if it was moved), then close the old handle.
        Raises OSError, keeping the old handle, when the path cannot be opened."""
        fresh = self._open()
        with self._lock:
            old, self._file = self._file, fresh
        old.close()

    def close(self) -> None:
        if self.closed:
            return
        super().close()  # flushes first
        with self._lock:
            self._file.close()


def open_log_output(file: str | None) -> LogFile | None:
    """The `[log] file` to write to (None: stderr). Raises OSError naming nothing: the
    caller says which file could not be opened."""
    return LogFile(file) if file else None


def configure_logging(
    fmt: str = "json",
    level: str = "info",
    *,
    personal_data: bool = False,
    output: LogFile | None = None,
) -> None:
    """JSON lines (or `console` text for people) at `level`, on `output` (a `LogFile`)
    or stderr; phone numbers and message texts are masked unless `personal_data`
    (config `[log] personal_data`)."""
    stream: Any = output if output is not None else sys.stderr
    redactor = Redactor(personal_data=personal_data)
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
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=True,
    )
    # The standard library's loggers (aiohttp, asyncio) go through the same redaction
    # and renderer; their debug chatter stays out even at --log-level debug.
    handler = logging.StreamHandler(stream)
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
