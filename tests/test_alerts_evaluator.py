"""The evaluator end to end on a real store: readings in, alerts out, on every backend.

Readings are written the way ingest writes them (``reading_rows`` of contract Observations), the
evaluator runs on the data clock, and what it decides is read back from the alerts tables.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as mqtt
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from ingest.broker import free_port
from its.alerts import state as rule_state
from its.alerts import store
from its.alerts.config import AlertSettings
from its.alerts.evaluator import Evaluator, floor_bucket, run_evaluator
from its.config import MqttEndpoint, Settings
from its.contract import LaneReading, Observation
from its.db import schema
from its.db.writes import insert_readings, reading_rows, upsert_station_status
from its.network import Network
from tests.conftest import wait_for

T0 = datetime(2026, 11, 22, 1, 0, tzinfo=UTC)  # 08:00 in Jakarta; a bucket boundary
SEG = "SDR-N-01"  # free flow 60 km/h, stations JKT-SDR-N-001 and -002
OTHER = "SDR-N-02"  # stations JKT-SDR-N-003 and -004
FIVE_MIN = timedelta(minutes=5)


def feed(
    engine: Engine,
    network: Network,
    segment_id: str,
    start: datetime,
    minutes: float,
    ratio: float,
    period_s: int = 30,
    received_at: datetime | None = None,
) -> None:
    """Write ``minutes`` of readings for every station of a segment at speed ratio x free flow,
    received (wall time) at ``received_at``, or now."""
    seg = network.segment(segment_id)
    speed = ratio * seg.free_flow_kph
    rows = []
    for st in network.stations_of(segment_id):
        for i in range(int(minutes * 60 / period_s)):
            obs = Observation(
                v=1,
                station_id=st.station_id,
                interval_start=start + timedelta(seconds=i * period_s),
                period_s=period_s,
                lanes=[
                    # counts vary a little, as real ones do: identical values are a stuck loop
                    LaneReading(lane=n, count=9 + i % 3, occupancy=0.1, speed_kph=speed)
                    for n in range(1, st.lanes + 1)
                ],
            )
            rows.extend(reading_rows(obs, received_at=received_at or datetime.now(UTC)))
    with engine.begin() as conn:
        insert_readings(conn, rows)


def alerts(engine: Engine, state: str = "all") -> list[store.AlertRecord]:
    with engine.connect() as conn:
        return store.list_alerts(conn, state=state)  # type: ignore[arg-type]


_open: list[Evaluator] = []


def evaluator(engine: Engine, network: Network, **kw) -> Evaluator:  # noqa: ANN003
    ev = Evaluator(engine, network, alert_settings=AlertSettings(_env_file=None), **kw)
    _open.append(ev)
    return ev


@pytest.fixture(autouse=True)
def _step_down() -> Iterator[None]:
    """Release every evaluator's leader lock, or the next test's evaluator could not lead."""
    yield
    while _open:
        _open.pop().close()


def test_congestion_raised_on_the_segment_then_cleared(engine: Engine, network: Network) -> None:
    ev = evaluator(engine, network)
    feed(engine, network, SEG, T0, 20, ratio=0.3)  # 18 km/h on a 60 km/h road: congested
    feed(engine, network, OTHER, T0, 20, ratio=0.9)  # the next segment flows freely
    first = ev.step()
    # data clock 01:20; complete minutes end by 01:19 (grace 30 s). The minutes 01:00 and 01:01
    # are bad (2 of 3): raised at 01:02, two minutes after the speed fell; repeated at the
    # 5-minute marks 01:05, 01:10 and 01:15
    assert first.data_time == T0 + timedelta(minutes=20)
    assert first.evaluated_until == T0 + timedelta(minutes=19)
    raised = first.events("raised")
    assert len(raised) == 1
    a = raised[0].alert
    assert (a.rule, a.target_kind, a.target_id, a.severity) == (
        "congestion",
        "segment",
        SEG,
        "minor",
    )
    assert a.raised_at == T0 + timedelta(minutes=2)
    assert [c.event for c in first.changes] == ["raised"] + ["repeated"] * 3
    assert a.details["band"] == "congested" and a.details["speed_kph"] == 18.0
    assert "18 km/h" in a.message

    assert ev.step().changes == []  # nothing new complete: nothing happens

    feed(engine, network, SEG, T0 + timedelta(minutes=20), 15, ratio=0.9)
    feed(engine, network, OTHER, T0 + timedelta(minutes=20), 15, ratio=0.9)
    second = ev.step()
    # 01:19 still slow (repeat at 01:20), 01:20 half slow in the 2-min smoothing window, then
    # five good minutes 01:21 .. 01:25 clear at 01:26
    assert [c.event for c in second.changes] == ["repeated", "cleared"]
    cleared = second.changes[-1].alert
    assert cleared.id == a.id and not cleared.active and cleared.count == 5
    assert cleared.cleared_at == T0 + timedelta(minutes=26)
    assert alerts(engine, "active") == []
    with engine.connect() as conn:
        history = [e["event"] for e in store.alert_history(conn, a.id)]
    assert history == ["raised", "repeated", "repeated", "repeated", "repeated", "cleared"]


def test_jammed_segment_is_major(engine: Engine, network: Network) -> None:
    feed(engine, network, SEG, T0, 20, ratio=0.15)
    result = evaluator(engine, network).step()
    assert [(c.alert.target_id, c.alert.severity) for c in result.events("raised")] == [
        (SEG, "major")
    ]


def test_offline_station_state_raises_and_online_clears(engine: Engine, network: Network) -> None:
    station = "JKT-SDR-N-003"
    feed(engine, network, SEG, T0, 10, ratio=0.9)
    with engine.begin() as conn:
        upsert_station_status(conn, station, "offline", None, datetime.now(UTC))
    ev = evaluator(engine, network)
    result = ev.step()
    assert [(c.alert.rule, c.alert.target_kind, c.alert.target_id) for c in result.changes] == [
        ("station-offline", "station", station)
    ]
    a = result.changes[0].alert
    assert a.severity == "major" and a.details["reason"] == "last-will"
    assert ev.step().changes == []  # still offline: one alert, not a new one per step
    with engine.begin() as conn:
        upsert_station_status(conn, station, "online", None, datetime.now(UTC))
    cleared = ev.step().events("cleared")
    assert [c.alert.id for c in cleared] == [a.id]
    assert alerts(engine, "active") == []


def test_a_silent_station_is_offline_until_data_flows(engine: Engine, network: Network) -> None:
    feed(engine, network, SEG, T0, 10, ratio=0.9)
    # OTHER's stations stopped after 5 minutes of data, and the server last heard of them
    # 5 minutes ago (wall time): silent on both clocks
    feed(engine, network, OTHER, T0, 5, ratio=0.9, received_at=datetime.now(UTC) - FIVE_MIN)
    ev = evaluator(engine, network)
    raised = ev.step().events("raised")
    assert sorted(c.alert.target_id for c in raised) == ["JKT-SDR-N-003", "JKT-SDR-N-004"]
    assert {c.alert.details["reason"] for c in raised} == {"silent"}
    # no congestion alert for OTHER: its silent buckets are "no data", not congestion
    assert {c.alert.rule for c in raised} == {"station-offline"}
    feed(engine, network, OTHER, T0 + timedelta(minutes=5), 6, ratio=0.9)
    cleared = ev.step().events("cleared")
    assert sorted(c.alert.target_id for c in cleared) == ["JKT-SDR-N-003", "JKT-SDR-N-004"]


def test_all_stations_offline_suppresses_congestion(engine: Engine, network: Network) -> None:
    # SEG's stations go offline (Last Will) before they ever report: no data is not congestion
    feed(engine, network, OTHER, T0, 20, ratio=0.9)
    with engine.begin() as conn:
        for st in network.stations_of(SEG):
            upsert_station_status(conn, st.station_id, "offline", None, datetime.now(UTC))
    ev = evaluator(engine, network)
    result = ev.step()
    assert {c.alert.rule for c in result.changes} == {"station-offline"}
    assert len(result.changes) == 2
    # one station back: the segment has a live station again, and congestion is raised once it
    # has persisted afresh (the suppressed buckets were no data, not congestion)
    with engine.begin() as conn:
        upsert_station_status(conn, "JKT-SDR-N-001", "online", None, datetime.now(UTC))
    feed(engine, network, SEG, T0 + timedelta(minutes=20), 1.5, ratio=0.3)
    feed(engine, network, OTHER, T0 + timedelta(minutes=20), 1.5, ratio=0.9)
    assert ev.step().events("raised") == []  # one bad minute (01:20) is not yet 2 of 3
    feed(engine, network, SEG, T0 + timedelta(minutes=21.5), 13.5, ratio=0.3)
    result = ev.step()  # minutes 01:20 and 01:21 bad: 2 of 3
    assert [c.alert.target_id for c in result.events("raised")] == [SEG]


def test_catch_up_suppresses_by_the_state_at_that_time(engine: Engine, network: Network) -> None:
    """Stations offline now were reporting congestion back then: a catch-up still raises it."""
    feed(engine, network, SEG, T0, 20, ratio=0.3)
    # the other stations behind their gateway report: two individual outages, not the gateway
    feed(engine, network, OTHER, T0, 20, ratio=0.9)
    with engine.begin() as conn:
        for st in network.stations_of(SEG):
            upsert_station_status(conn, st.station_id, "offline", None, datetime.now(UTC))
    result = evaluator(engine, network).step()
    raised = {(c.alert.rule, c.alert.target_id) for c in result.events("raised")}
    assert ("congestion", SEG) in raised
    assert {r for r, _ in raised} == {"congestion", "station-offline"}


def test_restart_resumes_exactly_without_duplicates(engine: Engine, network: Network) -> None:
    feed(engine, network, SEG, T0, 1.5, ratio=0.3)
    first = evaluator(engine, network)
    r1 = first.step()  # minute 01:00 bad: 1 of 3, no alert yet
    assert r1.changes == [] and r1.evaluated_until == T0 + timedelta(minutes=1)
    first.close()

    second = evaluator(engine, network)  # a new process on the same database
    assert second.step().ticks == 0  # nothing re-evaluated
    feed(engine, network, SEG, T0 + timedelta(minutes=1.5), 1, ratio=0.3)
    r2 = second.step()
    assert r2.ticks == 1  # only 01:01, and the window remembered 01:00
    assert [c.alert.target_id for c in r2.events("raised")] == [SEG]
    second.close()

    third = evaluator(engine, network)
    assert third.step().changes == []
    assert len(alerts(engine)) == 1
    feed(engine, network, SEG, T0 + timedelta(minutes=2.5), 3, ratio=0.3)
    r3 = third.step()  # minutes 01:02 .. 01:04: repeated once, at the 5-minute mark
    assert [(c.event, c.alert.count) for c in r3.changes] == [("repeated", 2)]
    assert len(alerts(engine)) == 1
    with engine.connect() as conn:
        assert rule_state.load(conn, "congestion")[SEG]["active"] is True
        assert rule_state.load_progress(conn) == T0 + timedelta(minutes=5)


def test_fresh_start_looks_back_at_most_an_hour(engine: Engine, network: Network) -> None:
    feed(engine, network, SEG, T0, 3 * 60, ratio=0.9)
    result = evaluator(engine, network).step()
    now = T0 + timedelta(hours=3)
    assert result.data_time == now
    assert result.evaluated_until == floor_bucket(now - timedelta(seconds=30), 60)
    # from 03:00 (an hour before the data clock) to 03:58; 03:59 still awaits its grace period;
    # the 5-minute buckets (health, bottlenecks) 03:00 .. 03:50
    assert result.ticks == 59
    assert result.buckets == 11
    assert result.changes == []


@pytest.mark.postgres
def test_only_one_evaluator_leads_on_postgresql(pg_engine: Engine, network: Network) -> None:
    feed(pg_engine, network, SEG, T0, 20, ratio=0.3)
    a, b = evaluator(pg_engine, network), evaluator(pg_engine, network)
    try:
        assert a.try_lead() is True
        assert b.try_lead() is False
        standby = b.step()
        assert standby.leading is False and standby.changes == []
        assert alerts(pg_engine) == []
        led = a.step()
        assert led.leading and [c.alert.target_id for c in led.events("raised")] == [SEG]
        a.release()  # stepping down hands over to the standby
        assert b.try_lead() is True and a.try_lead() is False
        session = b._lock_conn
        assert b.step().changes == []  # it resumes where the leader stopped: no duplicate
        assert b._lock_conn is session  # still leading on the same session, not re-elected
        # a leader whose session dies loses the lock with it
        assert b._lock_conn is not None
        b._lock_conn.invalidate()
        assert a.try_lead() is True
        assert b.try_lead() is False
    finally:
        a.close()
        b.close()
    assert len(alerts(pg_engine)) == 1


def _mqtt_subscriber(endpoint: MqttEndpoint, topic: str, received: list) -> mqtt.Client:  # noqa: ANN401
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=f"test-sub-{uuid.uuid4().hex[:8]}",
        protocol=mqtt.MQTTv311,
    )
    subscribed = threading.Event()
    client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
    client.on_subscribe = lambda *_: subscribed.set()
    client.on_message = lambda _c, _u, msg: received.append((msg.topic, json.loads(msg.payload)))
    client.connect(endpoint.host, endpoint.port)
    client.loop_start()
    wait_for(subscribed.is_set, what="subscription to alert topics")
    return client


@pytest.mark.mosquitto
def test_alerts_reach_mqtt_through_the_cli_publisher(
    sqlite_engine: Engine, network: Network, mosquitto: MqttEndpoint, settings: Settings
) -> None:
    from its.cli import _alert_publisher

    received: list = []
    sub = _mqtt_subscriber(mosquitto, f"{settings.topic_prefix}/alerts/#", received)
    publish, close = _alert_publisher(settings, mosquitto)
    try:
        feed(sqlite_engine, network, SEG, T0, 20, ratio=0.3)
        ev = evaluator(sqlite_engine, network, publish=publish, topic_prefix=settings.topic_prefix)
        alert = ev.step().events("raised")[0].alert
        feed(sqlite_engine, network, SEG, T0 + timedelta(minutes=20), 15, ratio=0.9)
        assert ev.step().events("cleared")
        wait_for(lambda: len(received) >= 2, what="raised and cleared alert messages")
    finally:
        close()
        sub.loop_stop()
        sub.disconnect()
    topics = {t for t, _ in received}
    assert topics == {f"{settings.topic_prefix}/alerts/{alert.id}"}
    events = [(p["event"], p["id"], p["rule"], p["target_id"], p["active"]) for _, p in received]
    assert events == [
        ("raised", alert.id, "congestion", SEG, True),
        ("cleared", alert.id, "congestion", SEG, False),
    ]
    assert received[0][1]["raised_at"] == "2026-11-22T01:02:00Z"
    assert ev.stats.published == 2 and ev.stats.publish_errors == 0


def test_run_evaluator_loop_raises_and_stops_cleanly(
    engine: Engine, network: Network, settings: Settings
) -> None:
    feed(engine, network, SEG, T0, 20, ratio=0.3)
    published: list[tuple[str, bytes]] = []
    stop = threading.Event()
    out: dict = {}
    worker = threading.Thread(
        target=lambda: out.update(
            stats=run_evaluator(
                settings,
                engine,
                network,
                stop,
                publish=lambda t, p: published.append((t, p)),
                interval_s=0.05,
                alert_settings=AlertSettings(_env_file=None),
            )
        )
    )
    worker.start()
    try:
        wait_for(lambda: alerts(engine, "active"), what="an active alert")
    finally:
        stop.set()
        worker.join(timeout=30)
    assert not worker.is_alive()
    assert out["stats"].raised == 1
    assert [json.loads(p)["event"] for _, p in published] == ["raised"]
    assert published[0][0].startswith(f"{settings.topic_prefix}/alerts/")


def test_a_failing_publisher_loses_no_alert(engine: Engine, network: Network) -> None:
    def broken(topic: str, payload: bytes) -> None:
        raise OSError("broker down")

    feed(engine, network, SEG, T0, 20, ratio=0.3)
    ev = evaluator(engine, network, publish=broken)
    assert ev.step().events("raised")
    assert ev.stats.publish_errors == 1
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(schema.alerts)).scalar() == 1


@pytest.mark.mosquitto
def test_its_alerts_command_runs_publishes_and_stops_on_sigterm(
    tmp_path, network: Network, mosquitto: MqttEndpoint, topic_prefix: str
) -> None:
    """The real command in its own process: migrates, evaluates, publishes, exits on SIGTERM."""
    import os
    import signal
    import subprocess
    import sys

    from its.db import migrate
    from its.db.engine import make_engine

    db = make_engine(f"sqlite:///{tmp_path / 'its.db'}")
    migrate.upgrade_and_seed(db, network)
    feed(db, network, SEG, T0, 20, ratio=0.3)
    received: list = []
    sub = _mqtt_subscriber(mosquitto, f"{topic_prefix}/alerts/#", received)
    metrics_port = free_port()
    env = {
        "ITS_METRICS_PORT": str(metrics_port),
        **os.environ,
        "ITS_DATA_DIR": str(tmp_path),
        "ITS_MQTT_URL": mosquitto.url,
        "ITS_TOPIC_PREFIX": topic_prefix,
        "ITS_ALERT_CONGESTION_N": "3",
    }
    env.pop("ITS_DATABASE_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "its.cli", "alerts", "--interval", "0.2"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not received and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        url = f"http://127.0.0.1:{metrics_port}/metrics"  # ITS_METRICS_PORT (observability.md)
        with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310 - loopback
            metrics = r.read().decode()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        sub.loop_stop()
        sub.disconnect()
    assert received, f"no alert published by `its alerts`; its output:\n{out}"
    assert proc.returncode == 0, out
    assert "alert 1 raised: congestion SDR-N-01" in out
    assert "1 raised" in out and "1 published" in out
    assert 'its_alerts_events_total{event="raised",rule="congestion"} 1.0' in metrics
    topic, payload = received[0]
    assert topic == f"{topic_prefix}/alerts/1"
    assert (payload["event"], payload["rule"], payload["target_id"]) == (
        "raised",
        "congestion",
        SEG,
    )
    with db.connect() as conn:
        assert [a.target_id for a in store.list_alerts(conn)] == [SEG]
    db.dispose()


def test_data_going_back_in_time_restarts_the_evaluation(engine: Engine, network: Network) -> None:
    feed(engine, network, SEG, T0, 10, ratio=0.9)
    ev = evaluator(engine, network)
    assert ev.step().evaluated_until == T0 + timedelta(minutes=9)
    with engine.begin() as conn:
        conn.execute(schema.readings.delete())
    earlier = T0 - timedelta(days=1)
    feed(engine, network, SEG, earlier, 20, ratio=0.3)
    result = ev.step()
    assert result.evaluated_until == earlier + timedelta(minutes=19)
    assert [c.alert.target_id for c in result.events("raised")] == [SEG]


def test_a_station_silent_beyond_the_look_back_stays_offline(
    engine: Engine, network: Network
) -> None:
    feed(engine, network, SEG, T0, 10, ratio=0.9)
    feed(engine, network, OTHER, T0, 5, ratio=0.9, received_at=datetime.now(UTC) - FIVE_MIN)
    ev = evaluator(engine, network)
    raised = ev.step().events("raised")
    assert len(raised) == 2
    # two hours later only SEG reports: OTHER's stations are out of the 1-hour look-back window
    feed(engine, network, SEG, T0 + timedelta(hours=2), 10, ratio=0.9)
    for _ in range(4):  # catch up bucket by bucket; nothing may clear meanwhile
        assert ev.step().events("cleared") == []
    active = alerts(engine, "active")
    assert sorted(a.target_id for a in active) == ["JKT-SDR-N-003", "JKT-SDR-N-004"]
    assert {a.details["last_seen"] for a in active} == {"2026-11-22T01:05:00Z"}
    assert all(a.count > 1 for a in active)


def test_a_dead_feed_raises_one_feed_stalled_alert_not_a_flood(
    engine: Engine, network: Network
) -> None:
    """Every sensor stops: one critical feed-stalled alert within the setting, offline alarms
    suppressed (and named), the last bucket evaluated by wall time, cleared when data flows."""
    cfg = AlertSettings(_env_file=None, feed_stall_s=60)
    wall = [datetime.now(UTC)]
    ev = Evaluator(engine, network, alert_settings=cfg, wall_clock=lambda: wall[0])
    _open.append(ev)
    received = wall[0]
    feed(engine, network, SEG, T0, 10, ratio=0.9, received_at=received)
    feed(engine, network, OTHER, T0, 10, ratio=0.9, received_at=received)
    assert ev.step().evaluated_until == T0 + timedelta(minutes=9)  # 01:09 awaits its grace

    wall[0] = received + timedelta(seconds=59)
    assert ev.step().changes == []  # not yet: the data clock alone would call them all silent
    wall[0] = received + timedelta(seconds=61)
    result = ev.step()
    assert [(c.alert.rule, c.alert.severity) for c in result.events("raised")] == [
        ("feed-stalled", "critical")
    ]
    stalled = result.events("raised")[0].alert
    assert stalled.target_kind == "feed"
    wall[0] = received + timedelta(minutes=10)
    result = ev.step()
    assert result.events("raised") == []  # still one alert, no offline flood
    # the data clock stopped at 01:10, but the wall clock ran on: the minutes up to and past
    # the last data are evaluated (01:09 and on), without any later data arriving
    assert result.evaluated_until == T0 + timedelta(minutes=19)
    with engine.connect() as conn:
        (now_stalled,) = store.active_alerts(conn).values()
    assert now_stalled.id == stalled.id
    assert len(now_stalled.details["suppressed_offline"]) == 4  # the stations that stopped

    feed(engine, network, SEG, T0 + timedelta(minutes=10), 5, ratio=0.9, received_at=wall[0])
    result = ev.step()
    assert [c.alert.rule for c in result.events("cleared")] == ["feed-stalled"]
    # SEG flows again; OTHER's stations are now silent on both clocks, one alarm each
    assert sorted(c.alert.target_id for c in result.events("raised")) == [
        "JKT-SDR-N-003",
        "JKT-SDR-N-004",
    ]


def test_a_simulated_stuck_detector_raises_detector_fault_and_suppresses_congestion(
    engine: Engine, network: Network
) -> None:
    """The simulator's own fault model: one stuck detector among a busy morning's healthy ones."""
    from sim.model import TrafficModel
    from sim.scenario import Scenario, SensorFault

    station = "JKT-SDR-N-001"
    scenario = Scenario(faults=(SensorFault(station, "stuck", T0 + timedelta(minutes=5)),))
    model = TrafficModel(network, seed=7, scenario=scenario)
    rows = []
    now = datetime.now(UTC)
    for i in range(40 * 2):
        for obs in model.observations(T0 + timedelta(seconds=30 * i)):
            rows.extend(reading_rows(obs, received_at=now))
    with engine.begin() as conn:
        insert_readings(conn, rows)
    result = evaluator(engine, network).step()
    faults = [c.alert for c in result.events("raised") if c.alert.rule == "detector-fault"]
    assert [(a.target_id, a.details["diagnosis"]) for a in faults] == [(station, "stuck")]
    assert faults[0].details["suppresses_congestion_on"] == SEG
    assert "stuck" in faults[0].message
    with engine.connect() as conn:
        summary = rule_state.load(conn, "_detector-health")["network"]
    assert summary["faulty"] == 1 and summary["pct_good"] < 100


NIGHT = datetime(2026, 11, 22, 20, 0, tzinfo=UTC)  # 03:00 in Jakarta: a quiet road


def simulate(engine: Engine, network: Network, scenario: object, start: datetime) -> None:
    """40 minutes of the simulator's sample network from ``start``, written as ingest does."""
    from sim.model import TrafficModel

    model = TrafficModel(network, seed=7, scenario=scenario)  # type: ignore[arg-type]
    rows = []
    now = datetime.now(UTC)
    for i in range(40 * 2):
        for obs in model.observations(start + timedelta(seconds=30 * i)):
            rows.extend(reading_rows(obs, received_at=now))
    with engine.begin() as conn:
        insert_readings(conn, rows)


