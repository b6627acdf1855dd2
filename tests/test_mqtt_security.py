"""Identity for sensors, proven on the real Mosquitto: one station cannot publish as another.

The broker runs with docker-compose.yml's own mosquitto.conf (paths and ports moved to a temporary
directory), the password and ACL files that `its mqtt credentials` generates for the sample
network, and a TLS certificate made by `its mqtt self-signed`'s code. Ingest (the real
``run_ingest``) logs in as its-ingest over mqtts on a shared subscription; the simulator logs each
station in as itself. The embedded broker is checked against the same credentials file.
"""

from __future__ import annotations

import gc
import getpass
import json
import os
import re
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import pytest
import yaml
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from ingest.broker import EmbeddedBroker, free_port
from ingest.mqtt import connect, make_client
from its.config import MqttEndpoint, Settings
from its.db import schema
from its.errors import ConfigError
from its.mqtt_auth import Credentials, Role, plan_credentials, write_broker_files
from its.mqtt_tls import make_trial_certificates
from its.network import Network
from sim.model import align
from sim.publisher import run_live
from tests.conftest import wait_for
from tests.test_ingest_e2e import start_ingest
from tests.test_sim_publish import LiveRun

MOSQUITTO = "/usr/sbin/mosquitto"
COMPOSE = Path(__file__).parents[1] / "docker-compose.yml"
A, B = "JKT-SDR-N-001", "JKT-SDR-N-002"
GATEWAY = "gw-test"


@dataclass
class SecureBroker:
    tls: MqttEndpoint  # no login; use .login()
    plain: MqttEndpoint  # the in-container health-check listener
    creds: Credentials
    dir: Path
    log: Path

    def as_user(self, username: str) -> MqttEndpoint:
        user = self.creds.require(username)
        return self.tls.login(user.username, user.password)


def compose_mosquitto_conf(base: Path, tls_port: int, plain_port: int) -> str:
    """docker-compose.yml's mosquitto.conf with its container paths and ports moved here."""
    compose = yaml.safe_load(COMPOSE.read_text())
    conf = compose["configs"]["mosquitto_conf"]["content"]
    health = compose["configs"]["mosquitto_health_acl"]["content"]
    (base / "health.acl").write_text(health.replace("$$", "$"))
    conf = conf.replace("$$", "$")  # compose's escape for a literal $
    conf = conf.replace("/mosquitto/config/", f"{base}/").replace("/mosquitto/certs/", f"{base}/")
    conf = conf.replace("/mosquitto/data/", f"{base}/data/")
    conf = re.sub(r"^listener 8883$", f"listener {tls_port} 127.0.0.1", conf, flags=re.M)
    conf = re.sub(
        r"^listener 1883 127.0.0.1$", f"listener {plain_port} 127.0.0.1", conf, flags=re.M
    )
    # as root Mosquitto drops to the `mosquitto` user, which cannot read the 0600 files here
    return conf + f"user {getpass.getuser()}\n"


@pytest.fixture(scope="module")
def secure_broker(
    tmp_path_factory: pytest.TempPathFactory, network: Network
) -> Iterator[SecureBroker]:
    base = tmp_path_factory.mktemp("mosquitto")
    (base / "data").mkdir()
    prefix = f"test/{uuid.uuid4().hex[:12]}/its/v1"
    ids = [s.station_id for s in network.stations]
    creds, _ = plan_credentials(prefix, ids, [GATEWAY, "sim-backfill"])
    write_broker_files(creds, base)
    tls = make_trial_certificates(base, ["localhost", "127.0.0.1"])
    tls_port, plain_port = free_port(), free_port()
    conf = base / "mosquitto.conf"
    conf.write_text(compose_mosquitto_conf(base, tls_port, plain_port))
    log = base / "mosquitto.log"
    with log.open("w") as out:
        proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT)

    def listening() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"mosquitto exited: {log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", tls_port), timeout=1).close()
            return True
        except OSError:
            return False

    try:
        wait_for(listening, what="mosquitto's TLS listener")
        yield SecureBroker(
            tls=MqttEndpoint("localhost", tls_port, tls=True, ca_file=tls.ca_cert),
            plain=MqttEndpoint("127.0.0.1", plain_port),
            creds=creds,
            dir=base,
            log=log,
        )
    finally:
        proc.terminate()
        proc.wait(10)


