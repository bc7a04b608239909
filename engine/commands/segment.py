"""`septet segment`: show a text's encoding, parts, units per part and, for a bridge, its cost.

Options are checked here rather than by argparse so that every bad one gets a single line
on stderr (argparse would print the usage block too) and exit code 2.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

import msgspec

from engine.pricing import NoPriceError, default_price_tables, message_cost
from engine.segment import (
    NATIONAL_LANGUAGES,
    Segmentation,
    SplitMode,
    count_units,
    segment_text,
)

_INTERNATIONAL_NUMBER = re.compile(r"\+[1-9][0-9]{6,14}")  # E.164: at most 15 digits
_json_encoder = msgspec.json.Encoder()


class UsageError(Exception):
    """A bad option: reported in one line, exit code 2."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", metavar="TEXT", help="the message text; '-' reads it from stdin")
    parser.add_argument("--json", action="store_true", help="print the segmentation as JSON")
    parser.add_argument(
        "--smart",
        action="store_true",
        help="replace typographic look-alikes (curly quotes, dashes, ...) by GSM characters",
    )
    parser.add_argument(
        "--national",
        metavar="LANGS",
        default="",
        help=f"national shift tables allowed, comma-separated ({','.join(NATIONAL_LANGUAGES)})",
    )
    parser.add_argument(
        "--concat-ref", metavar="8|16", default="8", help="concatenation reference bits"
    )
    parser.add_argument(
        "--split",
        metavar="grapheme|codepoint",
        default="grapheme",
        help="where parts may end (default: between grapheme clusters)",
    )
    parser.add_argument("--bridge", metavar="B", help="also show the cost on this bridge")
    parser.add_argument("--to", metavar="N", help="destination in international form (+250...)")
    parser.epilog = (
        "With TEXT '-', one trailing newline (the one shells and editors add) is dropped."
    )


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    del parser
    try:
        segmentation, cost = _evaluate(args)
    except UsageError as error:
        print(f"septet segment: {error}", file=sys.stderr)
        return 2
    if args.json:
        sys.stdout.write(_json_encoder.encode(_as_json(segmentation, cost)).decode() + "\n")
    else:
        sys.stdout.write(_as_text(segmentation, cost))
    return 0


def _evaluate(args: argparse.Namespace) -> tuple[Segmentation, dict[str, Any] | None]:
    if args.concat_ref not in ("8", "16"):
        raise UsageError(f"--concat-ref must be 8 or 16, not {args.concat_ref!r}.")
    if args.split not in ("grapheme", "codepoint"):
        raise UsageError(f"--split must be grapheme or codepoint, not {args.split!r}.")
    split: SplitMode = "grapheme" if args.split == "grapheme" else "codepoint"
    national = [code.strip() for code in args.national.split(",") if code.strip()]
    if args.bridge is not None and args.to is None:
        raise UsageError("--bridge needs --to: the cost depends on the destination.")
    if args.to is not None and args.bridge is None:
        raise UsageError("--to needs --bridge: prices are per bridge.")
    tables = default_price_tables()
    if args.bridge is not None and args.bridge not in tables:
        raise UsageError(f"unknown bridge {args.bridge!r}; known: {', '.join(sorted(tables))}.")
    if args.to is not None and not _INTERNATIONAL_NUMBER.fullmatch(args.to):
        raise UsageError(f"--to {args.to!r} is not an international number like +250788123456.")

    text: str = args.text
    if text == "-":
        text = sys.stdin.read()
        text = text.removesuffix("\n").removesuffix("\r") if text.endswith("\n") else text
    try:
        segmentation = segment_text(
            text, smart=args.smart, national=national, concat_ref=int(args.concat_ref), split=split
        )
    except ValueError as error:
        raise UsageError(str(error)) from None

    if args.bridge is None:
        return segmentation, None
    try:
        cost = message_cost(tables[args.bridge], args.to, segmentation.segments)
    except NoPriceError as error:
        raise UsageError(str(error)) from None
    return segmentation, {
        "bridge": args.bridge,
        "to": args.to,
        "amount": cost.amount,
        "currency": cost.currency,
        "per": cost.per,
        "unit_price": cost.unit_price,
        "quantity": cost.quantity,
        "prefix": cost.prefix,
    }


def _as_json(segmentation: Segmentation, cost: dict[str, Any] | None) -> dict[str, Any]:
    national = segmentation.national
    document: dict[str, Any] = {
        "encoding": segmentation.encoding,
        "segments": segmentation.segments,
        "units": segmentation.units,
        "per_segment": segmentation.per_segment,
        "parts": segmentation.parts,
        "smart_replaced": segmentation.smart_replaced,
        "national": None
        if national is None
        else {"locking": national.locking, "single": national.single},
        "udh": [header.hex() for header in segmentation.udh],
    }
    if cost is not None:
        document["cost"] = cost
    return document


def _as_text(segmentation: Segmentation, cost: dict[str, Any] | None) -> str:
    unit = "septets" if segmentation.encoding == "GSM-7" else "UTF-16 units"
    lines = [
        f"encoding   {segmentation.encoding}",
        f"segments   {segmentation.segments} (up to {segmentation.per_segment} {unit} each)",
        f"units      {segmentation.units} {unit}",
    ]
    if segmentation.smart_replaced:
        lines.append(f"smart      {segmentation.smart_replaced} look-alike(s) replaced")
    national = segmentation.national
    if national is not None:
        lines.append(
            f"national   locking shift {national.locking or 'default'}, "
            f"single shift {national.single or 'default'}"
        )
    width = len(str(segmentation.segments))
    for number, (part, header) in enumerate(
        zip(segmentation.parts, segmentation.udh, strict=True), start=1
    ):
        units = _part_units(segmentation, part)
        udh = f"  udh {header.hex()}" if header else ""
        lines.append(f"part {number:>{width}}     {units:>3} {unit}{udh}  {part!r}")
    if cost is not None:
        quantity = f"{cost['quantity']} x " if cost["per"] == "segment" else ""
        lines.append(
            f"cost       {cost['amount']:g} {cost['currency']} on {cost['bridge']} "
            f"({quantity}{cost['unit_price']:g} per {cost['per']}, "
            f"prefix {cost['prefix'] or 'default'})"
        )
    return "\n".join(lines) + "\n"


def _part_units(segmentation: Segmentation, part: str) -> int:
    return count_units(part, segmentation.encoding, segmentation.national)
