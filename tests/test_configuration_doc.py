"""docs/configuration.md stays complete: every key of the settings Structs (engine.config
and the Structs nested in them) is documented with its default, and no documented key is
gone. A failure names each key and what to write."""

from __future__ import annotations

import re
from pathlib import Path

from engine.config import Settings
from engine.config_keys import NAMED, render_default, setting_keys

REFERENCE = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
# "## `[journal]`", "## `[bridges.<name>]`", "## `[[smpp.accounts]]`" (an array of tables)
SECTION = re.compile(r"^##+ `(?P<open>\[\[?)(?P<name>[\w.<>]+)\]\]?`\s*$")
# "| `path` | `"septet.db"` | meaning |"
ROW = re.compile(r"^\| `(?P<key>[\w]+)` \| `(?P<default>[^`]*)` \|")


def documented_keys(text: str) -> dict[str, str]:
    """Dotted key -> the default its row states, for every row under a section heading."""
    keys: dict[str, str] = {}
    prefix: str | None = None
    for line in text.splitlines():
        section = SECTION.match(line)
        if section is not None:
            array = section["open"] == "[["
            prefix = section["name"] + ("[]." if array else ".")
            continue
        if line.startswith("#"):
            prefix = None  # a heading that is not a section: its tables are not settings
            continue
        row = ROW.match(line)
        if row is not None and prefix is not None:
            keys[prefix + row["key"]] = row["default"]
    return keys


def section_heading(path: str) -> str:
    section, _, _ = path.rpartition(".")
    if section.endswith("[]"):
        return f"## `[[{section[:-2]}]]`"
    return f"## `[{section}]`"


def test_every_setting_is_documented_with_its_default_and_no_documented_key_is_gone() -> None:
    documented = documented_keys(REFERENCE.read_text(encoding="utf-8"))
    problems: list[str] = []
    expected: set[str] = set()
    for key in setting_keys(Settings):
        expected.add(key.path)
        default = render_default(key)
        name = key.path.rpartition(".")[2]
        if key.path not in documented:
            problems.append(
                f"{key.path} is not documented: add the row | `{name}` | `{default}` | what it"
                f" does | under {section_heading(key.path)} in docs/configuration.md"
            )
        elif documented[key.path] != default:
            problems.append(
                f"{key.path} is documented with default `{documented[key.path]}`, but its"
                f" default is `{default}`: correct its row in docs/configuration.md"
            )
    for path in sorted(set(documented) - expected):
        problems.append(
            f"{path} is documented but is no setting (gone or renamed): remove or rename its"
            " row in docs/configuration.md"
        )
    assert not problems, "\n".join(problems)


def test_the_reader_finds_sections_of_every_shape() -> None:
    text = (
        '## `[journal]`\n| `path` | `"a.db"` | x |\n'
        f"## `[bridges.{NAMED}]`\n| `driver` | `required` | x |\n"
        "## `[[smpp.accounts]]`\n| `system_id` | `required` | x |\n"
        "### Not a section\n| `api_key` | `x` | not a setting row |\n"
    )
    assert documented_keys(text) == {
        "journal.path": '"a.db"',
        "bridges.<name>.driver": "required",
        "smpp.accounts[].system_id": "required",
    }
