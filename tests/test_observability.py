"""Prometheus metrics on real services: ingest through real Mosquitto into PostgreSQL, the web
process's /metrics after real API calls, and the alerts evaluator's loop on a real store."""

from __future__ import annotations

import threading
import urllib.request
import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from sqlalchemy.engine import Engine

from ingest.service import run_ingest
from its.alerts.config import AlertSettings
from its.alerts.evaluator import run_evaluator
from its.api.app import create_app
from its.config import MqttEndpoint, Settings
from its.network import Network
from its.telemetry import AlertMetrics, IngestMetrics, dead_letter_class, serve
from tests.conftest import add_key, wait_for
from tests.ingest_helpers import dumps, obs
from tests.test_alerts_evaluator import SEG, T0, feed
from tests.test_ingest_e2e import publisher


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


@pytest.fixture
def ingesting(
    settings: Settings, mosquitto: MqttEndpoint, pg_engine: Engine
) -> Iterator[tuple[CollectorRegistry, threading.Thread, threading.Event]]:
    registry, stop, ready = CollectorRegistry(), threading.Event(), threading.Event()
    metrics = IngestMetrics(registry)
    thread = threading.Thread(
        target=lambda: run_ingest(
            settings, mosquitto, stop, engine=pg_engine, client_id=f"t-{uuid.uuid4().hex}",
            ready=ready, metrics=metrics,
        ),
        daemon=True,
    )  # fmt: skip
    thread.start()
    assert ready.wait(15), "ingest did not subscribe"
    yield registry, thread, stop
    stop.set()
    thread.join(15)


def test_ingest_metrics_count_exactly_what_came_through_mosquitto(
    settings: Settings, mosquitto: MqttEndpoint, ingesting
) -> None:
    registry, thread, stop = ingesting
    assert value(registry, "its_ingest_broker_connected") == 1
    prefix = settings.topic_prefix
    pub = publisher(mosquitto)
    sent = []
    for i in range(10):  # 10 observations of 4 lanes
        topic = f"{prefix}/stations/JKT-SDR-N-001/obs"
        sent.append(pub.publish(topic, dumps(obs("JKT-SDR-N-001", i)), qos=1))
    for i in range(3):  # resent: 3 x 4 duplicate readings
        sent.append(pub.publish(f"{prefix}/stations/JKT-SDR-N-001/obs", dumps(obs(i=i)), qos=1))
    bad = [
        (f"{prefix}/stations/JKT-SDR-N-001/obs", b"{not json"),
        (f"{prefix}/stations/NOPE-1/obs", dumps(obs("NOPE-1"))),
        (f"{prefix}/stations/JKT-SDR-N-001/obs", dumps(obs(period_s="thirty"))),
    ]
    for topic, payload in bad:
        sent.append(pub.publish(topic, payload, qos=1))
    for info in sent:
        info.wait_for_publish(10)
    pub.disconnect()
    pub.loop_stop()

    wait_for(lambda: value(registry, "its_ingest_messages_total") == 16, what="16 messages")
    assert value(registry, "its_ingest_readings_inserted_total") == 40
    assert value(registry, "its_ingest_duplicates_total") == 12
    assert value(registry, "its_ingest_dead_letters_total", reason="json") == 1
    assert value(registry, "its_ingest_dead_letters_total", reason="unknown_station") == 1
    assert value(registry, "its_ingest_dead_letters_total", reason="schema") == 1
    assert value(registry, "its_ingest_dead_letters_total", reason="internal") == 0
    assert value(registry, "its_ingest_write_errors_total") == 0
    batches = value(registry, "its_ingest_batch_rows_count")
    assert batches and batches >= 1
    assert value(registry, "its_ingest_batch_rows_sum") == 52  # every lane row written once
    assert value(registry, "its_ingest_commit_seconds_count") == batches
    newest = obs(i=9)["interval_start"]
    from datetime import datetime

    expected = datetime.fromisoformat(newest.replace("Z", "+00:00")).timestamp()
    assert value(registry, "its_ingest_newest_reading_timestamp_seconds") == expected
    lag = value(registry, "its_ingest_lag_seconds")
    assert lag is not None and lag > 0  # the helpers' readings start an hour ago

    stop.set()
    thread.join(15)
    assert value(registry, "its_ingest_broker_connected") == 0
    assert value(registry, "its_ingest_broker_disconnects_total") == 0  # we left; not a loss


@pytest.mark.parametrize(
    ("reason", "cls"),
    [
        ("invalid JSON: unexpected character: line 1 column 2 (char 1)", "json"),
        ("unknown station 'NOPE-1'", "unknown_station"),
        ("payload of 300,000 bytes exceeds the limit of 262,144 bytes", "too_large"),
        ("topic 'x/y' is not under prefix 'its/v1'", "topic"),
        ("station JKT-1 has 3 lanes; got lane(s) [4]", "lanes"),
        ("station_id 'A-1' does not match the topic's 'A-2'", "station_mismatch"),
        (
            "2 of 5 gateway items rejected (payload: those items): item 0: unknown station",
            "gateway_items",
        ),  # noqa: E501
        ("internal error: KeyError: 'x'", "internal"),
        ("the store refused this message: DataError: ...", "store_refused"),
        ("period_s: Input should be a valid integer", "schema"),
        (
            "interval_start 2026-06-01T10:20:00Z is older than the raw retention "
            "(ITS_RETENTION_RAW_DAYS=90: before 2026-06-01T12:00:00Z); ...",
            "too_old",
        ),
    ],
)
def test_dead_letter_reasons_fall_in_fixed_classes(reason: str, cls: str) -> None:
    assert dead_letter_class(reason) == cls


