"""The Grafana dashboard, proven against a real Prometheus scraping a daemon under load.

Prometheus is Debian's `prometheus` package (CI: `sudo apt-get install -y prometheus`).
Without it this test fails, saying how to install it: a dashboard nobody has run is not
known to work.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from engine.config import JournalSettings
from engine.lifecycle import Charge
from engine.metrics import LiveState, Metrics
from tests.engine.daemon_harness import connected, daemon_settings, running_daemon

GRAFANA = Path(__file__).resolve().parents[2] / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "septet.json"
INSTALL_HINT = (
    "Prometheus is needed to test the Grafana dashboard: install Debian's package with "
    "`sudo apt-get install -y prometheus` (it provides /usr/bin/prometheus)."
)
# Grafana's variables, as a query over everything on a short test run would see them.
GRAFANA_VARIABLES = {
    "$__rate_interval": "30s",
    "$__interval": "5s",
    "$__range": "5m",
    "$bridge": ".*",
}
METRIC_NAME = re.compile(r"\bseptet_[a-z_]+\b")


def load_dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) for every query of every panel."""
    return [
        (panel["title"], target["expr"])
        for panel in all_panels(dashboard["panels"])
        for target in panel.get("targets", [])
    ]


def concrete(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"a Grafana variable the test does not know: {expr}"
    return expr


def exposed_names(exposition: str) -> set[str]:
    return {line.split("{")[0].split(" ")[0] for line in exposition.splitlines() if line[:1] != "#"}


def test_the_dashboard_is_well_formed() -> None:
    dashboard = load_dashboard()
    panels = list(all_panels(dashboard["panels"]))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["bridge"]["includeAll"]
    assert variables["bridge"]["allValue"] == ".*"
    assert variables["bridge"]["datasource"]["uid"] == "${datasource}"
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
    # The panels the issue asks for are there.
    titles = " | ".join(panel["title"].lower() for panel in panels)
    for topic in (
        "submitted per second",
        "submit latency",
        "delivery latency",
        "queue depth",
        "in flight",
        "token-bucket",
        "failures",
        "retries",
        "delivery reports",
        "delivery rate",
        "cost",
        "journal commit",
        "ingress rejects",
        "circuit",
        # The operator's metrics (issue 19).
        "backlog",
        "journal size",
        "memory",
        "cpu",
        "balance",
        "account faults",
        "callbacks refused",
        "smpp sessions",
        "smpp binds",
        "build",
    ):
        assert topic in titles, topic
    # septet's estimates and the providers' charges are two figures of one cost: every
    # cost query picks one source, never their sum, and both are shown.
    sources = [
        re.findall(r'source="(\w+)"', expr)
        for _, expr in expressions(dashboard)
        if "septet_cost_total" in expr
    ]
    assert all(len(found) == 1 for found in sources), sources
    assert {found[0] for found in sources} == {"estimate", "provider"}


def test_every_metric_the_dashboard_uses_is_exposed(tmp_path: Path) -> None:
    metrics = Metrics(["dsc"])
    # The operator's gauges read at scrape time, as a running daemon sets them.
    journal = tmp_path / "septet.db"
    journal.write_bytes(b"")
    metrics.operations.journal_paths = (journal,)
    metrics.operations.journal_max_bytes = 1 << 20
    metrics.operations.backlog = {}
    metrics.operations.kept_events = 0
    metrics.operations.smpp_sessions = list
    metrics.operations.balance("dsc", 1.0, "EUR", at=1.0)
    metrics.watch(
        lambda: LiveState(queue_depth={"dsc": 0}, in_flight={"dsc": 0}, circuit={"dsc": "closed"})
    )
    # Series whose labels come from traffic (status class, currency) need one event.
    metrics.request_done("dsc", "send", 0.01, "200")
    metrics.submitted("dsc", [], 0.0)
    metrics.cost.labels("dsc", "RWF", "estimate").inc(1.0)
    metrics.charged("dsc", [Charge(1.0, "RWF")])
    exposition = metrics.exposition().decode()
    names = exposed_names(exposition)
    labelled_by_bridge = {
        sample.name
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if "bridge" in sample.labels
    }
    used = {name for _, expr in expressions(load_dashboard()) for name in METRIC_NAME.findall(expr)}
    assert used
    assert used <= names, sorted(used - names)
    for title, expr in expressions(load_dashboard()):
        if labelled_by_bridge.intersection(METRIC_NAME.findall(expr)):
            assert "$bridge" in expr, f"{title}: not filtered by the bridge variable"


def test_the_provisioning_files_point_at_the_dashboard() -> None:
    datasources = (GRAFANA / "provisioning" / "datasources" / "septet.yml").read_text()
    dashboards = (GRAFANA / "provisioning" / "dashboards" / "septet.yml").read_text()
    scrape = (GRAFANA / "prometheus.yml").read_text()
    assert "type: prometheus" in datasources
    assert "/var/lib/grafana/dashboards/septet" in dashboards
    assert "127.0.0.1:9750" in scrape
    compose = (GRAFANA / "docker-compose.yml").read_text()
    assert "./dashboards:/var/lib/grafana/dashboards/septet" in compose


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def query(client: httpx.AsyncClient, base: str, expr: str) -> list[dict[str, Any]]:
    reply = await client.get(f"{base}/api/v1/query", params={"query": expr})
    body = reply.json()
    assert body["status"] == "success", (expr, body)
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


@pytest.mark.anyio
@pytest.mark.slow
async def test_every_dashboard_query_returns_data_from_a_real_prometheus(tmp_path: Path) -> None:
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.fail(INSTALL_HINT)
    dashboard = load_dashboard()
    # A journal cap, so the journal panel's cap series exists.
    journal = JournalSettings(path=str(tmp_path / "septet.db"), max_size_mb=512)
    async with running_daemon(daemon_settings(tmp_path, journal=journal)) as daemon:
        # Some faults, so retries and failures are real series, not only zeros.
        await daemon.sim_config({"fail_rate": 0.1, "faults": {"5xx": 1.0, "429": 1.0}})
        port = free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: septet\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{daemon.http_port}']\n"
        )
        command = [
            prometheus,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ]
        base = f"http://127.0.0.1:{port}"
        log_file = (tmp_path / "prometheus.log").open("wb")
        async with (
            await anyio.open_process(command, stdout=log_file, stderr=log_file) as process,
            httpx.AsyncClient(timeout=5) as client,
        ):
            try:
                with anyio.fail_after(20):
                    while True:
                        try:
                            if (await client.get(f"{base}/-/ready")).status_code == 200:
                                break
                        except httpx.TransportError:
                            pass  # Prometheus is still starting: ask again (bounded above)
                        await anyio.sleep(0.2)
                # Load: a few hundred messages on three bridges, in two waves so the
                # rates see traffic in more than one scrape.
                prefixes = ["+2507881", "+9198123", "+4477009"]
                async with connected(daemon) as sender:
                    for wave in range(2):
                        lines: list[dict[str, object] | bytes] = [
                            {"to": f"{prefixes[n % 3]}{wave}{n:04d}", "text": f"Hi {n % 5}"}
                            for n in range(150)
                        ]
                        lines.append(b"not json")
                        await sender.send(*lines)
                        finals = 150 * (wave + 1)

                        def all_final(events: list[dict[str, Any]], finals: int = finals) -> bool:
                            return len(sender.final_reports()) >= finals

                        await sender.wait_for(all_final, timeout_s=30)
                exposition = (await client.get(f"http://127.0.0.1:{daemon.http_port}/metrics")).text
                pending = {expr: title for title, expr in expressions(dashboard)}
                with anyio.move_on_after(25):
                    while pending:
                        for expr in list(pending):
                            if await query(client, base, concrete(expr)):
                                del pending[expr]
                        if pending:
                            await anyio.sleep(0.5)
                bridges = (
                    await client.get(
                        f"{base}/api/v1/label/bridge/values",
                        params={"match[]": "septet_messages_total"},
                    )
                ).json()["data"]
            finally:
                process.terminate()
                with anyio.move_on_after(10):
                    await process.wait()
                log_file.close()
    assert not pending, "queries with no data:\n" + "\n".join(
        f"{title}: {concrete(expr)}" for expr, title in pending.items()
    )
    assert set(bridges) == {"dsc", "routemobile", "bsg", "smsclub"}
    used = {name for _, expr in expressions(dashboard) for name in METRIC_NAME.findall(expr)}
    assert used <= exposed_names(exposition), sorted(used - exposed_names(exposition))