def test_a_dead_loop_reading_zero_at_night_is_diagnosed_within_minutes(
    engine: Engine, network: Network
) -> None:
    """At 03:00 local the road is quiet, but the stations either side still count ~100 veh/h a
    lane: a loop reading zero among them is dead. Health runs every minute, so the alert comes
    at the minute the zero run is long enough, not at the next 5-minute bucket's end."""
    from sim.scenario import Scenario, SensorFault

    station = "JKT-SDR-N-002"
    onset = NIGHT + timedelta(minutes=20, seconds=30)
    simulate(engine, network, Scenario(faults=(SensorFault(station, "zero", onset),)), NIGHT)
    result = evaluator(engine, network).step()
    faults = [c.alert for c in result.events("raised") if c.alert.rule == "detector-fault"]
    assert [(a.target_id, a.details["diagnosis"]) for a in faults] == [(station, "no-flow")]
    # ten zero intervals (5 min) end at onset + 5 min; the alert is stamped at the end of the
    # minute that decided
    assert onset + FIVE_MIN <= faults[0].raised_at <= onset + timedelta(minutes=6)
    assert "neighbours carry" in faults[0].details["evidence"]


def test_a_quiet_healthy_night_diagnoses_no_detector(engine: Engine, network: Network) -> None:
    from sim.scenario import Scenario

    simulate(engine, network, Scenario(), NIGHT)
    result = evaluator(engine, network).step()
    assert result.ticks > 0  # the minutes were evaluated
    assert [c.alert.target_id for c in result.events("raised")] == []
