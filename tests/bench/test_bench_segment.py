"""bench.segment --quick writes the results JSON every bench shares (bench/common.py)."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from bench import segment as bench_segment


@pytest.mark.slow
def test_quick_run_writes_results(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "segment.json"
    assert bench_segment.main(["--quick", "--out", str(out)]) == 0
    assert "median µs" in capsys.readouterr().out
    document = msgspec.json.decode(out.read_bytes())
    assert document["bench"] == "segment"
    assert document["quick"] is True
    rows = document["results"]
    assert {(row["input"], row["implementation"]) for row in rows} == {
        (name, implementation)
        for name in ("gsm_56", "gsm_400_ext", "emoji_200")
        for implementation in ("septet", "smsutil.split", "gsm0338 codec")
    }
    assert all(row["median_us"] > 0 and row["repeats"] == 3 for row in rows)
    ours = {row["input"]: row for row in rows if row["implementation"] == "septet"}
    assert {name: row["segments"] for name, row in ours.items()} == {
        "gsm_56": 1,
        "gsm_400_ext": 3,
        "emoji_200": 4,
    }
    assert all(row["parts_cut_inside_clusters"] == 0 for row in ours.values())
    assert all(row["speedup_vs_fastest_peer"] > 0 for row in ours.values())


def test_inputs_are_what_the_bench_promises() -> None:
    inputs = bench_segment.INPUTS
    assert [len(text) for text in inputs.values()] == [56, 400, 200]
    extension = sum(inputs["gsm_400_ext"].count(c) for c in "^{}\\[]~|€")
    assert 15 <= extension <= 25


def test_cut_counter_sees_a_split_flag() -> None:
    text = "ab\U0001f1f7\U0001f1fc"
    assert bench_segment.cuts_inside_clusters(text, ["ab\U0001f1f7", "\U0001f1fc"]) == 1
    assert bench_segment.cuts_inside_clusters(text, ["ab", "\U0001f1f7\U0001f1fc"]) == 0
