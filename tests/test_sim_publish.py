"""The simulator through real brokers: live publishing, Last Will of a silent station, backfill
into the store through ingest, and the CLI's option checks."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import orjson
import paho.mqtt.client as mqtt
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from ingest.mqtt import connect, make_client
from its.config import MqttEndpoint, Settings
from its.contract import parse_observation, parse_state
from its.db import schema
from its.network import Network
from sim.backfill import backfill
from sim.model import align
from sim.publisher import SimStats, run_live
from sim.scenario import Scenario, SensorFault
from tests.conftest import wait_for
from tests.test_ingest_e2e import start_ingest


class Collector:
    """A subscriber on the test's prefix that keeps every message (retained ones too)."""

    def __init__(self, endpoint: MqttEndpoint, prefix: str) -> None:
        self.prefix = prefix
        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self.client = make_client(endpoint, f"collect-{uuid.uuid4().hex[:8]}")
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_a: subscribed.set()
        self.client.on_connect = lambda c, *_a: c.subscribe(f"{prefix}/#", qos=1)
        connect(self.client, endpoint)
        self.client.loop_start()
        assert subscribed.wait(10), "collector did not subscribe"

    def _on_message(self, _c: object, _u: object, m: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((m.topic, bytes(m.payload), bool(m.retain)))

    def snapshot(self) -> list[tuple[str, bytes, bool]]:
        with self._lock:
            return list(self.messages)

    def obs_stations(self) -> set[str]:
        return {t.split("/")[-2] for t, _p, _r in self.snapshot() if t.endswith("/obs")}

    def states(self, station_id: str) -> list[dict]:
        topic = f"{self.prefix}/stations/{station_id}/state"
        return [orjson.loads(p) for t, p, _r in self.snapshot() if t == topic and p]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _clear_retained(endpoint: MqttEndpoint, prefix: str, network: Network) -> None:
    """Leave nothing retained on the shared Mosquitto."""
    c = make_client(endpoint, f"clean-{uuid.uuid4().hex[:8]}")
    connect(c, endpoint)
    c.loop_start()
    infos = [
        c.publish(f"{prefix}/stations/{s.station_id}/state", b"", qos=1, retain=True)
        for s in network.stations
    ]
    for info in infos:
        info.wait_for_publish(10)
    c.loop_stop()
    c.disconnect()


class LiveRun:
    def __init__(self, settings: Settings, endpoint: MqttEndpoint, **kwargs: object) -> None:
        self.stop = threading.Event()
        self.result: dict[str, object] = {}
        self.ticks: list[datetime] = []

        def target() -> None:
            try:
                self.result["stats"] = run_live(
                    settings,
                    endpoint,
                    self.stop,
                    on_tick=lambda t, _obs: self.ticks.append(t),
                    **kwargs,  # type: ignore[arg-type]
                )
            except Exception as exc:  # noqa: BLE001 - the test reports it
                self.result["error"] = exc

        self.thread = threading.Thread(target=target, daemon=True)
        self.thread.start()

    def finish(self) -> SimStats:
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive(), "run_live did not stop"
        assert "error" not in self.result, self.result.get("error")
        return self.result["stats"]  # type: ignore[return-value]


@pytest.fixture(params=["mosquitto", "embedded_broker"])
def broker(request: pytest.FixtureRequest) -> MqttEndpoint:
    """Mosquitto, and the embedded amqtt broker that `its up` runs by default."""
    return request.getfixturevalue(request.param)


def _collector(endpoint: MqttEndpoint, prefix: str, network: Network) -> Iterator[Collector]:
    col = Collector(endpoint, prefix)
    yield col
    col.close()
    _clear_retained(endpoint, prefix, network)


@pytest.fixture
def collector(settings: Settings, mosquitto: MqttEndpoint, network: Network) -> Iterator[Collector]:
    yield from _collector(mosquitto, settings.topic_prefix, network)


@pytest.fixture
def broker_collector(
    settings: Settings, broker: MqttEndpoint, network: Network
) -> Iterator[Collector]:
    yield from _collector(broker, settings.topic_prefix, network)


def test_live_run_publishes_every_station_and_says_offline_on_stop(
    settings: Settings, mosquitto: MqttEndpoint, network: Network, collector: Collector
) -> None:
    everyone = {s.station_id for s in network.stations}
    start = align(datetime.now(UTC) - timedelta(minutes=10))
    run = LiveRun(settings, mosquitto, speed=600.0, start=start, seed=4, network=network)
    wait_for(lambda: collector.obs_stations() == everyone, timeout=30, what="obs of every station")
    wait_for(lambda: len(run.ticks) >= 5, timeout=30, what="five intervals")
    stats = run.finish()
    assert stats.published >= 5 * len(everyone)
    assert stats.start == start
    # every station said online when it connected, and offline (stamped) on the clean stop
    sid = network.stations[0].station_id
    wait_for(
        lambda: [s["state"] for s in collector.states(sid)] == ["online", "offline"],
        what="online then offline",
    )
    for st in network.stations:
        wait_for(lambda st=st: len(collector.states(st.station_id)) == 2, what=st.station_id)
        online, offline = (parse_state(orjson.dumps(s)) for s in collector.states(st.station_id))
        assert (online.state, offline.state) == ("online", "offline")
        assert offline.at is not None  # a deliberate stop is stamped; a Last Will is not
    now = datetime.now(UTC)
    seen = 0
    for topic, payload, _retained in collector.snapshot():
        if topic.endswith("/obs"):
            obs = parse_observation(payload, now=now, max_future_s=0)  # never the future
            assert topic == f"{settings.topic_prefix}/stations/{obs.station_id}/obs"
            assert start <= obs.interval_start <= now - timedelta(seconds=obs.period_s)
            seen += 1
    assert seen == stats.published  # the offline states came after every observation


def test_silent_fault_fires_the_last_will_then_the_station_returns(
    settings: Settings, broker: MqttEndpoint, network: Network, broker_collector: Collector
) -> None:
    collector = broker_collector
    start = align(datetime.now(UTC) - timedelta(minutes=20))
    sid = "JKT-RSD-S-003"
    silent_from, silent_to = start + timedelta(minutes=2), start + timedelta(minutes=6)
    scenario = Scenario(faults=(SensorFault(sid, "silent", silent_from, silent_to),))
    run = LiveRun(settings, broker, speed=120.0, start=start, scenario=scenario)
    # the broker, not the simulator, publishes the Last Will: offline without a time stamp
    wait_for(lambda: {"state": "offline"} in collector.states(sid), timeout=30, what="Last Will")
    wait_for(
        lambda: (
            [s["state"] for s in collector.states(sid)][-1:] == ["online"]
            and len(collector.states(sid)) >= 3
        ),
        timeout=30,
        what="online again after the fault",
    )
    wait_for(lambda: len(run.ticks) >= 14, timeout=30, what="intervals after the fault")
    run.finish()
    stamps = [
        parse_observation(p, now=datetime.now(UTC)).interval_start
        for t, p, _r in collector.snapshot()
        if t == f"{settings.topic_prefix}/stations/{sid}/obs"
    ]
    assert stamps and not [s for s in stamps if silent_from <= s < silent_to]
    assert min(stamps) < silent_from and max(stamps) >= silent_to
    other = network.stations[0].station_id
    assert {"state": "offline"} not in collector.states(other)  # only the silent one died


def _readings(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(schema.readings)).scalar_one()


def test_backfill_lands_every_reading_through_ingest(
    settings: Settings, mosquitto: MqttEndpoint, network: Network, engine: Engine
) -> None:
    ingest = start_ingest(settings, mosquitto, engine)
    try:
        stats = backfill(settings, mosquitto, 0.5, seed=9, progress=False, network=network)
        intervals = 0.5 * 3600 / 30
        expected = int(intervals) * sum(s.lanes for s in network.stations)
        assert stats.intervals == intervals
        assert stats.observations == intervals * len(network.stations)
        assert stats.readings == expected
        wait_for(lambda: _readings(engine) >= expected, timeout=60, what=f"{expected} readings")
    finally:
        ingest.stop.set()
        ingest.thread.join(30)
    assert _readings(engine) == expected
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(schema.dead_letters)).scalar() == 0
        single = conn.execute(
            select(func.count())
            .select_from(schema.readings)
            .join(schema.stations, schema.stations.c.station_id == schema.readings.c.station_id)
            .where(schema.stations.c.detector == "single-loop")
            .where(schema.readings.c.speed_kph.is_not(None))
        ).scalar()
    assert single == 0  # single loops stored with speed null, never 0


