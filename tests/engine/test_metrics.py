"""Metrics: what each hook counts, bounded labels, per-daemon registries, /metrics served live."""

from __future__ import annotations

import platform
import re
import threading
from pathlib import Path

import anyio
import httpx
import msgspec
import pytest
from prometheus_client import REGISTRY, CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bridges.base import Rejected
from engine.config import HttpSettings
from engine.lifecycle import ACCOUNT_FAULT_REASONS, REJECTION_REASONS, Charge
from engine.metrics import (
    BACKLOG_STATES,
    BIND_RESULTS,
    CALLBACK_REJECTIONS,
    CIRCUIT_STATES,
    COST_SOURCES,
    DLR_STATES,
    LINE_RESULTS,
    MAX_PROVIDER_CURRENCIES,
    OUTCOMES,
    PRUNED_TABLES,
    REASONS,
    SMPP_SESSION_STATES,
    WEBHOOK_OUTCOMES,
    HistogramTally,
    LiveState,
    Metrics,
    build_version,
    observe_many,
    status_class,
)
from engine.models import Message
from engine.smpp import pdu as p
from tests.engine.daemon_harness import connected, daemon_settings, iso_in, running_daemon
from tests.engine.smpp.raw_client import RawClient


def message(
    *, encoding: str = "GSM-7", segments: int = 1, cost: float = 0.02, currency: str = "EUR"
) -> Message:
    return Message(
        msg_id="m",
        reference="r",
        origin="tcp:1",
        client_ref=None,
        to="+250788100001",
        sender=None,
        text="hi",
        encoding=encoding,  # type: ignore[arg-type]
        segments=segments,
        cost=cost,
        currency=currency,
        bridges=("dsc",),
        accepted_at=100.0,
        due_at=100.0,
    )


def sample(metrics: Metrics | CollectorRegistry, name: str, **labels: str) -> float:
    registry = metrics.registry if isinstance(metrics, Metrics) else metrics
    value = registry.get_sample_value(name, labels)
    assert value is not None, f"no sample {name}{labels}"
    return value


def test_a_submitted_batch_counts_segments_cost_and_each_latency() -> None:
    metrics = Metrics(["dsc"])
    batch = [
        message(encoding="GSM-7", segments=1, cost=0.5, currency="RWF"),
        message(encoding="UCS-2", segments=3, cost=1.5, currency="RWF"),
        message(encoding="GSM-7", segments=2, cost=0.25, currency="EUR"),
    ]
    metrics.submitted("dsc", batch, now=100.5)
    metrics.outcome("dsc", "submitted", len(batch))
    assert sample(metrics, "septet_messages_total", bridge="dsc", outcome="submitted") == 3
    assert sample(metrics, "septet_segments_total", bridge="dsc", encoding="GSM-7") == 3
    assert sample(metrics, "septet_segments_total", bridge="dsc", encoding="UCS-2") == 3
    estimate = {"bridge": "dsc", "source": "estimate"}
    assert sample(metrics, "septet_cost_total", currency="RWF", **estimate) == 2.0
    assert sample(metrics, "septet_cost_total", currency="EUR", **estimate) == 0.25
    assert sample(metrics, "septet_submit_latency_seconds_count", bridge="dsc") == 3
    assert sample(metrics, "septet_submit_latency_seconds_sum", bridge="dsc") == 1.5
    # 0.5 s lands in the 0.5 bucket, not below it.
    assert sample(metrics, "septet_submit_latency_seconds_bucket", bridge="dsc", le="0.25") == 0
    assert sample(metrics, "septet_submit_latency_seconds_bucket", bridge="dsc", le="0.5") == 3


