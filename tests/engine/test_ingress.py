"""Ingress line splitting: lines, partial lines, and over-long lines never buffered whole."""

from __future__ import annotations

from engine.ingress import LineSplitter


def test_complete_and_partial_lines() -> None:
    splitter = LineSplitter(100)
    assert splitter.feed(b'{"a":1}\n{"b"') == [b'{"a":1}']
    assert splitter.feed(b":2}\n\n") == [b'{"b":2}', b""]
    assert splitter.finish() is None


def test_last_line_without_newline_is_returned_at_end() -> None:
    splitter = LineSplitter(100)
    assert splitter.feed(b"abc") == []
    assert splitter.finish() == b"abc"


def test_overlong_line_is_reported_once_and_skipped_as_it_arrives() -> None:
    splitter = LineSplitter(10)
    assert splitter.feed(b"x" * 8) == []
    assert splitter.feed(b"x" * 8) == [None]  # outgrew the cap: rejected now
    assert splitter.feed(b"x" * 1000) == []  # still the same line: skipped, not kept
    assert splitter.feed(b"yy\nok\n") == [b"ok"]


def test_overlong_line_inside_one_chunk() -> None:
    splitter = LineSplitter(5)
    assert splitter.feed(b"123456789\nabc\n") == [None, b"abc"]


def test_line_exactly_at_the_cap_is_kept() -> None:
    splitter = LineSplitter(5)
    assert splitter.feed(b"12345\n") == [b"12345"]
    assert splitter.feed(b"123") == []
    assert splitter.feed(b"45\n") == [b"12345"]