def _connack(endpoint: MqttEndpoint, will: tuple[str, bytes, int, bool] | None = None) -> str:
    """The broker's answer to a CONNECT as ``endpoint``'s user: 'Success' or the refusal."""
    answer: list[str] = []
    client = make_client(endpoint, f"probe-{uuid.uuid4().hex[:8]}", will=will)
    client.on_connect = lambda _c, _u, _f, rc, _p: answer.append(str(rc))
    client.on_disconnect = lambda _c, _u, _f, rc, _p: answer.append(str(rc))
    connect(client, endpoint)
    client.loop_start()
    try:
        return wait_for(lambda: answer, what="CONNACK")[0]
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.fixture
def secure_settings(secure_broker: SecureBroker, tmp_path: Path) -> Settings:
    return Settings(
        _env_file=None,
        data_dir=tmp_path,
        topic_prefix=secure_broker.creds.prefix,
        # a group per test: an earlier test's persistent ingest session would take a share
        ingest_share_group=f"its-ingest-{uuid.uuid4().hex[:8]}",
        sim_credentials_file=secure_broker.dir / "credentials.json",
    )


def _obs(station_id: str, when: datetime, count: int = 7) -> bytes:
    return orjson.dumps(
        {
            "v": 1,
            "station_id": station_id,
            "interval_start": when.isoformat().replace("+00:00", "Z"),
            "period_s": 30,
            "lanes": [{"lane": 1, "count": count, "occupancy": 0.05, "speed_kph": 50.0}],
        }
    )


def _rows(engine: Engine, station_id: str) -> int:
    with engine.connect() as conn:
        return conn.execute(
            select(func.count())
            .select_from(schema.readings)
            .where(schema.readings.c.station_id == station_id)
        ).scalar_one()


def _state(engine: Engine, station_id: str) -> str | None:
    with engine.connect() as conn:
        return conn.execute(
            select(schema.station_status.c.state).where(
                schema.station_status.c.station_id == station_id
            )
        ).scalar_one_or_none()


def _client(endpoint: MqttEndpoint, will: tuple[str, bytes, int, bool] | None = None):  # noqa: ANN202
    client = make_client(endpoint, f"pub-{uuid.uuid4().hex[:8]}", will=will)
    connected = threading.Event()
    client.on_connect = lambda _c, _u, _f, rc, _p: connected.set() if not rc.is_failure else None
    connect(client, endpoint)
    client.loop_start()
    assert connected.wait(10), "the station's login was refused"
    return client


def test_one_station_cannot_publish_as_another(
    secure_broker: SecureBroker, secure_settings: Settings, pg_engine: Engine
) -> None:
    prefix = secure_broker.creds.prefix
    ingest = start_ingest(secure_settings, secure_broker.as_user("its-ingest"), pg_engine)
    t0 = align(datetime.now(UTC) - timedelta(minutes=30))
    station_a = _client(secure_broker.as_user(f"station.{A}"))
    try:
        # A speaks as B: observations, a retained offline state (both dropped by the ACL)
        for info in (
            station_a.publish(f"{prefix}/stations/{B}/obs", _obs(B, t0), qos=1),
            station_a.publish(
                f"{prefix}/stations/{B}/state", b'{"state": "offline"}', qos=1, retain=True
            ),
            station_a.publish(f"{prefix}/gateways/{GATEWAY}/obs", orjson.dumps([]), qos=1),
            station_a.publish(f"{prefix}/stations/{A}/obs", _obs(A, t0), qos=1),
        ):
            info.wait_for_publish(10)
        # messages of one client reach a subscriber in order: once A's own reading is stored,
        # anything A sent as B before it would have been too
        wait_for(lambda: _rows(pg_engine, A) == 1, what="station A's own reading")
        assert _rows(pg_engine, B) == 0
        assert _state(pg_engine, B) is None
        with pg_engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(schema.dead_letters)).scalar() == 0
    finally:
        station_a.disconnect()
        station_a.loop_stop()
    # B itself may, over the same TLS listener: proves the refusal above was about identity
    station_b = _client(secure_broker.as_user(f"station.{B}"))
    station_b.publish(f"{prefix}/stations/{B}/obs", _obs(B, t0), qos=1).wait_for_publish(10)
    wait_for(lambda: _rows(pg_engine, B) == 1, what="station B's own reading")
    station_b.disconnect()
    station_b.loop_stop()
    ingest.stop.set()
    ingest.thread.join(15)
    assert ingest.result["stats"].dead_letters == 0