def test_provider_charges_count_apart_from_the_estimate() -> None:
    metrics = Metrics(["dsc", "routemobile"])
    metrics.submitted("dsc", [message(cost=75.0, currency="RWF")], now=100.5)
    metrics.charged("dsc", [Charge(75.0, "RWF")])
    metrics.charged("dsc", [Charge(150.0, "RWF"), Charge(0.02, "EUR")])
    metrics.charged("routemobile", [Charge(3.0, "INR")])
    estimate = {"bridge": "dsc", "currency": "RWF", "source": "estimate"}
    assert sample(metrics, "septet_cost_total", **estimate) == 75.0
    provider = {"bridge": "dsc", "source": "provider"}
    assert sample(metrics, "septet_cost_total", currency="RWF", **provider) == 225.0
    assert sample(metrics, "septet_cost_total", currency="EUR", **provider) == 0.02
    routemobile = {"bridge": "routemobile", "currency": "INR", "source": "provider"}
    assert sample(metrics, "septet_cost_total", **routemobile) == 3.0
    assert COST_SOURCES == ("estimate", "provider")


def test_provider_currencies_stay_bounded_and_odd_amounts_count_nothing() -> None:
    metrics = Metrics(["bsg"])
    # A currency that is no ISO 4217 code is "other"; so is one past the per-bridge cap.
    codes = [f"E{chr(65 + n)}R" for n in range(MAX_PROVIDER_CURRENCIES + 3)]
    metrics.charged("bsg", [Charge(1.0, code) for code in codes])
    metrics.charged("bsg", [Charge(1.0, "euro"), Charge(1.0, "")])
    # A counter only grows: negative, zero and non-finite amounts are not counted.
    metrics.charged("bsg", [Charge(-1.0, "EAR"), Charge(0.0, "EAR"), Charge(float("nan"), "EAR")])
    metrics.charged("bsg", [Charge(float("inf"), "EAR")])
    labels = {
        item.labels["currency"]: item.value
        for family in text_string_to_metric_families(metrics.exposition().decode())
        for item in family.samples
        if item.name == "septet_cost_total" and item.labels["source"] == "provider"
    }
    assert labels == {
        **dict.fromkeys(codes[:MAX_PROVIDER_CURRENCIES], 1.0),
        "other": 3.0 + 2.0,
    }


def test_a_bad_number_and_an_account_fault_are_counted_apart() -> None:
    # The lifecycle's labels for a refusal by what it blamed (engine.lifecycle).
    metrics = Metrics(["bsg"])
    for outcome in (Rejected("21", "bad", "number"), Rejected("26", "long", "content")):
        metrics.outcome("bsg", "failed", 1, REJECTION_REASONS[outcome.cause])
    metrics.outcome("bsg", "failover", 1, ACCOUNT_FAULT_REASONS["credit"])
    metrics.outcome("bsg", "retry", 1, ACCOUNT_FAULT_REASONS["credentials"])
    assert sample(metrics, "septet_failures_total", bridge="bsg", reason="invalid_number") == 1
    assert sample(metrics, "septet_failures_total", bridge="bsg", reason="content_refused") == 1
    assert sample(metrics, "septet_failures_total", bridge="bsg", reason="rejected") == 0
    assert sample(metrics, "septet_retries_total", bridge="bsg", reason="account_credentials") == 1
    assert set(REJECTION_REASONS.values()) | set(ACCOUNT_FAULT_REASONS.values()) <= set(REASONS)


def test_retries_and_failures_count_by_reason_and_fold_unknown_reasons() -> None:
    metrics = Metrics(["bsg"])
    metrics.outcome("bsg", "retry", 2, "throttled")
    metrics.outcome("bsg", "failed", 1, "rejected")
    metrics.outcome("bsg", "failed", 1, "provider said no, code 17")  # free text: folded
    metrics.outcome("bsg", "transport_error", 4)
    assert sample(metrics, "septet_retries_total", bridge="bsg", reason="throttled") == 2
    assert sample(metrics, "septet_failures_total", bridge="bsg", reason="rejected") == 1
    assert sample(metrics, "septet_failures_total", bridge="bsg", reason="other") == 1
    assert sample(metrics, "septet_messages_total", bridge="bsg", outcome="retry") == 2
    assert sample(metrics, "septet_messages_total", bridge="bsg", outcome="failed") == 2
    assert sample(metrics, "septet_messages_total", bridge="bsg", outcome="transport_error") == 4


