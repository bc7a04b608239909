"""The repository holds no secret: no private key, no credentials file, no API token.

Credentials reach septet through its config file or the environment (`env:NAME` values,
engine/config.py); the simulators' accounts in the embedded default config are the
simulators' own and open nothing. This scans every tracked file for what a real secret
looks like: key and token formats and files that exist to hold credentials.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Formats whose presence is a leak whatever the context.
SECRET_PATTERNS = {
    "private key": re.compile(rb"-----BEGIN (?:[A-Z]+ )*PRIVATE KEY-----"),
    "AWS access key id": re.compile(rb"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "GitHub token": re.compile(rb"\bgh[pousr]_[A-Za-z0-9]{36,}\b"),
    "Slack token": re.compile(rb"\bxox[abposr]-[A-Za-z0-9-]{10,}"),
    "Google API key": re.compile(rb"\bAIza[0-9A-Za-z_\-]{35}\b"),
    "Stripe live key": re.compile(rb"\b[sr]k_live_[0-9A-Za-z]{16,}"),
    "PyPI token": re.compile(rb"\bpypi-AgEIcHlwaS5vcmc[A-Za-z0-9_\-]{20,}"),
    # A user and password in a URL, unless the host is this machine or a documentation
    # domain (RFC 2606: example.com/.org/.net), as in the log redaction tests.
    "credentials in a URL": re.compile(
        rb"\bhttps?://[^/\s:@'\"]+:[^/\s:@'\"]{6,}@"
        rb"(?!127\.0\.0\.1|localhost|(?:[\w-]+\.)*example\.(?:com|org|net)\b)"
    ),
}
# Files that exist to hold credentials.
SECRET_FILE_NAME = re.compile(
    r"(^|/)(\.env(\..*)?|\.netrc|\.pypirc|id_(rsa|dsa|ecdsa|ed25519)|.*\.(pem|key|p12|pfx|jks))$"
)


def tracked_files() -> list[str]:
    try:
        listing = subprocess.run(
            ["git", "ls-files", "-z"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        # Not a git checkout (an unpacked sdist): every file but caches and environments.
        return [
            path.relative_to(ROOT).as_posix()
            for path in ROOT.rglob("*")
            if path.is_file()
            and not any(
                part.startswith(".") or part == "__pycache__" or part.endswith(".egg-info")
                for part in path.relative_to(ROOT).parts[:-1]
            )
        ]
    return [name for name in listing.decode().split("\0") if name]


def test_the_scan_sees_the_whole_repository() -> None:
    files = tracked_files()
    assert "pyproject.toml" in files
    assert "engine/config.py" in files
    assert len(files) > 100


def test_no_tracked_file_is_a_credentials_file() -> None:
    assert [name for name in tracked_files() if SECRET_FILE_NAME.search(name)] == []


def test_no_tracked_file_holds_a_key_or_token() -> None:
    found = []
    for name in tracked_files():
        path = ROOT / name
        if not path.is_file():
            continue  # deleted in the working tree, not yet committed
        data = path.read_bytes()
        found += [
            f"{name}: {kind}" for kind, pattern in SECRET_PATTERNS.items() if pattern.search(data)
        ]
    assert found == []


# Each sample is split in two so that this file does not match its own scan.
@pytest.mark.parametrize(
    ("kind", "sample"),
    [
        ("private key", b"-----BEGIN RSA " + b"PRIVATE KEY-----\nMIIE"),
        ("private key", b"-----BEGIN " + b"PRIVATE KEY-----"),
        ("AWS access key id", b"aws_access_key_id = AKIA" + b"IOSFODNN7EXAMPLE"),
        ("GitHub token", b"token: ghp_" + b"a1B2" * 9),
        ("credentials in a URL", b"base_url = 'https://acme:s3cretpass" + b"@api.acme-sms.io/'"),
    ],
)
def test_the_patterns_catch_what_they_name(kind: str, sample: bytes) -> None:
    assert SECRET_PATTERNS[kind].search(sample)


def test_the_patterns_pass_local_test_urls_and_plain_words() -> None:
    harmless = (
        b"http://user:password@127.0.0.1:9760/ https://admin:hunter2@example.org/x"
        b" a private key-value store AKIA"
    )
    assert [kind for kind, p in SECRET_PATTERNS.items() if p.search(harmless)] == []
