"""The settings' keys as dotted paths, walked from the Structs. Pure: no I/O.

One walk serves two readers: `septet config check`, which names every key of a file that
no Struct has (with the nearest real key), and the test that keeps docs/configuration.md
complete (every key documented with its default, no documented key that is gone).

Paths are written as an operator reads them in TOML: `journal.path`; a table of named
tables takes `<name>` (`bridges.<name>.driver`, `pricing.<name>.currency`); an array of
tables takes `[]` (`smpp.accounts[].system_id`).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterator, Mapping
from typing import Any

import msgspec
from msgspec import inspect

NAMED = "<name>"


class SettingKey(msgspec.Struct, frozen=True, kw_only=True):
    """One key a settings file may set: where, and what it is when the file says nothing."""

    path: str
    required: bool
    default: Any = None


class UnknownKey(msgspec.Struct, frozen=True, kw_only=True):
    """A key a file sets that no Struct has; `nearest` a real key of that table, if close."""

    path: str
    nearest: str | None


def _unwrap(info: inspect.Type) -> inspect.Type:
    """The type behind constraints (`Meta`) and an optional `| None`."""
    while True:
        if isinstance(info, inspect.Metadata):
            info = info.type
        elif isinstance(info, inspect.UnionType):
            others = [t for t in info.types if not isinstance(t, inspect.NoneType)]
            if len(others) != 1:
                return info
            info = others[0]
        else:
            return info


def _nested(info: inspect.Type) -> tuple[str, inspect.StructType] | None:
    """(path step, Struct) for a field whose values are tables: a Struct, a table of
    named Structs, or an array of Structs; None for a plain value."""
    info = _unwrap(info)
    if isinstance(info, inspect.StructType):
        return "", info
    if isinstance(info, inspect.DictType):
        value = _unwrap(info.value_type)
        if isinstance(value, inspect.StructType):
            return f".{NAMED}", value
    if isinstance(info, inspect.ListType):
        item = _unwrap(info.item_type)
        if isinstance(item, inspect.StructType):
            return "[]", item
    return None


def _default(field: inspect.Field) -> Any:
    if field.default is not msgspec.NODEFAULT:
        return field.default
    if field.default_factory is not msgspec.NODEFAULT:
        return field.default_factory()
    return None


def setting_keys(root: type[msgspec.Struct]) -> list[SettingKey]:
    """Every key under `root`, in the Structs' field order."""
    info = inspect.type_info(root)
    assert isinstance(info, inspect.StructType)
    return list(_walk_keys(info, ""))


def _walk_keys(info: inspect.StructType, prefix: str) -> Iterator[SettingKey]:
    for field in info.fields:
        path = f"{prefix}{field.encode_name}"
        nested = _nested(field.type)
        if nested is not None:
            step, struct = nested
            yield from _walk_keys(struct, f"{path}{step}.")
        else:
            yield SettingKey(path=path, required=field.required, default=_default(field))


def unknown_keys(raw: Mapping[str, Any], root: type[msgspec.Struct]) -> list[UnknownKey]:
    """Every key of the decoded TOML `raw` that `root` does not have, in file order.
    Values of the wrong type are left to the typed decode, which names them."""
    info = inspect.type_info(root)
    assert isinstance(info, inspect.StructType)
    found: list[UnknownKey] = []
    _walk_raw(raw, info, "", found)
    return found


def _walk_raw(raw: Any, info: inspect.StructType, prefix: str, found: list[UnknownKey]) -> None:
    if not isinstance(raw, Mapping):
        return
    fields = {field.encode_name: field for field in info.fields}
    for key, value in raw.items():
        field = fields.get(key)
        if field is None:
            close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.6)
            nearest = f"{prefix}{close[0]}" if close else None
            found.append(UnknownKey(path=f"{prefix}{key}", nearest=nearest))
            continue
        nested = _nested(field.type)
        if nested is None:
            continue
        step, struct = nested
        path = f"{prefix}{key}"
        if step == "":
            _walk_raw(value, struct, f"{path}.", found)
        elif step == "[]" and isinstance(value, list):
            for index, item in enumerate(value):
                _walk_raw(item, struct, f"{path}[{index}].", found)
        elif isinstance(value, Mapping):
            for name, table in value.items():
                _walk_raw(table, struct, f"{path}.{name}.", found)


def describe_unknown(key: UnknownKey) -> str:
    """One sentence for an unknown key."""
    hint = f" (did you mean {key.nearest}?)" if key.nearest else ""
    return f"{key.path} is not a setting septet knows{hint}"


def render_default(key: SettingKey) -> str:
    """A key's default as the reference writes it: TOML values, `required` or `unset`."""
    if key.required:
        return "required"
    return render_value(key.default)


def render_value(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(msgspec.to_builtins(value), ensure_ascii=False, separators=(", ", " = "))