def test_provider_requests_are_labelled_by_status_class_never_the_number() -> None:
    assert [status_class(s) for s in ("200", "429", "503", "transport", "weird")] == [
        "2xx",
        "4xx",
        "5xx",
        "transport",
        "other",
    ]
    metrics = Metrics(["smsclub"])
    metrics.request_done("smsclub", "send", 0.003, "200")
    metrics.request_done("smsclub", "send", 0.004, "201")
    metrics.status_request_hook("smsclub")(0.2, "transport")
    assert (
        sample(
            metrics,
            "septet_provider_request_seconds_count",
            bridge="smsclub",
            call="send",
            status="2xx",
        )
        == 2
    )
    assert (
        sample(
            metrics,
            "septet_provider_request_seconds_bucket",
            bridge="smsclub",
            call="status",
            status="transport",
            le="0.25",
        )
        == 1
    )


def test_receipts_count_by_state_and_only_final_ones_have_a_latency() -> None:
    metrics = Metrics(["dsc"])
    metrics.receipt("dsc", "ENROUTE", None)
    metrics.receipt("dsc", "DELIVRD", 7200.0)
    metrics.receipt("dsc", "SOMETHING_NEW", 1.0)
    assert sample(metrics, "septet_dlrs_total", bridge="dsc", state="ENROUTE") == 1
    assert sample(metrics, "septet_dlrs_total", bridge="dsc", state="DELIVRD") == 1
    assert sample(metrics, "septet_dlrs_total", bridge="dsc", state="other") == 1
    assert sample(metrics, "septet_delivery_latency_seconds_count", bridge="dsc") == 2
    # Two hours fits the buckets: they reach a day, for handsets that are off.
    assert sample(metrics, "septet_delivery_latency_seconds_bucket", bridge="dsc", le="3600.0") == 1
    assert sample(metrics, "septet_delivery_latency_seconds_bucket", bridge="dsc", le="7200.0") == 2


def test_ingress_bucket_waits_and_journal_commits_from_another_thread() -> None:
    metrics = Metrics(["dsc"])
    metrics.ingress("accepted", 5)
    metrics.ingress("rejected")
    metrics.bucket_wait("dsc", 0.02)

    def writer() -> None:
        for _ in range(1000):
            metrics.journal_commit(0.0007, 3)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sample(metrics, "septet_ingress_lines_total", result="accepted") == 5
    assert sample(metrics, "septet_ingress_lines_total", result="rejected") == 1
    assert sample(metrics, "septet_bucket_wait_seconds_count", bridge="dsc") == 1
    assert sample(metrics, "septet_journal_commit_seconds_count") == 4000
    assert sample(metrics, "septet_journal_operations_total") == 12000


def test_live_state_is_read_at_scrape_time() -> None:
    metrics = Metrics(["dsc", "bsg"])
    state = {"depth": 0}

    def read() -> LiveState:
        return LiveState(
            queue_depth={"dsc": state["depth"], "bsg": 0},
            in_flight={"dsc": 2, "bsg": 0},
            circuit={"dsc": "closed", "bsg": "open"},
        )

    metrics.watch(read)
    state["depth"] = 17
    assert sample(metrics, "septet_queue_depth_messages", bridge="dsc") == 17
    state["depth"] = 3
    assert sample(metrics, "septet_queue_depth_messages", bridge="dsc") == 3
    assert sample(metrics, "septet_inflight_requests", bridge="dsc") == 2
    for name in CIRCUIT_STATES:
        expected = 1.0 if name == "open" else 0.0
        assert sample(metrics, "septet_circuit_state", bridge="bsg", state=name) == expected
    metrics.watch(read)  # watching again replaces the reader, no duplicate series
    assert sample(metrics, "septet_inflight_requests", bridge="dsc") == 2