def test_logins_that_are_refused(secure_broker: SecureBroker) -> None:
    ok = secure_broker.as_user(f"station.{A}")
    assert _connack(ok) == "Success"
    refused = {
        "unknown user": secure_broker.tls.login("station.NOT-IN-NETWORK", "x" * 32),
        "wrong password": ok.login(ok.username, "not-" + (ok.password or "")),
        "anonymous": secure_broker.tls,
        "another user's password": ok.login(f"station.{B}", ok.password),
    }
    answers = {why: _connack(ep) for why, ep in refused.items()}
    assert answers == dict.fromkeys(refused, "Not authorized"), answers


class Monitor:
    """its-monitor subscribed to the whole prefix: what the broker let through."""

    def __init__(self, broker: SecureBroker) -> None:
        self.topics: list[str] = []
        endpoint = broker.as_user("its-monitor")
        self.client = make_client(endpoint, f"mon-{uuid.uuid4().hex[:6]}")
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_a: subscribed.set()
        # live messages only: a Will of an earlier test is retained
        self.client.on_message = lambda _c, _u, m: None if m.retain else self.topics.append(m.topic)
        self.client.on_connect = lambda c, *_a: c.subscribe(f"{broker.creds.prefix}/#", qos=1)
        connect(self.client, endpoint)
        self.client.loop_start()
        assert subscribed.wait(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _die(client: mqtt.Client) -> None:
    """Lose the connection without a DISCONNECT, as a station losing power: the Will fires."""
    client.loop_stop()
    client.socket().close()


def test_a_last_will_cannot_mark_another_station_offline(secure_broker: SecureBroker) -> None:
    prefix = secure_broker.creds.prefix
    monitor = Monitor(secure_broker)
    try:
        will_as_b = (f"{prefix}/stations/{B}/state", b'{"state": "offline"}', 1, True)
        _die(_client(secure_broker.as_user(f"station.{A}"), will=will_as_b))
        own_will = (f"{prefix}/stations/{A}/state", b'{"state": "offline"}', 1, True)
        _die(_client(secure_broker.as_user(f"station.{A}"), will=own_will))
        # the broker handles the two lost connections in order: A's own Will arrives, and
        # the one on B's topic never did
        wait_for(lambda: f"{prefix}/stations/{A}/state" in monitor.topics, what="A's own Will")
        assert monitor.topics == [f"{prefix}/stations/{A}/state"]
    finally:
        monitor.close()


# paho leaves the socket of a failed TLS handshake to the garbage collector
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_tls_is_required_and_checked(secure_broker: SecureBroker, tmp_path: Path) -> None:
    station = secure_broker.as_user(f"station.{A}")
    # the broker's certificate, checked against another CA: refused by the client
    other = make_trial_certificates(tmp_path / "other", ["localhost"])
    with pytest.raises(ConfigError, match="TLS with the MQTT broker"):
        _connack(
            MqttEndpoint(
                "localhost", station.port, station.username, station.password, True, other.ca_cert
            )
        )
    # the plain listener (health checks inside the container) lets anonymous clients read the
    # version only: what they publish reaches nobody
    monitor = Monitor(secure_broker)
    prefix = secure_broker.creds.prefix
    anon = make_client(secure_broker.plain, f"anon-{uuid.uuid4().hex[:6]}")
    connect(anon, secure_broker.plain)
    anon.loop_start()
    anon.publish(f"{prefix}/stations/{A}/obs", _obs(A, datetime.now(UTC)), qos=1).wait_for_publish(
        10
    )
    marker = _client(station)
    marker.publish(f"{prefix}/stations/{A}/state", b'{"state":"online"}', qos=1).wait_for_publish(
        10
    )
    wait_for(lambda: f"{prefix}/stations/{A}/state" in monitor.topics, what="the marker")
    assert monitor.topics == [f"{prefix}/stations/{A}/state"]
    for c in (anon, marker):
        c.disconnect()
        c.loop_stop()
    monitor.close()
    gc.collect()  # the failed handshake's socket goes here, under this test's filter


def test_simulator_publishes_over_mqtts_with_each_stations_login(
    secure_broker: SecureBroker, secure_settings: Settings, pg_engine: Engine, network: Network
) -> None:
    ingest = start_ingest(secure_settings, secure_broker.as_user("its-ingest"), pg_engine)
    everyone = {s.station_id for s in network.stations}

    def stations_stored() -> set[str]:
        with pg_engine.connect() as conn:
            return set(conn.execute(select(schema.readings.c.station_id).distinct()).scalars())

    start = align(datetime.now(UTC) - timedelta(minutes=10))
    run = LiveRun(secure_settings, secure_broker.tls, speed=600.0, start=start, network=network)
    try:
        wait_for(lambda: stations_stored() == everyone, timeout=60, what="every station stored")
        wait_for(lambda: len(run.ticks) >= 2, timeout=30, what="two intervals")
    finally:
        stats = run.finish()
    # on the clean stop every station said offline for itself
    wait_for(
        lambda: {_state(pg_engine, s) for s in everyone} == {"offline"},
        what="every station offline",
    )
    ingest.stop.set()
    ingest.thread.join(15)
    assert stats.published >= 2 * len(everyone)
    assert ingest.result["stats"].dead_letters == 0


# --------------------------------------------------------------------------- embedded broker


@pytest.fixture
def embedded_secure(tmp_path: Path, network: Network, topic_prefix: str) -> Iterator[SecureBroker]:
    creds, _ = plan_credentials(topic_prefix, [s.station_id for s in network.stations])
    write_broker_files(creds, tmp_path)
    broker = EmbeddedBroker(port=0, credentials_file=tmp_path / "credentials.json")
    endpoint = broker.start()
    yield SecureBroker(endpoint, endpoint, creds, tmp_path, tmp_path / "none")
    broker.stop()


def test_embedded_broker_enforces_logins_and_acls(
    embedded_secure: SecureBroker, settings: Settings, pg_engine: Engine
) -> None:
    broker = embedded_secure
    ok = broker.tls.login(f"station.{A}", broker.creds.for_station(A).password)
    refused = {
        "anonymous": broker.tls,
        "unknown user": broker.tls.login("station.nobody", "x"),
        "wrong password": ok.login(ok.username, "wrong"),
        "Last Will as another station": None,
    }
    answers = {why: _connack(ep) for why, ep in refused.items() if ep is not None}
    will_as_b = (f"{settings.topic_prefix}/stations/{B}/state", b'{"state":"offline"}', 1, True)
    answers["Last Will as another station"] = _connack(ok, will=will_as_b)
    assert answers == dict.fromkeys(refused, "Not authorized"), answers

    ingest_user = broker.creds.for_service(Role.INGEST)
    ingest = start_ingest(
        settings, broker.tls.login(ingest_user.username, ingest_user.password), pg_engine
    )
    t0 = align(datetime.now(UTC) - timedelta(minutes=30))
    prefix = settings.topic_prefix
    station_a = _client(ok)
    for info in (
        station_a.publish(f"{prefix}/stations/{B}/obs", _obs(B, t0), qos=1),
        station_a.publish(
            f"{prefix}/stations/{B}/state", b'{"state":"offline"}', qos=1, retain=True
        ),
        station_a.publish(f"{prefix}/stations/{A}/obs", _obs(A, t0), qos=1),
    ):
        info.wait_for_publish(10)
    wait_for(lambda: _rows(pg_engine, A) == 1, what="station A's own reading")
    station_a.disconnect()
    station_a.loop_stop()
    ingest.stop.set()
    ingest.thread.join(15)
    assert _rows(pg_engine, B) == 0
    assert _state(pg_engine, B) is None


def test_embedded_broker_refuses_a_missing_credentials_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="its mqtt credentials"):
        EmbeddedBroker(port=0, credentials_file=tmp_path / "missing.json").start()


