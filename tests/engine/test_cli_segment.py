"""`septet segment`, run in-process through engine.cli.main and once as a real subprocess."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from engine.cli import main


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["segment", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_plain_output_reads_at_a_glance(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "a" * 161)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == "encoding   GSM-7"
    assert lines[1] == "segments   2 (up to 153 septets each)"
    assert lines[2] == "units      161 septets"
    assert lines[3].startswith("part 1     153 septets  udh 050003000201  'aaa")
    assert lines[4].startswith("part 2       8 septets  udh 050003000202  'aaa")


def test_json_output_has_the_design_shape(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "Hello [world]", "--json")
    assert code == 0
    assert msgspec.json.decode(out) == {
        "encoding": "GSM-7",
        "segments": 1,
        "units": 15,
        "per_segment": 160,
        "parts": ["Hello [world]"],
        "smart_replaced": 0,
        "national": None,
        "udh": [""],
    }


def test_options_reach_segmentation(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(
        capsys, "“ş” " * 50, "--json", "--smart", "--national", "tr,es", "--concat-ref", "16"
    )
    assert code == 0
    document = msgspec.json.decode(out)
    assert document["smart_replaced"] == 100
    assert document["national"] == {"locking": "tr", "single": None}
    assert document["segments"] == 2
    assert document["udh"][0] == "09080400000201250101"


def test_split_codepoint(capsys: pytest.CaptureFixture[str]) -> None:
    text = "a" * 65 + "\U0001f1f7\U0001f1fc" + "a" * 10
    _, grapheme, _ = run_cli(capsys, text, "--json")
    _, codepoint, _ = run_cli(capsys, text, "--json", "--split", "codepoint")
    assert [len(p) for p in msgspec.json.decode(grapheme)["parts"]] == [65, 12]
    assert [len(p) for p in msgspec.json.decode(codepoint)["parts"]] == [66, 11]


def test_cost_on_a_bridge(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "a" * 200, "--bridge", "dsc", "--to", "+250788123456")
    assert code == 0
    assert out.splitlines()[-1] == ("cost       150 RWF on dsc (2 x 75 per segment, prefix 250)")
    _, out, _ = run_cli(capsys, "hi", "--json", "--bridge", "bsg", "--to", "+380501234567")
    assert msgspec.json.decode(out)["cost"] == {
        "bridge": "bsg",
        "to": "+380501234567",
        "amount": 0.0225,
        "currency": "EUR",
        "per": "segment",
        "unit_price": 0.0225,
        "quantity": 1,
        "prefix": "380",
    }


def test_text_from_stdin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("Привет\n"))
    code, out, _ = run_cli(capsys, "-", "--json")
    assert code == 0
    assert msgspec.json.decode(out)["parts"] == ["Привет"]  # the shell's newline dropped


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["hi", "--concat-ref", "12"], "--concat-ref must be 8 or 16"),
        (["hi", "--split", "word"], "--split must be grapheme or codepoint"),
        (["hi", "--national", "tr,xx"], "Unknown national language 'xx'"),
        (["hi", "--bridge", "dsc"], "--bridge needs --to"),
        (["hi", "--to", "+250788123456"], "--to needs --bridge"),
        (["hi", "--bridge", "nope", "--to", "+250788123456"], "unknown bridge 'nope'"),
        (["hi", "--bridge", "dsc", "--to", "0788123456"], "not an international number"),
        ([""], "empty"),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("septet segment: ")
    assert message in err


def test_real_subprocess() -> None:
    septet = Path(sys.executable).parent / "septet"
    assert septet.exists(), "install the project into the venv: pip install -e ."
    completed = subprocess.run(
        [str(septet), "segment", "-", "--json", "--national", "hi"],
        input="नमस्ते दुनिया".encode(),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    document = msgspec.json.decode(completed.stdout)
    assert document["encoding"] == "GSM-7"
    assert document["national"] == {"locking": "hi", "single": None}