def test_every_known_series_exists_at_zero_before_traffic() -> None:
    metrics = Metrics(["dsc"])
    for outcome in OUTCOMES:
        assert sample(metrics, "septet_messages_total", bridge="dsc", outcome=outcome) == 0
    for reason in REASONS:
        assert sample(metrics, "septet_retries_total", bridge="dsc", reason=reason) == 0
        assert sample(metrics, "septet_failures_total", bridge="dsc", reason=reason) == 0
    for state in DLR_STATES:
        assert sample(metrics, "septet_dlrs_total", bridge="dsc", state=state) == 0
    for result in LINE_RESULTS:
        assert sample(metrics, "septet_ingress_lines_total", result=result) == 0


def test_each_daemon_has_its_own_registry_and_the_global_one_stays_clean() -> None:
    first, second = Metrics(["dsc"]), Metrics(["dsc"])
    first.ingress("accepted", 2)
    assert sample(first, "septet_ingress_lines_total", result="accepted") == 2
    assert sample(second, "septet_ingress_lines_total", result="accepted") == 0
    assert REGISTRY.get_sample_value("septet_ingress_lines_total", {"result": "accepted"}) is None


def test_names_follow_the_convention() -> None:
    families = list(text_string_to_metric_families(Metrics(["dsc"]).exposition().decode()))
    assert families
    for family in families:
        assert re.fullmatch(r"septet_[a-z_]+", family.name), family.name
        if family.type == "counter":
            assert not family.name.endswith("_total")  # the parser strips the suffix
        elif family.type == "histogram":
            assert family.name.endswith("_seconds"), family.name


# ── the daemon end to end ────────────────────────────────────────────────────────────

LABEL_VALUES = {
    "bridge": {"dsc", "routemobile", "bsg", "smsclub", "other"},
    "outcome": {*OUTCOMES, *WEBHOOK_OUTCOMES, "other"},
    "reason": {*REASONS, *CALLBACK_REJECTIONS, "other"},
    "state": {*DLR_STATES, *CIRCUIT_STATES, *BACKLOG_STATES, *SMPP_SESSION_STATES, "other"},
    "encoding": {"GSM-7", "UCS-2"},
    "result": {*LINE_RESULTS, *BIND_RESULTS, "other"},
    "version": {build_version()},
    "python": {platform.python_version()},
    "call": {"send", "status"},
    "status": {"2xx", "3xx", "4xx", "5xx", "transport", "other"},
    "source": set(COST_SOURCES),
    "table": {*PRUNED_TABLES, "other"},
}