# --------------------------------------------------------------------------- CLI


def _flat(output: str) -> str:
    """The error text without rich's box and line wrapping."""
    return " ".join(output.replace("│", " ").split())


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, settings: Settings, mosquitto: MqttEndpoint):
    from its.config import get_settings

    monkeypatch.setenv("ITS_MQTT_URL", mosquitto.url)
    monkeypatch.setenv("ITS_TOPIC_PREFIX", settings.topic_prefix)
    monkeypatch.setenv("ITS_DATA_DIR", str(settings.data_dir))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--speed", "0"], "must be greater than 0"),
        (["run", "--speed", "-3"], "must be greater than 0"),
        (["run", "--incident", "SDR-N-02+10m"], "expected SEGMENT_ID@+START/DURATION"),
        (["run", "--incident", "NOPE@+1m/5m"], "unknown segment 'NOPE'"),
        (["run", "--incident", "SDR-N-02@+1q/5m"], "bad duration"),
        (["run", "--fault", "JKT-SDR-N-001:melted@+1m"], "kind must be one of"),
        (["run", "--start", "yesterday"], "not an ISO 8601 time"),
        (["run", "--start", "2026-11-23T01:00:00"], "needs a time zone"),
        (["run", "--period", "0"], "--period"),
        (["backfill", "--hours", "0"], "must be greater than 0"),
        (["backfill"], "--hours"),
        (["backfill", "--hours", "1", "--end", "noon"], "not an ISO 8601 time"),
    ],
)
def test_cli_rejects_bad_options(cli_env: None, args: list[str], message: str) -> None:
    from its.cli import app

    result = CliRunner().invoke(app, ["sim", *args])
    assert result.exit_code == 2, result.output
    assert message in _flat(result.output), result.output