@pytest.fixture
def web(sqlite_engine: Engine, network: Network, settings: Settings) -> TestClient:
    return TestClient(create_app(settings, engine=sqlite_engine, network=network))


def test_web_metrics_time_each_route_template_and_need_a_key(
    web: TestClient, sqlite_engine: Engine
) -> None:
    key = add_key(sqlite_engine, "read", name="prometheus")
    assert web.get("/api/v1/alerts/1", headers={"X-API-Key": key}).status_code == 404
    assert web.get("/api/v1/alerts/2", headers={"X-API-Key": key}).status_code == 404
    assert web.get("/api/v1/alerts/3").status_code == 401
    assert web.get(f"/no/such/{uuid.uuid4().hex}").status_code == 404

    refused = web.get("/metrics")
    assert refused.status_code == 401 and "API key" in refused.json()["detail"]
    assert web.get("/metrics", headers={"Authorization": "Bearer itsk_x.nope"}).status_code == 401
    r = web.get("/metrics", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    route = 'method="GET",route="/api/v1/alerts/{alert_id}"'
    assert f"its_http_request_seconds_count{{{route}}} 3.0" in text
    assert f'its_http_responses_total{{{route},status="4xx"}} 3.0' in text
    assert 'its_http_responses_total{method="GET",route="other",status="4xx"} 1.0' in text
    assert uuid.UUID  # the odd path itself never becomes a label:
    assert "/no/such" not in text
    assert "/metrics" not in text.replace("its_http", "")  # /metrics is not timed
    assert web.get("/metrics", headers={"X-API-Key": key}).status_code == 200


def test_public_metrics_need_no_key(
    sqlite_engine: Engine, network: Network, settings: Settings
) -> None:
    public = settings.model_copy(update={"metrics_public": True})
    client = TestClient(create_app(public, engine=sqlite_engine, network=network))
    assert client.get("/healthz").status_code in (200, 503)
    r = client.get("/metrics")
    assert r.status_code == 200
    assert 'its_http_request_seconds_count{method="GET",route="/healthz"} 1.0' in r.text


def test_two_apps_in_one_process_keep_their_own_metrics(
    sqlite_engine: Engine, network: Network, settings: Settings
) -> None:
    public = settings.model_copy(update={"metrics_public": True})
    a = TestClient(create_app(public, engine=sqlite_engine, network=network))
    b = TestClient(create_app(public, engine=sqlite_engine, network=network))
    a.get("/healthz")
    assert "/healthz" in a.get("/metrics").text
    assert "/healthz" not in b.get("/metrics").text


def test_evaluator_step_metrics_move(engine: Engine, network: Network, settings: Settings) -> None:
    feed(engine, network, SEG, T0, 40, ratio=0.3)
    registry, stop = CollectorRegistry(), threading.Event()
    metrics = AlertMetrics(registry)
    # one bucket per step, so the evaluator starts behind and catches up step by step
    cfg = AlertSettings(_env_file=None, max_buckets_per_step=1)
    worker = threading.Thread(
        target=lambda: run_evaluator(
            settings, engine, network, stop, interval_s=0.05, alert_settings=cfg, metrics=metrics
        )
    )
    worker.start()
    try:
        wait_for(
            lambda: value(registry, "its_alerts_events_total", rule="congestion", event="raised"),
            what="a congestion alert counted",
        )
        behind_seen = value(registry, "its_alerts_buckets_behind")
        wait_for(lambda: value(registry, "its_alerts_buckets_behind") == 0, what="caught up")
    finally:
        stop.set()
        worker.join(30)
    assert not worker.is_alive()
    assert behind_seen is not None and behind_seen > 0
    steps = value(registry, "its_alerts_steps_total", outcome="led")
    assert steps and steps >= 2
    assert value(registry, "its_alerts_step_seconds_count") == steps
    assert value(registry, "its_alerts_buckets_evaluated_total") >= 2
    assert value(registry, "its_alerts_leading") == 1
    assert value(registry, "its_alerts_steps_total", outcome="failed") == 0


def test_metrics_port_serves_the_registry_over_http() -> None:
    registry = CollectorRegistry()
    IngestMetrics(registry).messages.inc(7)
    server = serve(registry, 0, "127.0.0.1")
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310 - loopback
            body = r.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    assert "its_ingest_messages_total 7.0" in body


def test_a_taken_metrics_port_is_a_clear_error(settings: Settings) -> None:
    import socket

    import typer

    from its.cli import _metrics_registry

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = settings.model_copy(update={"metrics_port": port})
        with pytest.raises(typer.BadParameter, match=f"127.0.0.1:{port}.*ITS_METRICS_PORT"):
            _metrics_registry(busy, "ingest")
    assert _metrics_registry(settings, "ingest") is None  # unset: no server