@pytest.mark.anyio
async def test_the_daemon_serves_metrics_that_match_its_traffic(tmp_path: Path) -> None:
    async with running_daemon(daemon_settings(tmp_path)) as daemon:
        await daemon.sim_config({"dlr_mix": {"DELIVRD": 1.0}})
        lines: list[dict[str, object] | bytes] = [
            {"to": f"+25078810{n:04d}", "text": "Hello"} for n in range(30)
        ]
        lines += [{"to": f"+44770090{n:04d}", "text": "Привіт"} for n in range(20)]
        lines += [b"not json", {"to": "+250788100001"}]
        async with connected(daemon) as client:
            await client.send(*lines)
            await client.wait_for(lambda events: len(client.final_reports()) == 50)
        async with httpx.AsyncClient() as http:
            reply = await http.get(f"http://127.0.0.1:{daemon.http_port}/metrics")
            ready = await http.get(f"http://127.0.0.1:{daemon.http_port}/readyz")
            alive = await http.get(f"http://127.0.0.1:{daemon.http_port}/healthz")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain; version=")
    assert ready.status_code == 200
    assert alive.json() == {"status": "alive"}
    known = {**LABEL_VALUES, "node": {ready.json()["node"]["name"]}}

    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(reply.text):
        for item in family.samples:
            samples[(item.name, frozenset(item.labels.items()))] = item.value
            for label, label_value in item.labels.items():
                if label != "le" and label != "currency":
                    assert label_value in known[label], (item.name, label, label_value)

    def value(name: str, **labels: str) -> float:
        return samples[(name, frozenset(labels.items()))]

    assert value("septet_messages_total", bridge="dsc", outcome="submitted") == 30
    assert value("septet_messages_total", bridge="bsg", outcome="submitted") == 20
    assert value("septet_segments_total", bridge="dsc", encoding="GSM-7") == 30
    assert value("septet_segments_total", bridge="bsg", encoding="UCS-2") == 20
    assert value("septet_dlrs_total", bridge="dsc", state="DELIVRD") == 30
    assert value("septet_dlrs_total", bridge="bsg", state="DELIVRD") == 20
    assert value("septet_submit_latency_seconds_count", bridge="dsc") == 30
    assert value("septet_delivery_latency_seconds_count", bridge="bsg") == 20
    assert value("septet_ingress_lines_total", result="accepted") == 50
    assert value("septet_ingress_lines_total", result="rejected") == 2
    assert value("septet_journal_commit_seconds_count") > 0
    assert value("septet_provider_request_seconds_count", bridge="bsg", call="status", status="2xx")
    assert value("septet_queue_depth_messages", bridge="dsc") == 0
    assert value("septet_inflight_requests", bridge="dsc") == 0
    assert value("septet_circuit_state", bridge="dsc", state="closed") == 1
    # septet's estimate for both; the provider's own charge too: dsc's at 75 RWF a part
    # (its simulator's price), BSG's in EUR, both stated in the reply to the send.
    assert value("septet_cost_total", bridge="dsc", currency="RWF", source="estimate") == 30 * 75
    assert value("septet_cost_total", bridge="dsc", currency="RWF", source="provider") == 30 * 75
    assert value("septet_cost_total", bridge="bsg", currency="EUR", source="estimate") > 0
    assert value("septet_cost_total", bridge="bsg", currency="EUR", source="provider") > 0


@pytest.mark.anyio
async def test_provider_faults_show_as_retries_by_reason(tmp_path: Path) -> None:
    async with running_daemon(daemon_settings(tmp_path)) as daemon:
        await daemon.sim_config({"dlr_mix": {"DELIVRD": 1.0}})
        # Faults on dsc only: what fails over (routemobile is 250's second bridge) then
        # goes through at once, instead of meeting the same faults with nowhere left to go.
        await daemon.sim_config(
            {"fail_rate": 0.5, "faults": {"5xx": 1.0}, "seed": 3}, provider="dsc"
        )
        async with connected(daemon) as client:
            await client.send(*({"to": f"+25078820{n:04d}", "text": "Hi"} for n in range(20)))
            await client.wait_for(lambda events: len(client.final_reports()) == 20, 60)
        async with httpx.AsyncClient() as http:
            reply = await http.get(f"http://127.0.0.1:{daemon.http_port}/metrics")
    dsc = [
        item
        for family in text_string_to_metric_families(reply.text)
        for item in family.samples
        if item.labels.get("bridge") == "dsc"
    ]
    retries = {
        item.labels["reason"]: item.value
        for item in dsc
        if item.name == "septet_retries_total" and item.value
    }
    # A 5xx is "try again later" (docs/providers.md); nothing else went wrong.
    assert set(retries) == {"retry_later"}
    (retry_outcomes,) = (
        item.value
        for item in dsc
        if item.name == "septet_messages_total" and item.labels["outcome"] == "retry"
    )
    assert retry_outcomes == retries["retry_later"]
    five_xx = [
        item.value
        for item in dsc
        if item.name == "septet_provider_request_seconds_count" and item.labels["status"] == "5xx"
    ]
    assert five_xx
    assert five_xx[0] >= 1