def test_passwords_need_not_sit_in_the_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cret-from-a-file\n")
    for key in [k for k in os.environ if k.startswith("ITS_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("ITS_MQTT_URL", "mqtts://broker.example:8884")
    monkeypatch.setenv("ITS_MQTT_USERNAME", "its-ingest")
    monkeypatch.setenv("ITS_MQTT_PASSWORD_FILE", str(secret))
    monkeypatch.setenv("ITS_MQTT_CA_FILE", str(tmp_path / "ca.crt"))
    ep = Settings(_env_file=None).mqtt_endpoint
    assert ep is not None
    assert (ep.host, ep.port, ep.tls, ep.username, ep.password) == (
        "broker.example",
        8884,
        True,
        "its-ingest",
        "s3cret-from-a-file",
    )
    assert ep.ca_file == tmp_path / "ca.crt"
    assert "s3cret" not in repr(ep) and "s3cret" not in ep.url
    monkeypatch.setenv("ITS_MQTT_PASSWORD", "from-env")  # wins over the file
    assert Settings(_env_file=None).mqtt_endpoint.password == "from-env"  # type: ignore[union-attr]
    url = MqttEndpoint.parse("mqtts://u%40x:p%3Aw@host")
    assert (url.port, url.username, url.password) == (8883, "u@x", "p:w")


def test_documented_client_works_over_tls_with_its_station_login(
    secure_broker: SecureBroker, secure_settings: Settings, pg_engine: Engine, tmp_path: Path
) -> None:
    from tests.test_mqtt_docs import _example

    ingest = start_ingest(secure_settings, secure_broker.as_user("its-ingest"), pg_engine)
    script = tmp_path / "station.py"
    script.write_text(_example())
    env = {
        **os.environ,
        "MQTT_HOST": "localhost",
        "MQTT_PORT": str(secure_broker.tls.port),
        "MQTT_PASSWORD": secure_broker.creds.for_station(A).password,
        "MQTT_CA_FILE": str(secure_broker.tls.ca_file),
        "TOPIC_PREFIX": secure_broker.creds.prefix,
    }
    try:
        done = subprocess.run(
            [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        wait_for(lambda: _rows(pg_engine, A) == 20, what="the example's 20 lane readings")
        wait_for(lambda: _state(pg_engine, A) == "offline", what="the example's goodbye")
    finally:
        ingest.stop.set()
        ingest.thread.join(15)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # as above
def test_healthz_checks_the_tls_broker_without_a_login(
    secure_broker: SecureBroker, settings: Settings, sqlite_engine: Engine, network: Network
) -> None:
    from fastapi.testclient import TestClient

    from its.api.app import create_app

    tls = secure_broker.tls
    health = {}
    for name, ca in (("own CA", tls.ca_file), ("another CA", None)):
        url = f"mqtts://localhost:{tls.port}"
        app = create_app(
            settings.model_copy(update={"mqtt_url": url, "mqtt_ca_file": ca}),
            engine=sqlite_engine,
            network=network,
        )
        answer = TestClient(app).get("/healthz")
        health[name] = (answer.status_code, answer.json()["broker"])
    gc.collect()
    assert health == {"own CA": (200, "ok"), "another CA": (503, "unreachable")}


def test_backfill_logs_in_as_its_gateway(
    secure_broker: SecureBroker, secure_settings: Settings, pg_engine: Engine, network: Network
) -> None:
    from sim.backfill import backfill

    ingest = start_ingest(secure_settings, secure_broker.as_user("its-ingest"), pg_engine)
    try:
        stats = backfill(
            secure_settings, secure_broker.tls, 0.05, progress=False, network=network, seed=3
        )
        wait_for(lambda: _all_rows(pg_engine) == stats.readings, timeout=60, what="the backfill")
    finally:
        ingest.stop.set()
        ingest.thread.join(15)
    assert stats.readings == 6 * sum(s.lanes for s in network.stations)
    # without the gateway's login the backfill says how to make one, before connecting
    creds, _ = plan_credentials(secure_broker.creds.prefix, [A])
    other = secure_broker.dir / "no-gateway"
    write_broker_files(creds, other)
    no_gateway = secure_settings.model_copy(
        update={"sim_credentials_file": other / "credentials.json"}
    )
    with pytest.raises(ConfigError, match="--gateway sim-backfill"):
        backfill(no_gateway, secure_broker.tls, 0.05, progress=False, network=network)


def _all_rows(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(schema.readings)).scalar_one()


def test_simulator_names_a_refused_login(
    secure_broker: SecureBroker, secure_settings: Settings, network: Network, tmp_path: Path
) -> None:
    data = json.loads((secure_broker.dir / "credentials.json").read_text())
    for user in data["users"]:
        if user["username"] == f"station.{B}":
            user["password"] = "stale-password"
    stale = tmp_path / "credentials.json"
    stale.write_text(json.dumps(data))
    settings = secure_settings.model_copy(update={"sim_credentials_file": stale})
    with pytest.raises(ConfigError, match=f"refused the login of simulated station {B}"):
        run_live(settings, secure_broker.tls, threading.Event(), network=network)