def test_cli_sim_needs_a_broker(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from its.cli import app
    from its.config import get_settings

    monkeypatch.delenv("ITS_MQTT_URL", raising=False)
    monkeypatch.setenv("ITS_DATA_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)  # no .env here
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["sim", "backfill", "--hours", "1"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2
    assert "ITS_MQTT_URL is not set" in _flat(result.output)


def test_cli_backfill_takes_a_scenario_file_and_writes_the_truth(cli_env: None, tmp_path) -> None:
    from its.cli import app

    scenario = tmp_path / "scenario.json"
    scenario.write_text(
        json.dumps(
            {
                "incidents": [{"segment": "SDR-N-02", "start": "+1m", "duration": "4m"}],
                "faults": [{"station": "JKT-SDR-N-003", "kind": "stuck", "start": "+2m"}],
            }
        )
    )
    truth = tmp_path / "truth.jsonl"
    args = ["sim", "backfill", "--hours", "0.1", "--end", "2026-11-22T02:00:00Z"]
    args += ["--scenario", str(scenario), "--fault", "JKT-SDR-N-001:zero@+3m/1m"]
    args += ["--truth", str(truth), "--no-progress"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in truth.read_text().splitlines()]
    assert lines == [
        {
            "type": "incident",
            "segment": "SDR-N-02",
            "start": "2026-11-22T01:55:00Z",
            "end": "2026-11-22T01:59:00Z",
            "severity": 0.55,
            "lanes_closed": None,
        },
        {
            "type": "fault",
            "station": "JKT-SDR-N-003",
            "kind": "stuck",
            "start": "2026-11-22T01:56:00Z",
            "end": None,
        },
        {
            "type": "fault",
            "station": "JKT-SDR-N-001",
            "kind": "zero",
            "start": "2026-11-22T01:57:00Z",
            "end": "2026-11-22T01:58:00Z",
        },
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "cannot read scenario file"),
        ('{"incidents": [{"segment": "SDR-N-02", "start": "+1m"}]}', "needs an end or a duration"),
        ('{"faults": [{"station": "NOPE", "kind": "stuck"}]}', "unknown station 'NOPE'"),
        ('{"faults": [{"station": "JKT-SDR-N-001", "kind": "melted"}]}', "bad fault 1"),
    ],
)
def test_cli_rejects_a_bad_scenario_file(
    cli_env: None, tmp_path, content: str, message: str
) -> None:
    from its.cli import app

    scenario = tmp_path / "scenario.json"
    scenario.write_text(content)
    result = CliRunner().invoke(app, ["sim", "run", "--scenario", str(scenario)])
    assert result.exit_code == 2, result.output
    assert message in _flat(result.output), result.output
