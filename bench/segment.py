"""Bench: microseconds per message for engine.segment.segment_text beside the Python peers.

Three inputs: a 56-character GSM text, a 400-character GSM text with 18 extension
characters, and a 200-character text with emoji. Peers, in the same run: smsutil.split
(encoding choice and parts) and the gsm0338 codec (encoding only, falling back to UTF-16
when the text is not GSM, which is the choice a caller makes with it). Each figure is the
median of several timeit repeats; `parts_cut_inside_clusters` counts the part edges a peer
puts inside a grapheme cluster, an escape pair or a surrogate pair (septet puts none).

    python -m bench.segment [--quick] [--out FILE]
"""

from __future__ import annotations

import timeit
from collections.abc import Callable, Sequence
from typing import Any

import gsm0338  # registers the "gsm03.38" codec
import regex
import smsutil

from bench.common import base_parser, format_table, median, write_results
from engine.segment import segment_text

NAME = "segment"

SHORT_GSM = "Your verification code is 482913. It expires in 10 min."
LONG_GSM = (
    "Dear customer, order #4821 {express} ships today [tracking AB-1234]; "
    "pay at https://pay.example/x?a=1|b=2 ~ thanks! "
) * 4
EMOJI = (
    "Hi team 👋 great launch 🚀🎉 see you at 10:00 👩‍💻 in Kigali 🇷🇼 "
    "bring snacks 🍕🍩 and good vibes 👍🏽 "
) * 3

INPUTS: dict[str, str] = {
    "gsm_56": SHORT_GSM + "!",
    "gsm_400_ext": (LONG_GSM * 2)[:400],
    "emoji_200": (EMOJI * 2)[:200],
}

_CLUSTER = regex.compile(r"\X")


def septet_parts(text: str) -> list[str]:
    return segment_text(text).parts


def smsutil_parts(text: str) -> list[str]:
    return [part.content for part in smsutil.split(text).parts]


def gsm0338_encode(text: str) -> bytes:
    try:
        encoded: bytes = text.encode(gsm0338.Codec.NAME)
    except UnicodeEncodeError:
        encoded = text.encode("utf-16-be")
    return encoded


IMPLEMENTATIONS: dict[str, Callable[[str], object]] = {
    "septet": segment_text,
    "smsutil.split": smsutil.split,
    "gsm0338 codec": gsm0338_encode,
}
PARTS: dict[str, Callable[[str], list[str]]] = {
    "septet": septet_parts,
    "smsutil.split": smsutil_parts,
}


def cuts_inside_clusters(text: str, parts: Sequence[str]) -> int:
    edges, position = set(), 0
    for cluster in _CLUSTER.findall(text):
        position += len(cluster)
        edges.add(position)
    cuts, position = 0, 0
    for part in parts[:-1]:
        position += len(part)
        cuts += position not in edges
    return cuts


def time_per_call_us(function: Callable[[str], object], text: str, *, quick: bool) -> list[float]:
    timer = timeit.Timer("function(text)", globals={"function": function, "text": text})
    if quick:
        number, repeats = 100, 3
    else:
        number, _ = timer.autorange()  # calls per repeat so that one repeat takes >= 0.2 s
        repeats = 7
    return [seconds / number * 1e6 for seconds in timer.repeat(repeat=repeats, number=number)]


def run(*, quick: bool) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    for input_name, text in INPUTS.items():
        for implementation, function in IMPLEMENTATIONS.items():
            samples = time_per_call_us(function, text, quick=quick)
            parts = PARTS[implementation](text) if implementation in PARTS else None
            results.append(
                {
                    "input": input_name,
                    "characters": len(text),
                    "implementation": implementation,
                    "median_us": round(median(samples), 4),
                    "min_us": round(min(samples), 4),
                    "repeats": len(samples),
                    "segments": None if parts is None else len(parts),
                    "parts_cut_inside_clusters": None
                    if parts is None
                    else cuts_inside_clusters(text, parts),
                }
            )
    for input_name in INPUTS:
        rows = [row for row in results if row["input"] == input_name]
        ours = next(row for row in rows if row["implementation"] == "septet")
        fastest_peer = min(row["median_us"] for row in rows if row is not ours)
        ours["speedup_vs_fastest_peer"] = round(fastest_peer / ours["median_us"], 1)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = base_parser(NAME, __doc__.splitlines()[0] if __doc__ else NAME)
    args = parser.parse_args(argv)
    results = run(quick=args.quick)
    headers = ["input", "implementation", "median µs", "min µs", "segments", "bad cuts", "speedup"]
    rows = [
        [
            row["input"],
            row["implementation"],
            row["median_us"],
            row["min_us"],
            "-" if row["segments"] is None else row["segments"],
            "-" if row["parts_cut_inside_clusters"] is None else row["parts_cut_inside_clusters"],
            f"{row['speedup_vs_fastest_peer']}x" if "speedup_vs_fastest_peer" in row else "",
        ]
        for row in results
    ]
    print(format_table(headers, rows))
    path = write_results(NAME, results, quick=args.quick, out=args.out)
    print(f"results written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
