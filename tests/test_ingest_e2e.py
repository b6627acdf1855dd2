"""Ingest end to end through a real broker (Mosquitto and the embedded one) into the store."""

from __future__ import annotations

import os
import signal
import threading
import uuid
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from ingest.mqtt import connect, make_client
from ingest.service import run_ingest
from its.config import MqttEndpoint, Settings
from its.db import schema
from tests.conftest import wait_for
from tests.ingest_helpers import IngestProcess, dumps, obs


def _count(engine: Engine, table) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar()


class Running:
    def __init__(self, thread: threading.Thread, stop: threading.Event, result: dict) -> None:
        self.thread, self.stop, self.result = thread, stop, result


def start_ingest(settings: Settings, endpoint: MqttEndpoint, engine: Engine) -> Running:
    stop, ready, result = threading.Event(), threading.Event(), {}

    def target() -> None:
        result["stats"] = run_ingest(
            settings, endpoint, stop, engine=engine, client_id=f"t-{uuid.uuid4().hex}", ready=ready
        )

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    assert ready.wait(15), "ingest did not subscribe"
    return Running(thread, stop, result)


def publisher(endpoint: MqttEndpoint, **kw) -> mqtt.Client:
    client = make_client(endpoint, f"pub-{uuid.uuid4().hex[:8]}", **kw)
    connect(client, endpoint)
    client.loop_start()
    return client


@pytest.fixture(params=["mosquitto", "embedded_broker"])
def broker(request: pytest.FixtureRequest) -> MqttEndpoint:
    return request.getfixturevalue(request.param)


@pytest.fixture
def ingest(settings: Settings, broker: MqttEndpoint, pg_engine: Engine) -> Iterator[Running]:
    run = start_ingest(settings, broker, pg_engine)
    yield run
    run.stop.set()
    run.thread.join(15)
    assert not run.thread.is_alive()


def test_observations_land_exactly_once(
    settings: Settings, broker: MqttEndpoint, pg_engine: Engine, ingest: Running
) -> None:
    prefix = settings.topic_prefix
    pub = publisher(broker)
    stations = ["JKT-SDR-N-001", "JKT-SDR-N-002", "JKT-GTS-E-001"]
    lanes = {"JKT-SDR-N-001": 4, "JKT-SDR-N-002": 4, "JKT-GTS-E-001": 3}
    infos = []
    for i in range(20):
        for st in stations:
            body = dumps(obs(st, i=i, n_lanes=lanes[st]))
            infos.append(pub.publish(f"{prefix}/stations/{st}/obs", body, qos=1))
    expected = 20 * sum(lanes.values())
    wait_for(lambda: _count(pg_engine, schema.readings) == expected, what=f"{expected} readings")
    # resend ten observations: nothing changes
    for i in range(10):
        pub.publish(f"{prefix}/stations/JKT-SDR-N-001/obs", dumps(obs(i=i)), qos=1)
    pub.publish(f"{prefix}/stations/JKT-SDR-N-001/obs", b"not json", qos=1)
    wait_for(lambda: _count(pg_engine, schema.dead_letters) == 1, what="the dead letter")
    wait_for(lambda: ingest.thread.is_alive() and _count(pg_engine, schema.readings) == expected)
    with pg_engine.connect() as conn:
        nulls = conn.execute(
            select(func.count())
            .select_from(schema.readings)
            .where(schema.readings.c.lane == 2, schema.readings.c.speed_kph.is_(None))
        ).scalar()
        reason = conn.execute(select(schema.dead_letters.c.reason)).scalar_one()
    assert nulls == 20 * 3  # lane 2 never measures speed, on every station
    assert "invalid JSON" in reason
    pub.loop_stop()
    pub.disconnect()


def test_last_will_marks_station_offline(
    settings: Settings, broker: MqttEndpoint, pg_engine: Engine, ingest: Running
) -> None:
    topic = f"{settings.topic_prefix}/stations/JKT-RSD-S-001/state"
    station = publisher(broker, will=(topic, b'{"state": "offline"}', 1, True))
    station.publish(topic, b'{"state": "online"}', qos=1, retain=True).wait_for_publish(5)

    def state() -> str | None:
        with pg_engine.connect() as conn:
            return conn.execute(select(schema.station_status.c.state)).scalar()

    wait_for(lambda: state() == "online", what="online state")
    station.loop_stop()
    station.socket().close()  # dies without DISCONNECT: the broker publishes the Last Will
    wait_for(lambda: state() == "offline", timeout=30, what="Last Will offline state")
    # clear the retained message so it does not linger on the shared broker
    cleaner = publisher(broker)
    cleaner.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)
    cleaner.loop_stop()
    cleaner.disconnect()


def test_its_ingest_flushes_on_sigterm(
    pg_url: str, pg_engine: Engine, mosquitto: MqttEndpoint, topic_prefix: str, tmp_path
) -> None:
    env = {
        **os.environ,
        "ITS_DATABASE_URL": pg_url,
        "ITS_MQTT_URL": mosquitto.url,
        "ITS_TOPIC_PREFIX": topic_prefix,
        "ITS_DATA_DIR": str(tmp_path),
        "ITS_INGEST_BATCH_SECONDS": "30",  # only the shutdown flush can write these
        "ITS_INGEST_IDLE_FLUSH_S": "0",
        "ITS_INGEST_CLIENT_ID": f"sigterm-{uuid.uuid4().hex[:8]}",
    }
    ingest = IngestProcess(env)
    proc, lines = ingest.proc, ingest.lines
    try:
        wait_for(lambda: any("subscribed" in ln for ln in lines), timeout=30, what="subscribe")
        pub = publisher(mosquitto)
        for i in range(5):
            pub.publish(f"{topic_prefix}/stations/JKT-SDR-N-001/obs", dumps(obs(i=i)), qos=1)
        wait_for(lambda: pub.want_write() is False and not pub._out_messages, what="publishes")
        pub.loop_stop()
        pub.disconnect()
        assert _count(pg_engine, schema.readings) == 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        ingest.close()
    assert _count(pg_engine, schema.readings) == 20, "".join(lines)
    assert "20 readings stored" in "".join(lines)
