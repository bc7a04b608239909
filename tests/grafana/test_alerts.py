"""The alerting rules example (grafana/alerts.yml): valid for Prometheus, unit-tested with
promtool against the series septet exposes, and naming only metrics septet defines."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from engine.metrics import LiveState, Metrics

GRAFANA = Path(__file__).resolve().parents[2] / "grafana"
RULES = GRAFANA / "alerts.yml"
RULE_TESTS = GRAFANA / "alerts.test.yml"
METRIC_NAME = re.compile(r"\bseptet_[a-z_]+\b")
INSTALL_HINT = (
    "promtool is needed to test the alerting rules: install Debian's `prometheus` package "
    "(`sudo apt-get install -y prometheus` provides /usr/bin/promtool)."
)


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail(INSTALL_HINT)
    return found


def test_the_rules_are_valid() -> None:
    result = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 6 rules found" in result.stdout


def test_the_rules_fire_as_their_unit_tests_say() -> None:
    # The low-balance rule among them: a draining balance fires after its `for:`.
    result = subprocess.run(
        [promtool(), "test", "rules", RULE_TESTS.name],
        cwd=GRAFANA,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_metric_the_rules_and_their_tests_use_is_one_septet_exposes(tmp_path: Path) -> None:
    metrics = Metrics(["bsg"])
    operations = metrics.operations
    journal = tmp_path / "septet.db"
    journal.write_bytes(b"x")
    operations.journal_paths = (journal,)
    operations.journal_max_bytes = 1 << 20
    operations.balance("bsg", 10.0, "EUR", at=1.0)
    metrics.outcome("bsg", "failed", 1, "account_credit")
    metrics.watch(
        lambda: LiveState(
            queue_depth={"bsg": 0},
            in_flight={"bsg": 0},
            circuit={"bsg": "closed"},
            rate_limits_reachable={"bsg": True},
        )
    )
    exposed = {
        line.split("{")[0].split(" ")[0]
        for line in metrics.exposition().decode().splitlines()
        if not line.startswith("#")
    }
    used = set(METRIC_NAME.findall(RULES.read_text())) | set(
        METRIC_NAME.findall(RULE_TESTS.read_text())
    )
    assert used
    assert used <= exposed, sorted(used - exposed)
