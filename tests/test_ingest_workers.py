"""Ingest workers that come and go lose nothing: stable identities, and retiring a worker.

The retire test runs its own Mosquitto (the Debian binary, a config written here, a free port),
so queue limits and sessions are the test's own; the workers are real `its ingest` processes.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from ingest.broker import free_port
from ingest.mqtt import connect, make_client
from ingest.service import default_client_id, worker_client_id
from its.config import MqttEndpoint, Settings
from its.db import schema
from its.errors import ConfigError
from tests.conftest import wait_for
from tests.ingest_helpers import dumps, obs

MOSQUITTO = "/usr/sbin/mosquitto"
STATION = "JKT-SDR-N-001"  # 4 lanes


def _count(engine: Engine, table) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar()


def test_worker_ids_give_stable_client_ids() -> None:
    base = Settings(_env_file=None, topic_prefix="its/v1")
    assert worker_client_id(base) == default_client_id(base)  # one worker: today's default
    named = base.model_copy(update={"ingest_worker_id": "ingest-2"})
    assert worker_client_id(named) == "its-ingest-ingest-2"
    shared = base.model_copy(update={"ingest_share_group": "its-ingest"})
    with pytest.raises(ConfigError, match="ITS_INGEST_WORKER_ID"):
        worker_client_id(shared)
    both = shared.model_copy(update={"ingest_worker_id": "a"})
    assert worker_client_id(both) == "its-ingest-a"


class Proc:
    """An `its` subprocess whose output is collected as it runs."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "its.cli", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stdout))
        self.reader.start()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait(self, timeout: float) -> int:
        rc = self.proc.wait(timeout)
        self.reader.join(5)
        self.proc.stdout.close()
        return rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.wait(10)


def _env(pg_url: str, endpoint: MqttEndpoint, prefix: str, tmp_path: Path, **extra: str) -> dict:
    return {
        **os.environ,
        "ITS_DATABASE_URL": pg_url,
        "ITS_MQTT_URL": endpoint.url,
        "ITS_TOPIC_PREFIX": prefix,
        "ITS_DATA_DIR": str(tmp_path),
        "ITS_INGEST_SHARE_GROUP": "its-ingest",
        **extra,
    }


def test_a_shared_worker_without_an_id_refuses_to_start(
    pg_url: str, mosquitto: MqttEndpoint, topic_prefix: str, tmp_path: Path
) -> None:
    env = _env(pg_url, mosquitto, topic_prefix, tmp_path)
    env.pop("ITS_INGEST_WORKER_ID", None)
    env.pop("ITS_INGEST_CLIENT_ID", None)
    done = subprocess.run(
        [sys.executable, "-m", "its.cli", "ingest"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 2
    assert "needs a worker id" in done.stderr and "ITS_INGEST_WORKER_ID" in done.stderr


@pytest.fixture
def own_mosquitto(tmp_path: Path) -> Iterator[MqttEndpoint]:
    """A Mosquitto of this test's own: persistent sessions kept, queues big enough."""
    if not os.path.exists(MOSQUITTO):
        pytest.fail(f"{MOSQUITTO} is needed (run `make test`)")
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "max_queued_messages 100000\nlog_dest stderr\nlog_type error\n"
    )
    proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stderr=subprocess.PIPE, text=True)
    endpoint = MqttEndpoint("127.0.0.1", port)

    def accepting() -> bool:
        probe = make_client(endpoint, f"probe-{uuid.uuid4().hex[:6]}")
        try:
            probe.connect(endpoint.host, endpoint.port)
        except OSError:
            return proc.poll() is not None  # stop waiting if it died
        probe.disconnect()
        return True

    wait_for(accepting, what="own Mosquitto")
    assert proc.poll() is None, proc.stderr.read()
    yield endpoint
    proc.terminate()
    proc.wait(10)
    proc.stderr.close()


