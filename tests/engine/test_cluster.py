"""engine.cluster: node names, liveness by lease, whose claims may be taken over, and
whether a name may join; time is passed in, so nothing here sleeps."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.cluster import (
    ClusterSettings,
    Liveness,
    NodeRecord,
    Registration,
    leader,
    liveness,
    name_in_use_sentence,
    node_name,
    registration,
    settings_problems,
    takeover_targets,
)
from engine.config import ConfigError, load_config


def record(
    node: str,
    heartbeat_at: float,
    *,
    run: str = "r1",
    left_at: float | None = None,
    claims: int = 0,
) -> NodeRecord:
    return NodeRecord(
        node=node,
        run=run,
        started_at=heartbeat_at - 100,
        heartbeat_at=heartbeat_at,
        left_at=left_at,
        claims=claims,
    )


def test_a_node_is_live_within_its_lease_expired_after_it_and_left_when_it_said_so() -> None:
    assert liveness(record("a", 1000.0), 1015.0, 15.0) is Liveness.LIVE
    assert liveness(record("a", 1000.0), 1015.1, 15.0) is Liveness.EXPIRED
    # A clean stop needs no wait: its claims are free at once.
    assert liveness(record("a", 1000.0, left_at=1000.5), 1001.0, 15.0) is Liveness.LEFT


def test_only_other_nodes_without_a_lease_are_taken_over_oldest_first() -> None:
    now = 2000.0
    nodes = [
        record("me", 1000.0),  # this node, however old its row looks, is never a target
        record("live", 1990.0),
        record("dead-late", 1900.0, claims=3),
        record("dead-early", 1500.0),
        record("left", 1999.0, left_at=1999.5, claims=1),
    ]
    targets = takeover_targets(nodes, "me", now, 15.0)
    assert [target.node for target in targets] == ["dead-early", "dead-late", "left"]


def test_a_live_node_of_another_run_keeps_its_name_and_a_gone_one_gives_it_up() -> None:
    now = 5000.0
    assert registration(None, "run-b", now, 15.0) is Registration.JOIN
    holder = record("db1", 4995.0, run="run-a")
    assert registration(holder, "run-b", now, 15.0) is Registration.NAME_IN_USE
    # The same run writing again (its own row) is no conflict.
    assert registration(holder, "run-a", now, 15.0) is Registration.REJOIN
    # Its last run stopped or died: the name is free, and its claims are this start's.
    assert registration(record("db1", 4000.0, run="run-a"), "run-b", now, 15.0) is (
        Registration.REJOIN
    )
    assert registration(record("db1", 4999.0, run="run-a", left_at=4999.0), "run-b", now, 15.0) is (
        Registration.REJOIN
    )
    sentence = name_in_use_sentence(holder, now)
    assert sentence == (
        "The node name 'db1' is in use by a running septet (its heartbeat 5.0 s ago): give"
        " each node its own [cluster] node, or leave it unset."
    )


def test_an_unnamed_node_is_its_host_with_the_suffix_of_this_run() -> None:
    assert node_name(None, "db1.example.net", "k3x9") == "db1-k3x9"
    assert node_name("edge-2", "db1.example.net", "k3x9") == "edge-2"
    # Odd host names still give a valid node name.
    assert node_name(None, "my host!", "abcd") == "my-host-abcd"
    assert node_name(None, "", "abcd") == "node-abcd"
    assert len(node_name(None, "h" * 200, "abcd")) == 64


def test_bad_cluster_settings_are_one_sentence_each() -> None:
    assert settings_problems(ClusterSettings()) == []
    problems = settings_problems(ClusterSettings(node="no spaces", heartbeat_s=5.0, lease_s=10.0))
    assert len(problems) == 2
    assert problems[0].startswith("cluster.node 'no spaces' is not a node name")
    assert problems[1].startswith("cluster.lease_s (10) must be at least 3 heartbeats")


def test_the_config_file_refuses_a_bad_cluster_section(tmp_path: Path) -> None:
    path = tmp_path / "septet.toml"
    path.write_text('[cluster]\nnode = "a/b"\n')
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    assert any("cluster.node 'a/b'" in sentence for sentence in refused.value.sentences)
    path.write_text('[cluster]\nnode = "edge-1"\nheartbeat_s = 1\nlease_s = 5\n')
    assert load_config(path).settings.cluster == ClusterSettings(
        node="edge-1", heartbeat_s=1.0, lease_s=5.0
    )


def test_the_leader_is_the_live_node_that_started_first() -> None:
    now = 3000.0
    first = NodeRecord(node="b", run="r", started_at=100.0, heartbeat_at=2999.0)
    later = NodeRecord(node="a", run="r", started_at=200.0, heartbeat_at=2999.5)
    assert leader([later, first], now, 15.0) == "b"
    # A tie on the start goes by name; a dead or departed node leads nothing.
    twin = NodeRecord(node="a", run="r", started_at=100.0, heartbeat_at=2999.0)
    assert leader([first, twin], now, 15.0) == "a"
    dead = NodeRecord(node="b", run="r", started_at=100.0, heartbeat_at=2000.0)
    assert leader([dead, later], now, 15.0) == "a"
    gone = NodeRecord(node="a", run="r", started_at=200.0, heartbeat_at=2999.5, left_at=2999.6)
    assert leader([dead, gone], now, 15.0) is None
