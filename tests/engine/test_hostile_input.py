"""Hostile input: arbitrary bytes and near-valid documents never crash the NDJSON reader or
the config loader; each gets a clear error instead."""

from __future__ import annotations

import tempfile
from pathlib import Path

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.config import ConfigError, load_settings
from engine.ingress.ndjson import LineSplitter
from engine.ingress.prepare import LineError, LinePreparer
from engine.pricing import default_price_tables
from engine.routing import Router, default_routes

BRIDGES = ("dsc", "routemobile", "bsg", "smsclub")


def preparer() -> LinePreparer:
    return LinePreparer(
        router=Router(default_routes(), ("routemobile", "bsg"), BRIDGES),
        prices=default_price_tables(),
        default_senders=dict.fromkeys(BRIDGES, "SEPTET"),
        max_text_chars=1600,
        max_recipients=1000,
        default_region=None,
    )


PREPARER = preparer()

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
fields = st.sampled_from(
    [
        "to",
        "text",
        "id",
        "from",
        "route",
        "dlr",
        "flash",
        "schedule_at",
        "validity_s",
        "priority",
        "colour",
    ]
)
near_valid = st.dictionaries(fields, json_values, max_size=8)


def check(result: object) -> None:
    if isinstance(result, LineError):
        assert result.error  # a sentence, never empty
        assert "Traceback" not in result.error
    else:
        assert isinstance(result, list)
        assert result  # an accepted line has at least one message


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_arbitrary_bytes_are_answered_never_raised(line: bytes) -> None:
    check(PREPARER.prepare(line, "fuzz", 1_700_000_000.0))


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(near_valid)
def test_near_valid_objects_are_answered_never_raised(document: dict[str, object]) -> None:
    check(PREPARER.prepare(msgspec.json.encode(document), "fuzz", 1_700_000_000.0))


@settings(max_examples=200)
@given(st.lists(st.binary(max_size=64), max_size=20), st.integers(1, 50))
def test_line_splitter_never_returns_a_line_over_the_cap(chunks: list[bytes], cap: int) -> None:
    splitter = LineSplitter(cap)
    for chunk in chunks:
        for line in splitter.feed(chunk):
            assert line is None or len(line) <= cap
    last = splitter.finish()
    assert last is None or len(last) <= cap


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400) | st.text(max_size=400).map(str.encode))
def test_config_loader_gives_a_config_error_or_settings(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "septet.toml"
        path.write_bytes(raw)
        try:
            load_settings(path, environ={})
        except ConfigError as error:
            message = str(error)
        else:
            message = "loaded"
        assert message  # either settings or a sentence naming the problem
