"""docs/operations.md lists every metric septet defines (engine/metrics.py), and no other."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client.core import CounterMetricFamily

from engine.metrics import LiveState, Metrics

DOC = Path(__file__).resolve().parent.parent / "docs" / "operations.md"
SECTION = "## Metrics: what each one means"


def defined_metrics(tmp_path: Path) -> set[str]:
    """Every metric name a daemon exposes, each family made to show (scrape-time ones
    included), as it appears in the exposition (counters with `_total`)."""
    metrics = Metrics(["dsc"])
    metrics.watch(lambda: LiveState(queue_depth={}, in_flight={}, circuit={}))
    operations = metrics.operations
    journal = tmp_path / "septet.db"
    journal.write_bytes(b"")
    operations.journal_paths = (journal,)
    operations.journal_max_bytes = 1
    operations.backlog = {}
    operations.kept_events = 0
    operations.smpp_sessions = list
    names = set()
    for family in metrics.registry.collect():
        counter = family.type == "counter" or isinstance(family, CounterMetricFamily)
        names.add(f"{family.name}_total" if counter else family.name)
    return names


def documented_metrics() -> set[str]:
    text = DOC.read_text()
    assert SECTION in text, f"docs/operations.md has no section {SECTION!r}"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `(septet_[a-z_]+)` \|", section, re.M))


def test_every_metric_is_explained_in_the_operations_guide(tmp_path: Path) -> None:
    defined, documented = defined_metrics(tmp_path), documented_metrics()
    missing = sorted(defined - documented)
    assert not missing, f"add a row for each to {SECTION!r} in docs/operations.md: {missing}"
    stale = sorted(documented - defined)
    assert not stale, f"documented in docs/operations.md but not defined: {stale}"