def _publish(endpoint: MqttEndpoint, prefix: str, intervals: range) -> None:
    """Publish one observation per interval at QoS 1 and wait until the broker has them all."""
    pub = make_client(endpoint, f"pub-{uuid.uuid4().hex[:8]}")
    connect(pub, endpoint)
    pub.loop_start()
    infos: list[mqtt.MQTTMessageInfo] = []
    for i in intervals:
        body = dumps(obs(STATION, i=i - 2000))  # up to ~17 h back: never in the future
        infos.append(pub.publish(f"{prefix}/stations/{STATION}/obs", body, qos=1))
    for info in infos:
        info.wait_for_publish(30)
        assert info.is_published()
    pub.disconnect()
    pub.loop_stop()


def test_a_killed_worker_is_retired_without_losing_its_share(
    pg_url: str, pg_engine: Engine, own_mosquitto: MqttEndpoint, topic_prefix: str, tmp_path: Path
) -> None:
    """Two workers on a shared subscription with persistent sessions; one is killed (no
    DISCONNECT: its session and its share of the messages stay at the broker); 600 messages are
    published while it is away; `its ingest --worker-id A --drain` stores its share and ends the
    session, after which the broker sends everything to B. Every reading lands exactly once."""
    env = _env(pg_url, own_mosquitto, topic_prefix, tmp_path)
    a = Proc(["ingest", "--worker-id", "A"], env)
    b = Proc(["ingest", "--worker-id", "B"], env)
    try:
        for w in (a, b):
            wait_for(lambda w=w: "subscribed" in w.output, timeout=30, what="worker subscribed")
        assert "its-ingest-A" not in b.output  # each its own client id (logged on problems)
        _publish(own_mosquitto, topic_prefix, range(200))
        wait_for(lambda: _count(pg_engine, schema.readings) == 800, what="first 800 readings")

        a.proc.send_signal(signal.SIGKILL)  # no DISCONNECT: the broker keeps A's session
        a.wait(10)
        _publish(own_mosquitto, topic_prefix, range(200, 800))
        # B stores its share; A's share waits in A's session (shown by the drain's count below)
        wait_for(lambda: _count(pg_engine, schema.readings) > 800, what="B's share")

        drain = Proc(["ingest", "--worker-id", "A", "--drain"], env)
        assert drain.wait(120) == 0, drain.output
        found = re.search(r"retired its-ingest-A: (\d+) messages, (\d+) readings", drain.output)
        assert found, drain.output
        # A's share of the 600 (Mosquitto deals them round robin) had waited in its session
        assert int(found.group(1)) > 0, drain.output
        print(f"drained for A: {found.group(0)}")

        _publish(own_mosquitto, topic_prefix, range(800, 1000))  # A is gone: B gets them all
        wait_for(lambda: _count(pg_engine, schema.readings) == 4000, what="all 4,000 readings")
        b.proc.send_signal(signal.SIGTERM)
        assert b.wait(30) == 0, b.output
    finally:
        a.kill()
        b.kill()
    with pg_engine.connect() as conn:
        per_interval = conn.execute(
            select(schema.readings.c.interval_start, func.count())
            .group_by(schema.readings.c.interval_start)
            .having(func.count() != 4)
        ).all()
    assert per_interval == [] and _count(pg_engine, schema.readings) == 4000
    assert _count(pg_engine, schema.dead_letters) == 0
    print(f"B: {re.search(r'ingest stopped: .*', b.output).group(0)}")


def test_draining_a_worker_the_broker_never_knew_ends_at_once(
    pg_url: str, pg_engine: Engine, own_mosquitto: MqttEndpoint, topic_prefix: str, tmp_path: Path
) -> None:
    env = _env(pg_url, own_mosquitto, topic_prefix, tmp_path)
    drain = Proc(["ingest", "--worker-id", "never-ran", "--drain"], env)
    assert drain.wait(60) == 0, drain.output
    assert "no session for its-ingest-never-ran" in drain.output
    assert "retired its-ingest-never-ran: 0 messages" in drain.output