def test_observe_many_equals_one_observe_per_amount() -> None:
    amounts = [0.0, 0.004, 0.005, 0.0051, 0.2, 1.0, 7.5, 100.0, 1e9]
    registries = CollectorRegistry(), CollectorRegistry()
    one_by_one, bulk = (
        Histogram("t_seconds", "t", ["bridge"], registry=registry).labels("dsc")
        for registry in registries
    )
    for amount in amounts:
        one_by_one.observe(amount)
    observe_many(bulk, amounts)
    one, other = (
        [line for line in generate_latest(registry).splitlines() if b"_created" not in line]
        for registry in registries
    )
    assert one == other


def test_a_histogram_tally_flushed_equals_one_observe_per_amount() -> None:
    """Observations kept in a tally and added at a scrape, twice over (a tally is reused
    after a flush): the same exposition as prometheus_client's own observe."""
    amounts = [0.0, 0.004, 0.005, 0.0051, 0.2, 1.0, 7.5, 100.0, 1e9]
    registries = CollectorRegistry(), CollectorRegistry()
    one_by_one, tallied = (
        Histogram("t_seconds", "t", ["bridge"], registry=registry).labels("dsc")
        for registry in registries
    )
    tally = HistogramTally(tallied)
    for half in (amounts[:4], amounts[4:]):
        for amount in half:
            one_by_one.observe(amount)
            tally.observe(amount)
        tally.flush()
        one, other = (
            [line for line in generate_latest(registry).splitlines() if b"_created" not in line]
            for registry in registries
        )
        assert one == other
    tally.flush()  # nothing new: nothing added
    assert [
        line for line in generate_latest(registries[1]).splitlines() if b"_created" not in line
    ] == one


def test_counts_between_scrapes_show_in_the_next_scrape() -> None:
    metrics = Metrics(["dsc"])
    submitted = {"bridge": "dsc", "outcome": "submitted"}
    metrics.outcome("dsc", "submitted", 2)
    assert sample(metrics, "septet_messages_total", **submitted) == 2
    metrics.outcome("dsc", "submitted", 3)
    metrics.request_done("dsc", "send", 0.002, "200")
    assert b'septet_messages_total{bridge="dsc",outcome="submitted"} 5.0' in metrics.exposition()
    assert sample(metrics, "septet_messages_total", **submitted) == 5
    request = {"bridge": "dsc", "call": "send", "status": "2xx"}
    assert sample(metrics, "septet_provider_request_seconds_count", **request) == 1
    assert sample(metrics, "septet_provider_request_seconds_sum", **request) == 0.002


# ── the operator's metrics (issue 19) ────────────────────────────────────────────────


def scrape(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (item.name, frozenset(item.labels.items())): item.value
        for family in text_string_to_metric_families(text)
        for item in family.samples
    }


