"""bench.cluster: its load split, node configs and CPU accounting, and --quick end to end
leaving no process behind."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest

from bench.cluster import CARRIES_OVER, _medians, node_config, split_load, tree_cpu_seconds
from bench.pipeline import _scenarios
from engine.config import Settings, validate
from engine.models import submission_decoder

REPO = Path(__file__).resolve().parents[2]


def _recipients(chunks: list[bytes]) -> list[str]:
    lines = b"".join(chunks).splitlines(keepends=True)
    found: list[str] = []
    for line in lines:
        to = submission_decoder.decode(line).to
        found.extend(to if isinstance(to, list) else [to])
    return found


@pytest.mark.parametrize(
    ("scenario", "messages", "nodes"), [("unbatched", 10, 3), ("batched", 250, 2)]
)
def test_the_lines_are_split_over_the_nodes_each_message_once(
    scenario: str, messages: int, nodes: int
) -> None:
    shares = split_load(_scenarios()[scenario], messages, nodes)
    assert len(shares) == nodes
    per_node = [_recipients(share.chunks) for share in shares]
    assert [share.goal.messages for share in shares] == [len(r) for r in per_node]
    everyone = [to for recipients in per_node for to in recipients]
    assert len(everyone) == messages
    assert len(set(everyone)) == messages
    assert all(share.goal.until == "submitted" for share in shares)


def test_a_node_config_shares_the_postgresql_journal_under_its_own_name(tmp_path: Path) -> None:
    text = node_config(
        tmp_path,
        _scenarios()["batched"],
        tcp_port=5000,
        http_port=5001,
        index=2,
        sim_url="http://127.0.0.1:1234",
        dsn="host=127.0.0.1 port=5432 user=postgres dbname=cluster_1",
    )
    settings = msgspec.toml.decode(text.encode(), type=Settings)
    validate(settings)
    assert settings.journal.backend == "postgresql"
    assert settings.journal.dsn == "host=127.0.0.1 port=5432 user=postgres dbname=cluster_1"
    assert settings.cluster.node == "node-2"
    assert settings.ingress.tcp == "127.0.0.1:5000"
    assert sorted(settings.bridges) == ["bsg", "dsc", "routemobile"]
    sqlite = msgspec.toml.decode(
        node_config(
            tmp_path,
            _scenarios()["batched"],
            tcp_port=5000,
            http_port=5001,
            index=0,
            sim_url="http://127.0.0.1:1234",
            dsn=None,
        ).encode(),
        type=Settings,
    )
    assert sqlite.journal.backend == "sqlite"
    assert sqlite.journal.path == str(tmp_path / "journal.db")


def test_a_process_trees_cpu_counts_children_that_already_ended() -> None:
    # The parent starts a child that spins for 0.3 s of CPU and ends, then waits on
    # stdin: the child's time is the parent's reaped children's time.
    burn = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass"
    parent_code = (
        "import subprocess, sys\n"
        f"subprocess.run([sys.executable, '-c', {burn!r}], check=True)\n"
        "print('done', flush=True)\n"
        "sys.stdin.readline()\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", parent_code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None
        assert parent.stdout.readline() == "done\n"
        assert tree_cpu_seconds(parent.pid) >= 0.3
    finally:
        assert parent.stdin is not None
        parent.stdin.close()
        parent.wait(timeout=30)


def _processes_marked(marker: str) -> list[str]:
    """Command lines of the processes whose environment holds `marker`."""
    found: list[str] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes():
                found.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue  # ended, or not ours to read
    return found


@pytest.mark.slow
def test_quick_run_finishes_every_message_and_leaves_no_process(tmp_path: Path) -> None:
    out = tmp_path / "cluster.json"
    # Every process the bench starts inherits this: none may be left when it is over.
    marker = f"SEPTET_BENCH_CLUSTER_TEST={uuid.uuid4().hex}"
    name, value = marker.split("=")
    environment = {**os.environ, name: value}
    command = [sys.executable, "-m", "bench.cluster", "--quick", "--scenario", "unbatched"]
    command += ["--nodes", "2", "-n", "200", "--no-fsync", "--out", str(out)]
    command += ["--idle", "0.5"]  # the idle measure's path, shorter than its 2 s default
    completed = subprocess.run(
        command,
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert CARRIES_OVER in completed.stdout
    assert _processes_marked(marker) == []
    document = msgspec.json.decode(out.read_bytes())
    assert document["bench"] == "cluster"
    assert document["quick"] is True
    results = document["results"]
    assert [r["setup"] for r in results] == ["sqlite ×1", "postgresql ×2"]
    for result in results:
        assert result["complete"] is True
        assert result["messages"] == 200
        assert result["lost"] == 0
        assert result["sent_twice"] == 0
        assert result["journal_final"] == 200
        assert result["simulator_accepted"] == 200
        assert result["messages_per_s"] > 0
        assert result["engine_cpu_us_per_message"] > 0
    cluster = results[1]
    assert cluster["per_node_accepted"] == [100, 100]
    assert sum(cluster["per_node_sent"]) == 200
    assert results[0]["per_node_sent"] == [200]
    assert len(cluster["node_cpu_s"]) == 2
    # 200 messages cost the database about a clock tick (10 ms) of CPU, so its figure may
    # read 0 (it did, twice in five runs); that a tree's CPU, ended children included, is
    # counted is test_a_process_trees_cpu_counts_children_that_already_ended's.
    assert cluster["database_cpu_us_per_message"] >= 0
    assert cluster["idle_database_cpu_pct"] >= 0
    assert results[0]["database_cpu_s"] == 0
    assert results[0]["idle_database_cpu_pct"] == 0
    assert cluster["idle_s"] == 0.5
    assert cluster["idle_engine_cpu_pct"] >= 0


def test_repeated_runs_keep_the_worst_of_what_must_hold() -> None:
    def run(per_s: float, twice: int, final: int) -> dict[str, Any]:
        return {
            "setup": "postgresql ×2",
            "messages_per_s": per_s,
            "lost": 0,
            "failed": 0,
            "rejected": 0,
            "daemon_log_errors": 0,
            "complete": True,
            "sent_twice": twice,
            "journal_final": final,
        }

    merged = _medians([run(3.0, 0, 100), run(1.0, 2, 100), run(2.0, 0, 97)])
    assert merged["messages_per_s"] == 2.0
    assert merged["sent_twice"] == 2
    assert merged["journal_final"] == 97
    assert merged["runs"] == 3
