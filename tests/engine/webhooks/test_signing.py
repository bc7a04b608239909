"""The webhook signature, verified by the very snippet receivers get (docs/webhooks.md, README)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine.webhooks.signing import signature

ROOT = Path(__file__).resolve().parents[3]
DOCS = (ROOT / "docs" / "webhooks.md", ROOT / "README.md")


def documented_verifier(doc: Path = DOCS[0]) -> Callable[..., bool]:
    """The Python block between the doc's verify-snippet markers, run as written."""
    text = doc.read_text()
    match = re.search(
        r"<!-- verify-snippet -->\s*```python\n(.*?)```\s*<!-- /verify-snippet -->", text, re.S
    )
    assert match is not None, f"{doc.name} lost its verification snippet"
    namespace: dict[str, Any] = {}
    exec(compile(match[1], str(doc), "exec"), namespace)  # noqa: S102 - our own doc's code
    verify: Callable[..., bool] = namespace["verify_septet_signature"]
    return verify


BODY = b'{"event_id":7,"event":"dlr","id":null,"msg_id":"3","ts":"2026-12-06T09:12:01Z"}'


@pytest.mark.parametrize("doc", DOCS, ids=lambda doc: doc.name)
def test_the_documented_snippet_verifies_septets_signature(doc: Path) -> None:
    verify = documented_verifier(doc)
    header = signature("s3cret", 1_765_012_321, BODY)
    assert re.fullmatch(r"t=1765012321,v1=[0-9a-f]{64}", header)
    assert verify("s3cret", header, BODY, now=1_765_012_321 + 10)


def test_the_snippet_refuses_what_it_should() -> None:
    verify = documented_verifier()
    header = signature("s3cret", 1_765_012_321, BODY)
    now = 1_765_012_321.0
    assert not verify("other", header, BODY, now=now)  # wrong secret
    assert not verify("s3cret", header, BODY.replace(b"dlr", b"DLR"), now=now)  # altered body
    assert not verify("s3cret", header, BODY, now=now + 301)  # too old: a replay
    assert not verify("s3cret", header.replace("t=1765012321", "t=1765012322"), BODY, now=now)
    assert not verify("s3cret", "garbage", BODY, now=now)
    assert not verify("s3cret", "t=x,v1=00", BODY, now=now)


def test_the_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    # A fixed vector, so a change of the scheme cannot pass unnoticed.
    assert signature("key", 1, b"{}") == (
        "t=1,v1=1ba6b8171186efc613e8bcc0cbdab2748f24984d7c5a84faa2637afa0e40d224"
    )