@pytest.mark.anyio
async def test_the_operators_metrics_on_a_listener_of_their_own(tmp_path: Path) -> None:
    settings = daemon_settings(
        tmp_path, http=HttpSettings(listen="127.0.0.1:0", metrics_listen="127.0.0.1:0")
    )
    bridges = {
        name: msgspec.structs.replace(bridge, balance_interval_s=0.05)
        for name, bridge in settings.bridges.items()
    }
    settings = msgspec.structs.replace(settings, bridges=bridges)
    async with running_daemon(settings) as daemon:
        assert daemon.metrics_port is not None
        metrics_url = f"http://127.0.0.1:{daemon.metrics_port}"
        main_url = f"http://127.0.0.1:{daemon.http_port}"
        async with connected(daemon) as client:
            later = iso_in(3600)
            await client.send(
                *({"to": f"+25078830{n:04d}", "text": "x", "schedule_at": later} for n in range(3))
            )
            await client.wait_for(lambda events: len(client.of("accepted")) == 3)
        async with (
            httpx.AsyncClient() as http,
            await RawClient.connect(daemon.smpp_port) as refused,
            await RawClient.connect(daemon.smpp_port) as esme,
        ):
            # Callbacks refused: wrong credentials, and a bridge that does not exist.
            wrong = {"username": "septet", "password": "wrong"}
            assert (await http.get(f"{main_url}/dlr/dsc", params=wrong)).status_code == 401
            assert (await http.get(f"{main_url}/dlr/nope")).status_code == 404
            assert (await refused.bind(password="wrong")).command_status == p.ESME_RINVPASWD
            assert (await esme.bind()).command_status == p.ESME_ROK
            # The balance poller: the provider's figure changes, the gauge follows.
            await daemon.sim_config({"bsg_balance": 123.5}, provider="bsg")

            # A remote gauge: scraped until it shows the new figure (bounded).
            bsg_balance = (
                "septet_provider_balance",
                frozenset({("bridge", "bsg"), ("currency", "EUR")}),
            )
            text = ""
            for _ in range(200):
                text = (await http.get(f"{metrics_url}/metrics")).text
                if scrape(text).get(bsg_balance) == 123.5:
                    break
                await anyio.sleep(0.05)
            # The providers' listener no longer exposes /metrics; health stays on both.
            assert (await http.get(f"{main_url}/metrics")).status_code == 404
            assert (await http.get(f"{metrics_url}/healthz")).json() == {"status": "alive"}
            assert (await http.get(f"{metrics_url}/readyz")).status_code == 200
            assert (await http.get(f"{metrics_url}/dlr/dsc")).status_code == 404
    samples = scrape(text)

    def value(name: str, **labels: str) -> float:
        return samples[(name, frozenset(labels.items()))]

    assert value("septet_process_resident_memory_bytes") > 10 * 1024 * 1024
    assert value("septet_process_open_fds") > 0
    assert value("septet_build_info", version=build_version(), python=platform.python_version())
    assert value("septet_journal_size_bytes") > 0
    assert value("septet_backlog_messages", state="accepted") == 3
    assert value("septet_backlog_messages", state="inflight") == 0
    assert value("septet_outbox_events") == 0
    assert value("septet_callbacks_rejected_total", bridge="dsc", reason="unauthorized") == 1
    assert value("septet_callbacks_rejected_total", bridge="other", reason="unknown_bridge") == 1
    assert value("septet_smpp_binds_total", result="bound") == 1
    assert value("septet_smpp_binds_total", result="invalid_credentials") == 1
    assert value("septet_smpp_sessions", state="bound_trx") == 1
    # SMS Club's balance as its simulator states it; dsc and Route Mobile have no call.
    smsclub = [
        key
        for key in samples
        if key[0] == "septet_provider_balance" and ("bridge", "smsclub") in key[1]
    ]
    assert len(smsclub) == 1
    assert samples[smsclub[0]] > 0
    assert value("septet_provider_balance_checked_timestamp_seconds", bridge="bsg") > 0
    assert not [
        key
        for key in samples
        if key[0] == "septet_provider_balance" and ("bridge", "dsc") in key[1]
    ]
    for name, labels in samples:
        for label, label_value in labels:
            if label == "node":
                # One series names this node (engine.cluster); no other carries the label.
                assert name == "septet_node_info", (name, label_value)
            elif label not in ("le", "currency"):
                assert label_value in LABEL_VALUES[label], (name, label, label_value)


def test_a_bridge_has_one_balance_series_whatever_currencies_it_names() -> None:
    metrics = Metrics(["bsg"])
    metrics.operations.balance("bsg", 10.0, "EUR", at=1.0)
    metrics.operations.balance("bsg", 9.0, "usd?", at=2.0)  # not ISO 4217: folded
    balances = {
        item.labels["currency"]: item.value
        for family in text_string_to_metric_families(metrics.exposition().decode())
        for item in family.samples
        if item.name == "septet_provider_balance"
    }
    assert balances == {"other": 9.0}
    assert sample(metrics, "septet_provider_balance_checked_timestamp_seconds", bridge="bsg") == 2
